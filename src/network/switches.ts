/**
 * Virtual switches on the host: the operations behind `palisade switch …` and the API the
 * engine uses to give a VM NIC a port. Decisions (names, validation, rulesets, DHCP
 * command lines, flow records) are pure functions of the other modules; this file applies
 * them with iproute2, nftables, tc, tcpdump and dnsmasq, and records the result in the
 * state file.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { ConfigError, HostError, errorMessage } from "../util/errors.js";
import { checkAclRule, type AclRuleInput } from "./acl.js";
import {
  BRIDGE_PREFIX,
  PORT_PREFIX,
  TABLE_PREFIX,
  checkName,
  checkVlan,
  cidrsOverlap,
  parseIpv4,
  formatCidr,
  formatIpv4,
  formatPortRef,
  parseMac,
  portIfname,
  randomMac,
  subnetPlan,
  switchNames,
  type Ipv4Cidr,
  type PortRef,
} from "./addresses.js";
import { dhcpPaths, dhcpPid, ensureDhcp, stopDhcp } from "./dhcp.js";
import { buildFlows, flowSetNames, parseSetElements, type FlowRecord, type SetElement } from "./flows.js";
import { HostCommands, defaultRouteDevices, parseLinks, type LinkInfo } from "./host-commands.js";
import { isPort, type AclRule, type Mirror, type NetworkState, type Port, type Switch, type SwitchType } from "./model.js";
import { DEFAULT_DENY_COUNTER, conntrackScript, guardCounterNames, nftScript, parseTableObjects, portAddScript, portRemoveScript, ruleCounts, totalRuleCounts, type StageCounts } from "./ruleset.js";
import { StateStore, defaultStateDir } from "./state-store.js";
import { closeFd, openTap } from "./tap.js";
import { byCodeUnits } from "../util/order.js";

/** Where a {@link VirtualSwitches} keeps its state and runs its commands. */
export interface VirtualSwitchesOptions {
  /** State directory; default {@link defaultStateDir} (`/var/lib/palisade/network` as root). */
  readonly stateDir?: string | undefined;
  /** Network namespace holding the switches (tests, benchmarks); default: the caller's. */
  readonly netns?: string | undefined;
}

/** What `switch create` asks for. */
export interface CreateSwitchRequest {
  readonly name: string;
  readonly type: SwitchType;
  readonly uplink?: string | undefined;
  readonly subnet?: Ipv4Cidr | undefined;
  readonly dhcp?: boolean | undefined;
  readonly defaultDeny?: boolean | undefined;
  /** Stateful ACLs: replies of allowed connections pass (conntrack). Default false. */
  readonly stateful?: boolean | undefined;
  /** Default true; false saves one set update per packet and disables `flows()`. */
  readonly flowLog?: boolean | undefined;
}

/** What the engine asks for to give a VM NIC a port. */
export interface AttachPortRequest {
  readonly switchName: string;
  readonly vmName: string;
  /** The NIC's name within the VM, e.g. `net0`. */
  readonly nic: string;
  /** Default: a random 52:54:00:xx:xx:xx. */
  readonly mac?: string | undefined;
  /** Access VLAN (1–4094); default: untagged VLAN 1. */
  readonly vlan?: number | undefined;
  /** Port security; all on by default, as Hyper-V's. */
  readonly macGuard?: boolean | undefined;
  readonly dhcpGuard?: boolean | undefined;
  readonly routerGuard?: boolean | undefined;
  /** Frames carry a virtio-net header (QEMU probes it; `vnet_hdr=on`). Default true. */
  readonly vnetHdr?: boolean | undefined;
  /** Open the fd non-blocking (tests reading frames from Node). Default false. */
  readonly nonBlocking?: boolean | undefined;
}

/** A TAP port: the caller owns `fd` and must close it once QEMU has it. */
export interface AttachedPort {
  readonly fd: number;
  readonly ifname: string;
  readonly mac: string;
  readonly switchName: string;
  readonly vmName: string;
  readonly nic: string;
  readonly vlan: number | undefined;
}

/** A veth port: the guest end goes into another network namespace (a container, an appliance, a test host). */
export interface AttachVethRequest extends Omit<AttachPortRequest, "vnetHdr" | "nonBlocking"> {
  /** Namespace (from `ip netns list`) that receives the guest end. */
  readonly peerNetns: string;
  /** Name of the guest end there; default `eth0`. */
  readonly peerIfname?: string | undefined;
}

/** A mirror as `switch mirror` asks for it. */
export interface MirrorRequest {
  readonly from: PortRef;
  readonly to: { readonly port: PortRef } | { readonly ifname: string };
}

/** Counters of one switch, by what counts. */
export interface SwitchCounters {
  readonly rules: ReadonlyMap<number, { packets: number; bytes: number }>;
  readonly defaultDeny: { packets: number; bytes: number };
  readonly guards: ReadonlyMap<string, { mac: number; dhcp: number; routerAdvert: number }>;
}

/** What `switch repair` found and did. */
export interface RepairReport {
  readonly removedInterfaces: string[];
  readonly removedTables: string[];
  readonly stalePorts: string[];
  readonly reapplied: string[];
  readonly restartedDhcp: string[];
  /** Switches that could not be re-applied, with the reason (e.g. their uplink is gone). */
  readonly failed: string[];
}

/**
 * Access VLANs are enforced inside the switch by nftables; carrying one onto an uplink
 * needs 802.1Q tags, which this kernel cannot push or pop.
 */
function externalVlan(sw: Switch, vlan: number): HostError {
  return new HostError(
    `vlan: VLAN ${vlan} on external switch "${sw.name}" would need 802.1Q tagging to the uplink ${sw.uplink ?? ""}, which this kernel lacks (CONFIG_BRIDGE_VLAN_FILTERING, CONFIG_VLAN_8021Q); use a private or internal switch for access VLANs`,
    "network.no-vlan",
  );
}

function unknownSwitch(name: string): ConfigError {
  return new ConfigError(`Switch "${name}" does not exist`, "network.unknown-switch");
}

function findSwitch(state: NetworkState, name: string): Switch {
  const sw = state.switches.find((candidate) => candidate.name === name);
  if (sw === undefined) throw unknownSwitch(name);
  return sw;
}

function withSwitch(state: NetworkState, sw: Switch): NetworkState {
  return { ...state, switches: state.switches.map((candidate) => (candidate.name === sw.name ? sw : candidate)) };
}

/**
 * The host's virtual switches.
 * @example
 * const switches = new VirtualSwitches();
 * await switches.create({ name: "lab", type: "private" });
 * const port = await switches.attachPort({ switchName: "lab", vmName: "web-1", nic: "net0" });
 * // spawn QEMU with stdio [.., port.fd] and `-netdev tap,id=n0,fd=3`, then closeFd(port.fd)
 */
export class VirtualSwitches {
  readonly host: HostCommands;
  readonly store: StateStore;
  readonly #netns: string | undefined;

  constructor(options: VirtualSwitchesOptions = {}) {
    this.#netns = options.netns;
    this.host = new HostCommands({ netns: options.netns });
    this.store = new StateStore(options.stateDir ?? defaultStateDir());
  }

  /** Every switch, by name. */
  list(): Switch[] {
    return [...this.store.read().switches].sort((a, b) => byCodeUnits(a.name, b.name));
  }

  /**
   * One switch.
   * @throws {ConfigError} `network.unknown-switch`.
   */
  get(name: string): Switch {
    return findSwitch(this.store.read(), name);
  }

  /**
   * Creates a switch: its bridge, host address (internal), uplink (external), ruleset and
   * DHCP server.
   * @throws {ConfigError} `network.duplicate`, `network.bad-uplink`, `network.bad-request`, `network.bad-cidr`.
   * @throws {HostError} when a command fails; whatever was created is removed again.
   */
  async create(request: CreateSwitchRequest): Promise<Switch> {
    checkName(request.name, "Switch name");
    return this.store.update(async (state) => {
      if (state.switches.some((sw) => sw.name === request.name)) {
        throw new ConfigError(`Switch "${request.name}" already exists`, "network.duplicate");
      }
      await this.#checkRequest(request);
      const names = switchNames(request.name);
      const sw: Switch = {
        name: request.name,
        id: names.id,
        type: request.type,
        bridge: names.bridge,
        table: names.table,
        ...(request.uplink === undefined ? {} : { uplink: request.uplink }),
        ...(request.subnet === undefined ? {} : { subnet: request.subnet }),
        dhcp: request.dhcp === true,
        defaultDeny: request.defaultDeny === true,
        stateful: request.stateful === true,
        flowLog: request.flowLog ?? true,
        createdAt: new Date().toISOString(),
        ports: [],
        acls: [],
        nextAclId: 1,
        mirrors: [],
      };
      try {
        await this.#teardownKernel(sw); // leftovers of a crash under the same name
        await this.#applySwitch(sw);
      } catch (error: unknown) {
        await this.#teardownKernel(sw).catch(() => undefined);
        throw error;
      }
      return { state: { ...state, switches: [...state.switches, sw] }, result: sw };
    });
  }

  async #checkRequest(request: CreateSwitchRequest): Promise<void> {
    if (request.type === "external") {
      if (request.uplink === undefined) throw new ConfigError("An external switch needs --uplink IFACE", "network.bad-request");
      await this.#checkUplink(request.uplink);
    } else if (request.uplink !== undefined) {
      throw new ConfigError(`--uplink is only for external switches, not ${request.type}`, "network.bad-request");
    }
    if (request.type === "internal" && request.subnet === undefined) {
      throw new ConfigError("An internal switch needs --subnet (the host takes its first address)", "network.bad-request");
    }
    if (request.subnet !== undefined) subnetPlan(request.subnet);
    if (request.dhcp === true && (request.type !== "internal" || request.subnet === undefined)) {
      throw new ConfigError("--dhcp needs an internal switch with --subnet (the DHCP server runs on the host's address)", "network.bad-request");
    }
    if (request.subnet !== undefined && request.type === "internal") {
      const subnet = request.subnet;
      const used = hostSubnets(await this.host.ipJson(["-4", "addr", "show"])).find((entry) => !entry.ifname.startsWith(BRIDGE_PREFIX) && cidrsOverlap(entry.subnet, subnet));
      if (used !== undefined) {
        throw new ConfigError(`--subnet ${formatCidr(subnet)} overlaps ${formatCidr(used.subnet)} on the host's ${used.ifname}`, "network.bad-cidr");
      }
      const clash = this.list().find((sw) => sw.type === "internal" && sw.subnet !== undefined && request.subnet !== undefined && cidrsOverlap(sw.subnet, request.subnet));
      if (clash !== undefined) {
        throw new ConfigError(`--subnet ${formatCidr(request.subnet)} overlaps switch "${clash.name}" (${formatCidr(clash.subnet ?? request.subnet)})`, "network.bad-cidr");
      }
    }
  }

  async #links(): Promise<LinkInfo[]> {
    return parseLinks(await this.host.ipJson(["-d", "link", "show"]));
  }

  async #checkUplink(uplink: string): Promise<void> {
    checkIfname(uplink, "Uplink");
    const link = (await this.#links()).find((candidate) => candidate.ifname === uplink);
    if (link === undefined) throw new ConfigError(`Uplink "${uplink}" does not exist`, "network.bad-uplink");
    const management = defaultRouteDevices(await this.host.ipJson(["-4", "route", "show", "default"]), await this.host.ipJson(["-6", "route", "show", "default"]));
    if (management.includes(uplink)) {
      throw new ConfigError(`Uplink "${uplink}" holds the host's default route (the management interface); it is never enslaved to a switch`, "network.bad-uplink");
    }
    if (link.flags.includes("LOOPBACK")) throw new ConfigError(`Uplink "${uplink}" is the loopback interface`, "network.bad-uplink");
    if (uplink.startsWith(BRIDGE_PREFIX) || uplink.startsWith(PORT_PREFIX) || link.linkKind === "bridge") {
      throw new ConfigError(`Uplink "${uplink}" is a bridge or a switch port`, "network.bad-uplink");
    }
    if (link.master !== undefined) throw new ConfigError(`Uplink "${uplink}" is already enslaved to ${link.master}`, "network.bad-uplink");
  }

  /** Makes the kernel match one switch's state: bridge, address, uplink, ruleset, mirrors, DHCP. Idempotent. */
  async #applySwitch(sw: Switch): Promise<void> {
    const links = await this.#links();
    if (!links.some((link) => link.ifname === sw.bridge)) {
      // STP off and no forwarding delay: a port forwards as soon as it is up.
      await this.host.run(["ip", "link", "add", sw.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
      if (sw.type !== "internal") {
        // No IPv6 link-local address either: the host has no address on a private or
        // external switch, so it cannot talk to the VMs through it.
        await this.host.run(["ip", "link", "set", "dev", sw.bridge, "addrgenmode", "none"]);
      }
    }
    await this.host.run(["ip", "link", "set", "dev", sw.bridge, "up"]);
    if (sw.stateful) {
      // Bridged IPv4 frames of this bridge (only) go through the ip hooks, where conntrack runs.
      await this.host.run(["ip", "link", "set", "dev", sw.bridge, "type", "bridge", "nf_call_iptables", "1"]);
    }
    if (sw.type === "internal" && sw.subnet !== undefined) {
      const address = `${formatIpv4(subnetPlan(sw.subnet).hostAddress)}/${sw.subnet.prefixLength}`;
      await this.host.run(["ip", "addr", "replace", address, "dev", sw.bridge]);
    }
    if (sw.type === "external" && sw.uplink !== undefined) {
      await this.host.run(["ip", "link", "set", "dev", sw.uplink, "master", sw.bridge, "up"]);
    }
    await this.#applyRuleset(sw);
    await this.#applyMirrors(sw);
    if (sw.dhcp && sw.subnet !== undefined) {
      const pid = await ensureDhcp(this.host, sw.bridge, sw.subnet, dhcpPaths(this.store.dir, sw.id));
      if (pid < 0) throw new HostError(`dnsmasq for switch "${sw.name}" did not start`, "network.dhcp-failed");
    }
  }

  /**
   * Replaces the switch's tables. `previous`: the state the current table was made from,
   * whose per-rule counts (kept in the ACL map elements) are carried over.
   */
  async #applyRuleset(sw: Switch, options: { resetFlows?: boolean; previous?: Switch } = {}): Promise<void> {
    const listing = await this.host.tryRun(["nft", "-j", "-t", "list", "table", "bridge", sw.table]);
    const existing = listing.ok ? parseTableObjects(JSON.parse(listing.stdout) as unknown) : undefined;
    let counts: StageCounts | undefined;
    if (existing !== undefined && options.previous !== undefined && options.previous.acls.length > 0) {
      const full = await this.host.tryRun(["nft", "-j", "list", "table", "bridge", sw.table]);
      if (full.ok) counts = ruleCounts(options.previous, JSON.parse(full.stdout) as unknown);
    }
    await this.host.run(["nft", "-f", "-"], nftScript(sw, existing, { ...(options.resetFlows === undefined ? {} : { resetFlows: options.resetFlows }), ...(counts === undefined ? {} : { counts }) }));
    const conntrack = conntrackScript(sw);
    if (conntrack === undefined) await this.host.tryRun(["nft", "delete", "table", "ip", sw.table]);
    else await this.host.run(["nft", "-f", "-"], conntrack);
  }

  /** Removes every kernel object of a switch that exists; never fails on what is already gone. */
  async #teardownKernel(sw: Switch): Promise<void> {
    await stopDhcp(dhcpPaths(this.store.dir, sw.id));
    const links = await this.#links();
    for (const port of sw.ports) {
      if (links.some((link) => link.ifname === port.ifname)) await this.host.tryRun(["ip", "link", "del", "dev", port.ifname]);
    }
    if (sw.uplink !== undefined && links.find((link) => link.ifname === sw.uplink)?.master === sw.bridge) {
      await this.host.tryRun(["ip", "link", "set", "dev", sw.uplink, "nomaster"]);
    }
    if (links.some((link) => link.ifname === sw.bridge)) await this.host.run(["ip", "link", "del", "dev", sw.bridge]);
    await this.host.tryRun(["nft", "delete", "table", "bridge", sw.table]);
    await this.host.tryRun(["nft", "delete", "table", "ip", sw.table]);
  }

  /**
   * Deletes a switch and everything it put on the host: ports, mirrors, bridge, ruleset,
   * DHCP server; an external switch's uplink is released.
   * @throws {ConfigError} `network.unknown-switch`.
   */
  async delete(name: string): Promise<void> {
    await this.store.update(async (state) => {
      const sw = findSwitch(state, name);
      await this.#teardownKernel(sw);
      return { state: { ...state, switches: state.switches.filter((candidate) => candidate.name !== name) }, result: undefined };
    });
  }

  /**
   * Gives a VM NIC a TAP port on a switch and returns the TAP's open file descriptor for
   * QEMU (`-netdev tap,fd=N`). The TAP disappears when the last holder of the fd closes
   * it, so a dead worker leaves nothing behind; `detachPort` removes the record.
   * `vlan` makes the port an access port of that VLAN: it exchanges frames (unicast,
   * broadcast, multicast, ARP) only with ports of the same VLAN; a port without one only
   * with untagged ports and the host's interface of an internal switch.
   * @throws {ConfigError} `network.unknown-switch`, `network.port-exists`, `network.bad-mac`, `network.bad-vlan`.
   * @throws {HostError} `network.no-vlan` (a VLAN on an external switch), `network.tap-failed`, `network.command-failed`.
   */
  async attachPort(request: AttachPortRequest): Promise<AttachedPort> {
    let fd = -1;
    const options = { netns: this.#netns, vnetHdr: request.vnetHdr ?? true, nonBlocking: request.nonBlocking ?? false };
    const port = await this.#attach(
      request,
      "tap",
      async (ifname) => {
        try {
          fd = openTap(ifname, options);
        } catch (error: unknown) {
          // A leftover interface of that name that is not a TAP we can attach to.
          if (!(error instanceof HostError) || error.code !== "network.tap-failed") throw error;
          await this.host.tryRun(["ip", "link", "del", "dev", ifname]);
          fd = openTap(ifname, options);
        }
      },
      () => {
        if (fd >= 0) closeFd(fd);
      },
    );
    return { fd, ifname: port.ifname, mac: port.mac, switchName: request.switchName, vmName: port.vmName, nic: port.nic, vlan: port.vlan };
  }

  /**
   * Gives a network namespace a port on a switch through a veth pair (its end is named
   * `peerIfname`, default `eth0`, with the port's MAC). Same guards and ACLs as a TAP.
   * @throws {ConfigError} as {@link attachPort}.
   */
  async attachVethPort(request: AttachVethRequest): Promise<Port> {
    const peer = request.peerIfname ?? "eth0";
    return this.#attach(
      request,
      "veth",
      async (ifname, mac) => {
        const add = ["ip", "link", "add", ifname, "type", "veth", "peer", "name", `${ifname}x`];
        if (!(await this.host.tryRun(add)).ok) {
          await this.host.tryRun(["ip", "link", "del", "dev", ifname]);
          await this.host.run(add);
        }
        await this.host.run(["ip", "link", "set", "dev", `${ifname}x`, "address", mac, "netns", request.peerNetns]);
        await new HostCommands({ netns: request.peerNetns }).run(["ip", "link", "set", "dev", `${ifname}x`, "name", peer, "up"]);
      },
      () => undefined,
    );
  }

  async #linkExists(ifname: string): Promise<boolean> {
    return (await this.host.tryRun(["ip", "link", "show", "dev", ifname])).ok;
  }

  async #attach(
    request: AttachPortRequest | AttachVethRequest,
    kind: "tap" | "veth",
    create: (ifname: string, mac: string) => Promise<void>,
    undo: () => void,
  ): Promise<Port> {
    const ref = { vmName: checkName(request.vmName, "VM name"), nic: checkName(request.nic, "NIC name") };
    const mac = request.mac === undefined ? randomMac() : parseMac(request.mac, "mac");
    if (request.vlan !== undefined) checkVlan(request.vlan, "vlan");
    return this.store.update(async (state) => {
      const sw = findSwitch(state, request.switchName);
      if (request.vlan !== undefined && sw.type === "external") throw externalVlan(sw, request.vlan);
      const ifname = portIfname(sw.name, ref);
      const stale = sw.ports.find((port) => isPort(port, ref));
      if (stale !== undefined && (await this.#linkExists(stale.ifname))) {
        throw new ConfigError(`${formatPortRef(ref)} already has a port on switch "${sw.name}"`, "network.port-exists");
      }
      const clash = sw.ports.find((port) => port.mac === mac && !isPort(port, ref));
      if (clash !== undefined) throw new ConfigError(`MAC ${mac} is already used by ${formatPortRef(clash)} on switch "${sw.name}"`, "network.bad-mac");
      const port: Port = {
        ...ref,
        ifname,
        kind,
        mac,
        ...(request.vlan === undefined ? {} : { vlan: request.vlan }),
        ...("peerNetns" in request ? { peerNetns: request.peerNetns } : {}),
        macGuard: request.macGuard ?? true,
        dhcpGuard: request.dhcpGuard ?? true,
        routerGuard: request.routerGuard ?? true,
        createdAt: new Date().toISOString(),
      };
      const updated: Switch = { ...sw, ports: [...sw.ports.filter((candidate) => !isPort(candidate, ref)), port] };
      try {
        await create(ifname, mac);
        try {
          await this.#plugPort(updated, port);
        } catch (error: unknown) {
          // After a host restart the switch's bridge is gone until someone re-applies it:
          // do it here, so that starting a VM is enough.
          if (await this.#linkExists(sw.bridge)) throw error;
          await this.#applySwitch(sw);
          await this.#plugPort(updated, port);
        }
        // One small nft transaction (the port's own objects), whatever the switch's rule
        // count; a stale record or a table out of step gets a full apply.
        const script = stale === undefined ? portAddScript(sw, port) : undefined;
        if (script === undefined || !(await this.host.tryRun(["nft", "-f", "-"], script)).ok) await this.#applyRuleset(updated, { previous: sw });
      } catch (error: unknown) {
        undo();
        await this.host.tryRun(["ip", "link", "del", "dev", ifname]);
        throw error;
      }
      return { state: withSwitch(state, updated), result: port };
    });
  }

  async #plugPort(sw: Switch, port: Port): Promise<void> {
    // The TAP's own MAC stays the kernel's random one: the guest's MAC (given to QEMU) is
    // what the bridge learns and what the spoofing guard allows.
    // Access VLANs are the ruleset's (port_vlan / vlan_members): frames stay untagged on the bridge.
    await this.host.run(["ip", "link", "set", "dev", port.ifname, "master", sw.bridge, "up"]);
  }

  /**
   * Removes a VM NIC's port: its interface (if still there), mirrors from or to it, and its
   * place in the ruleset. ACL rules naming the port are kept for the next attach.
   * @throws {ConfigError} `network.unknown-switch`, `network.unknown-port`.
   */
  async detachPort(request: { switchName: string; vmName: string; nic: string }): Promise<void> {
    await this.store.update(async (state) => {
      const sw = findSwitch(state, request.switchName);
      const port = sw.ports.find((candidate) => isPort(candidate, request));
      if (port === undefined) throw new ConfigError(`${formatPortRef(request)} has no port on switch "${sw.name}"`, "network.unknown-port");
      const mirrors = sw.mirrors.filter((mirror) => !isPort(mirror.from, request) && !("port" in mirror.to && isPort(mirror.to.port, request)));
      const updated: Switch = { ...sw, ports: sw.ports.filter((candidate) => candidate !== port), mirrors };
      if (sw.mirrors.length > 0) await this.#clearMirrors(sw);
      await this.host.tryRun(["ip", "link", "del", "dev", port.ifname]);
      if (!(await this.host.tryRun(["nft", "-f", "-"], portRemoveScript(sw, port))).ok) await this.#applyRuleset(updated, { previous: sw });
      if (updated.mirrors.length > 0) await this.#applyMirrors(updated);
      return { state: withSwitch(state, updated), result: undefined };
    });
  }

  /**
   * Removes every port a VM has on any switch (the engine's teardown, whatever NICs the
   * VM had). Returns the ports removed, as `switch/VM:NIC`.
   */
  async detachVm(vmName: string): Promise<string[]> {
    const removed: string[] = [];
    for (const sw of this.list()) {
      for (const port of sw.ports.filter((candidate) => candidate.vmName === vmName)) {
        await this.detachPort({ switchName: sw.name, vmName, nic: port.nic });
        removed.push(`${sw.name}/${formatPortRef(port)}`);
      }
    }
    return removed;
  }

  /**
   * Adds an ACL rule and applies the switch's new ruleset.
   * @throws {ConfigError} `network.unknown-switch`, `network.bad-acl`.
   */
  async addAcl(switchName: string, input: AclRuleInput): Promise<AclRule> {
    checkAclRule(input);
    return this.store.update(async (state) => {
      const sw = findSwitch(state, switchName);
      const rule: AclRule = { ...input, id: sw.nextAclId };
      const updated: Switch = { ...sw, acls: [...sw.acls, rule], nextAclId: sw.nextAclId + 1 };
      await this.#applyRuleset(updated, { resetFlows: true, previous: sw });
      return { state: withSwitch(state, updated), result: rule };
    });
  }

  /**
   * Adds many ACL rules in one ruleset change (benchmarks, imports).
   * @throws {ConfigError} as {@link addAcl}.
   */
  async addAcls(switchName: string, inputs: readonly AclRuleInput[]): Promise<AclRule[]> {
    inputs.forEach(checkAclRule);
    return this.store.update(async (state) => {
      const sw = findSwitch(state, switchName);
      const rules = inputs.map((input, index) => ({ ...input, id: sw.nextAclId + index }));
      const updated: Switch = { ...sw, acls: [...sw.acls, ...rules], nextAclId: sw.nextAclId + rules.length };
      await this.#applyRuleset(updated, { resetFlows: true, previous: sw });
      return { state: withSwitch(state, updated), result: rules };
    });
  }

  /**
   * Removes ACL rules by id (`all` removes every rule).
   * @throws {ConfigError} `network.unknown-switch`, `network.unknown-acl`.
   */
  async removeAcl(switchName: string, id: number | "all"): Promise<void> {
    await this.store.update(async (state) => {
      const sw = findSwitch(state, switchName);
      if (id !== "all" && !sw.acls.some((rule) => rule.id === id)) {
        throw new ConfigError(`Switch "${switchName}" has no ACL rule ${id}`, "network.unknown-acl");
      }
      const updated: Switch = { ...sw, acls: id === "all" ? [] : sw.acls.filter((rule) => rule.id !== id) };
      await this.#applyRuleset(updated, { resetFlows: true, previous: sw });
      return { state: withSwitch(state, updated), result: undefined };
    });
  }

  /** `nft -j list …` of the switch's table, with a hint when the table is gone (host restart, someone's flush). */
  async #listTable(sw: Switch, what: readonly string[]): Promise<string> {
    const outcome = await this.host.tryRun(["nft", "-j", "list", ...what]);
    if (outcome.ok) return outcome.stdout;
    const exists = (await this.host.tryRun(["nft", "-t", "list", "table", "bridge", sw.table])).ok;
    if (!exists) throw new HostError(`The nftables table of switch "${sw.name}" is missing; run "palisade switch repair"`, "network.needs-repair");
    throw new HostError(`nft list ${what.join(" ")} failed: ${outcome.stderr.trim().split("\n")[0] ?? ""}`, "network.command-failed");
  }

  /**
   * Counters of a switch's ACL rules, its default deny and its port guards.
   * @throws {ConfigError} `network.unknown-switch`.
   */
  async counters(switchName: string): Promise<SwitchCounters> {
    const sw = this.get(switchName);
    // One listing: the named counters (guards, default deny) and the ACL maps, whose
    // elements carry the per-rule counters.
    const parsed = JSON.parse(await this.#listTable(sw, ["table", "bridge", sw.table])) as unknown;
    const json = parsed as { nftables?: { counter?: { name?: string; packets?: number; bytes?: number } }[] };
    const byName = new Map<string, { packets: number; bytes: number }>();
    for (const entry of json.nftables ?? []) {
      if (entry.counter?.name !== undefined) byName.set(entry.counter.name, { packets: entry.counter.packets ?? 0, bytes: entry.counter.bytes ?? 0 });
    }
    const zero = { packets: 0, bytes: 0 };
    return {
      rules: totalRuleCounts(sw, ruleCounts(sw, parsed)),
      defaultDeny: byName.get(DEFAULT_DENY_COUNTER) ?? zero,
      guards: new Map(
        sw.ports.map((port) => {
          const names = guardCounterNames(port);
          return [formatPortRef(port), { mac: byName.get(names.mac)?.packets ?? 0, dhcp: byName.get(names.dhcp)?.packets ?? 0, routerAdvert: byName.get(names.routerAdvert)?.packets ?? 0 }];
        }),
      ),
    };
  }

  /**
   * The switch's flow log: allowed and denied IPv4 flows with counters, first and last
   * seen, and the ACL rule that decided.
   * @throws {ConfigError} `network.unknown-switch`, `network.no-flow-log`.
   */
  async flows(switchName: string): Promise<FlowRecord[]> {
    const sw = this.get(switchName);
    if (!sw.flowLog) throw new ConfigError(`Switch "${switchName}" was created without a flow log (--no-flow-log)`, "network.no-flow-log");
    const contents = new Map<string, SetElement[]>();
    await Promise.all(
      flowSetNames().map(async (set) => {
        contents.set(set, parseSetElements(JSON.parse(await this.#listTable(sw, ["set", "bridge", sw.table, set])) as unknown));
      }),
    );
    return buildFlows(sw, contents, Date.now());
  }

  /**
   * Mirrors both directions of a port's traffic to another port of the switch or to a host
   * interface (tc `mirred`).
   * @throws {ConfigError} `network.unknown-switch`, `network.unknown-port`, `network.bad-mirror`.
   */
  async addMirror(switchName: string, request: MirrorRequest): Promise<void> {
    await this.store.update(async (state) => {
      const sw = findSwitch(state, switchName);
      portOf(sw, request.from);
      if ("port" in request.to) {
        portOf(sw, request.to.port);
        if (isPort(request.to.port, request.from)) throw new ConfigError("A port cannot be mirrored to itself", "network.bad-mirror");
      } else {
        const target = checkIfname(request.to.ifname, "Mirror target");
        if (!(await this.#links()).some((link) => link.ifname === target)) {
          throw new ConfigError(`Mirror target interface "${target}" does not exist`, "network.bad-mirror");
        }
      }
      const mirror: Mirror = "port" in request.to ? { from: { ...request.from }, to: { port: { ...request.to.port } } } : { from: { ...request.from }, to: { ifname: request.to.ifname } };
      const updated: Switch = { ...sw, mirrors: [...sw.mirrors.filter((existing) => JSON.stringify(existing) !== JSON.stringify(mirror)), mirror] };
      await this.#applyMirrors(updated);
      return { state: withSwitch(state, updated), result: undefined };
    });
  }

  /**
   * Stops mirroring a port (every target).
   * @throws {ConfigError} `network.unknown-switch`.
   */
  async removeMirror(switchName: string, from: PortRef): Promise<void> {
    await this.store.update(async (state) => {
      const sw = findSwitch(state, switchName);
      const updated: Switch = { ...sw, mirrors: sw.mirrors.filter((mirror) => !isPort(mirror.from, from)) };
      await this.#clearMirrors(sw);
      await this.#applyMirrors(updated);
      return { state: withSwitch(state, updated), result: undefined };
    });
  }

  async #clearMirrors(sw: Switch): Promise<void> {
    for (const mirror of sw.mirrors) {
      const port = sw.ports.find((candidate) => isPort(candidate, mirror.from));
      if (port !== undefined) await this.host.tryRun(["tc", "qdisc", "del", "dev", port.ifname, "clsact"]);
    }
  }

  /** tc: a clsact qdisc on each mirrored port, a match-all u32 filter per direction. */
  async #applyMirrors(sw: Switch): Promise<void> {
    const links = new Set((await this.#links()).map((link) => link.ifname));
    const bySource = new Map<string, string[]>();
    for (const mirror of sw.mirrors) {
      const from = sw.ports.find((port) => isPort(port, mirror.from));
      const to = "port" in mirror.to ? sw.ports.find((port) => "port" in mirror.to && isPort(port, mirror.to.port))?.ifname : mirror.to.ifname;
      if (from === undefined || to === undefined || !links.has(from.ifname) || !links.has(to)) continue;
      bySource.set(from.ifname, [...(bySource.get(from.ifname) ?? []), to]);
    }
    for (const [from, targets] of bySource) {
      await this.host.tryRun(["tc", "qdisc", "del", "dev", from, "clsact"]);
      await this.host.run(["tc", "qdisc", "add", "dev", from, "clsact"]);
      // One filter per direction with every target as a chained action: a matching u32
      // filter ends classification, so a second filter would never see the packet.
      const actions = targets.flatMap((target) => ["action", "mirred", "egress", "mirror", "dev", target]);
      for (const direction of ["ingress", "egress"]) {
        await this.host.run(["tc", "filter", "add", "dev", from, direction, "pref", "10", "protocol", "all", "u32", "match", "u32", "0", "0", ...actions]);
      }
    }
  }

  /**
   * Captures a switch's traffic (or one port's) into a pcap file with tcpdump, optionally
   * through a tcpdump `filter` expression, until `count` packets, `durationMs`, or
   * `signal` aborts.
   * @throws {ConfigError} `network.unknown-switch`, `network.unknown-port`.
   * @throws {HostError} `network.capture-failed`.
   */
  async capture(
    switchName: string,
    options: { port?: PortRef | undefined; out: string; filter?: string | undefined; count?: number | undefined; durationMs?: number | undefined; signal?: AbortSignal | undefined; onReady?: () => void },
  ): Promise<void> {
    const sw = this.get(switchName);
    const ifname = options.port === undefined ? sw.bridge : portOf(sw, options.port).ifname;
    const argv = this.host.argv([
      "tcpdump",
      "-i",
      ifname,
      "-U",
      "-n",
      "-w",
      options.out,
      ...(options.count === undefined ? [] : ["-c", String(options.count)]),
      ...(options.filter === undefined ? [] : ["--", options.filter]),
    ]);
    const [file = "tcpdump", ...args] = argv;
    await new Promise<void>((resolve, reject) => {
      const child = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      let ready = false;
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
        if (!ready && stderr.includes("listening on")) {
          ready = true;
          options.onReady?.();
        }
      });
      const stop = (): void => {
        child.kill("SIGINT");
      };
      const timer = options.durationMs === undefined ? undefined : setTimeout(stop, options.durationMs);
      options.signal?.addEventListener("abort", stop, { once: true });
      child.on("error", (error) => {
        reject(new HostError(`tcpdump failed to start: ${errorMessage(error)}`, "network.capture-failed", { cause: error }));
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", stop);
        if (code === 0 || signal === "SIGINT" || existsSync(options.out)) resolve();
        else reject(new HostError(`tcpdump failed: ${stderr.trim().split("\n").pop() ?? `exit ${code}`}`, "network.capture-failed"));
      });
    });
  }

  /**
   * Re-applies every switch (after a host restart or a crash) and removes what Palisade
   * left behind: `palb*`/`palp*` interfaces and `palisade_*` tables no switch owns, ports
   * whose TAP is gone (their VM's worker ended), dead DHCP servers (restarted).
   */
  async repair(): Promise<RepairReport> {
    return this.store.update(async (state) => {
      const report: RepairReport = { removedInterfaces: [], removedTables: [], stalePorts: [], reapplied: [], restartedDhcp: [], failed: [] };
      const links = await this.#links();
      const owned = new Set(state.switches.flatMap((sw) => [sw.bridge, ...sw.ports.map((port) => port.ifname)]));
      // Ports first, then bridges: deleting a bridge releases its ports.
      const strays = links.filter((link) => (link.ifname.startsWith(PORT_PREFIX) || link.ifname.startsWith(BRIDGE_PREFIX)) && !owned.has(link.ifname));
      for (const link of strays.sort((a, b) => Number(a.ifname.startsWith(BRIDGE_PREFIX)) - Number(b.ifname.startsWith(BRIDGE_PREFIX)))) {
        await this.host.tryRun(["ip", "link", "del", "dev", link.ifname]);
        report.removedInterfaces.push(link.ifname);
      }
      for (const family of ["bridge", "ip"] as const) {
        const tables = JSON.parse(await this.host.run(["nft", "-j", "list", "tables", family])) as { nftables?: { table?: { name?: string } }[] };
        // An ip table belongs to a stateful switch only.
        const ownedTables = new Set(state.switches.filter((sw) => family === "bridge" || sw.stateful).map((sw) => sw.table));
        for (const entry of tables.nftables ?? []) {
          const name = entry.table?.name;
          if (name?.startsWith(TABLE_PREFIX) === true && !ownedTables.has(name)) {
            await this.host.tryRun(["nft", "delete", "table", family, name]);
            report.removedTables.push(family === "bridge" ? name : `ip ${name}`);
          }
        }
      }
      const present = new Set(links.map((link) => link.ifname));
      const switches: Switch[] = [];
      for (const sw of state.switches) {
        // A TAP is gone when its worker is; a veth when its namespace is.
        const gone = sw.ports.filter((port) => !present.has(port.ifname));
        report.stalePorts.push(...gone.map((port) => `${sw.name}/${formatPortRef(port)}`));
        const kept: Switch = { ...sw, ports: sw.ports.filter((port) => present.has(port.ifname)) };
        const dhcpWasDown = kept.dhcp && dhcpPid(dhcpPaths(this.store.dir, kept.id).pidFile) === undefined;
        try {
          await this.#applySwitch(kept);
          for (const port of kept.ports) await this.#plugPort(kept, port);
        } catch (error: unknown) {
          // One broken switch (its uplink unplugged, say) must not keep the others down.
          report.failed.push(`${kept.name}: ${errorMessage(error)}`);
          switches.push(kept);
          continue;
        }
        if (dhcpWasDown) report.restartedDhcp.push(kept.name);
        report.reapplied.push(kept.name);
        switches.push(kept);
      }
      return { state: { ...state, switches }, result: report };
    });
  }
}

/** The IPv4 subnets configured on the host's interfaces, from `ip -j -4 addr show`; pure. */
function hostSubnets(json: unknown): { ifname: string; subnet: Ipv4Cidr }[] {
  if (!Array.isArray(json)) return [];
  const result: { ifname: string; subnet: Ipv4Cidr }[] = [];
  for (const entry of json as { ifname?: unknown; addr_info?: unknown }[]) {
    if (typeof entry.ifname !== "string" || !Array.isArray(entry.addr_info)) continue;
    for (const info of entry.addr_info as { local?: unknown; prefixlen?: unknown }[]) {
      if (typeof info.local !== "string" || typeof info.prefixlen !== "number" || info.prefixlen === 32) continue;
      try {
        const address = parseIpv4(info.local, "address");
        const mask = info.prefixlen === 0 ? 0 : (0xffffffff << (32 - info.prefixlen)) >>> 0;
        result.push({ ifname: entry.ifname, subnet: { address: (address & mask) >>> 0, prefixLength: info.prefixlen } });
      } catch {
        // Not an address this check understands: ignore it.
      }
    }
  }
  return result;
}

/** An interface name safe to put in an nft script or a command line. */
function checkIfname(ifname: string, what: string): string {
  if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(ifname)) throw new ConfigError(`${what} "${ifname}" is not an interface name`, "network.bad-ifname");
  return ifname;
}

function portOf(sw: Switch, ref: PortRef): Port {
  const port = sw.ports.find((candidate) => isPort(candidate, ref));
  if (port === undefined) throw new ConfigError(`${formatPortRef(ref)} has no port on switch "${sw.name}"`, "network.unknown-port");
  return port;
}
