/**
 * `palisade switch …`: virtual switches (private, internal, external), their ports, ACLs,
 * mirrors, capture and flow log. Parses flags into typed requests once, then calls
 * `network/`.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import { ConfigError } from "../util/errors.js";
import {
  ACL_PRIORITY_DEFAULT,
  ACL_PRIORITY_MAX,
  ACL_PRIORITY_MIN,
  DEFAULT_STATE_DIR,
  SWITCH_TYPES,
  VirtualSwitches,
  formatCidr,
  formatPortRange,
  formatPortRef,
  parseCidr,
  parsePortRange,
  parsePortRef,
  parseVlan,
  type AclAction,
  type AclDirection,
  type AclProtocol,
  type AclRule,
  type FlowRecord,
  type Switch,
  type SwitchType,
} from "../network/index.js";

interface GroupOptions {
  stateDir?: string;
  netns?: string;
}

function switches(command: Command): VirtualSwitches {
  const options = command.optsWithGlobals<GroupOptions>();
  return new VirtualSwitches({ stateDir: options.stateDir, netns: options.netns });
}

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(`${flag}: "${value}" is not one of ${allowed.join(", ")}`, "network.bad-flag");
  }
  return value as T;
}

function parsePriority(text: string): number {
  const value = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(value >= ACL_PRIORITY_MIN && value <= ACL_PRIORITY_MAX)) {
    throw new ConfigError(`--priority: "${text}" is not an integer from ${ACL_PRIORITY_MIN} to ${ACL_PRIORITY_MAX}`, "network.bad-priority");
  }
  return value;
}

function parseCount(text: string, flag: string): number {
  const value = /^\d{1,9}$/.test(text) ? Number(text) : 0;
  if (value <= 0) throw new ConfigError(`${flag}: "${text}" is not a positive integer`, "network.bad-flag");
  return value;
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length))) ?? [];
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join("  ")).join("\n") + "\n";
}

function switchView(sw: Switch): Record<string, unknown> {
  return {
    name: sw.name,
    type: sw.type,
    bridge: sw.bridge,
    table: sw.table,
    uplink: sw.uplink,
    subnet: sw.subnet === undefined ? undefined : formatCidr(sw.subnet),
    dhcp: sw.dhcp,
    defaultDeny: sw.defaultDeny,
    stateful: sw.stateful,
    flowLog: sw.flowLog,
    createdAt: sw.createdAt,
    ports: sw.ports.map((port) => ({ port: formatPortRef(port), ifname: port.ifname, kind: port.kind, mac: port.mac, vlan: port.vlan ?? null, peerNetns: port.peerNetns, macGuard: port.macGuard, dhcpGuard: port.dhcpGuard, routerGuard: port.routerGuard })),
    acls: sw.acls.map(ruleView),
    mirrors: sw.mirrors.map((mirror) => ({ from: formatPortRef(mirror.from), to: "port" in mirror.to ? formatPortRef(mirror.to.port) : mirror.to.ifname })),
  };
}

interface RuleView {
  id: number;
  port: string;
  direction: AclDirection;
  action: AclAction;
  protocol: AclProtocol;
  remote: string;
  portRange: string;
  priority: number;
}

function ruleView(rule: AclRule): RuleView {
  return {
    id: rule.id,
    port: rule.port === undefined ? "*" : formatPortRef(rule.port),
    direction: rule.direction,
    action: rule.action,
    protocol: rule.protocol,
    remote: rule.remote === undefined ? "any" : formatCidr(rule.remote),
    portRange: rule.portRange === undefined ? "any" : formatPortRange(rule.portRange),
    priority: rule.priority,
  };
}

function flowLine(flow: FlowRecord): string {
  const ports = (port: number | undefined): string => (port === undefined ? "" : `:${port}`);
  const decided = flow.rule === undefined ? "" : ` by ${flow.rule}`;
  const where = flow.port ?? (flow.ifname === "" ? "host" : flow.ifname);
  return `${flow.lastSeen}  ${flow.verdict.padEnd(7)} ${flow.protocol.padEnd(4)} ${flow.source}${ports(flow.sourcePort)} -> ${flow.destination}${ports(flow.destinationPort)}  ${flow.packets} pkts ${flow.bytes} B  first ${flow.firstSeen ?? "-"}  port ${where}${flow.stage === undefined ? "" : ` (${flow.stage})`}${decided}\n`;
}

/** Where `palisade switch` prints; tests pass their own. */
export interface SwitchCommandOutput {
  write(text: string): void;
}

/** Registers `palisade switch …`. */
export function registerSwitchCommands(program: Command, output: SwitchCommandOutput = { write: (text) => process.stdout.write(text) }): void {
  const write = (text: string): void => {
    output.write(text);
  };
  const print = (json: boolean, value: unknown, text: () => string): void => {
    write(json ? `${JSON.stringify(value, null, 2)}\n` : text());
  };
  const group = program
    .command("switch")
    .description("virtual switches: private (VMs only), internal (VMs and host), external (bridged to a host NIC)")
    .option("--state-dir <dir>", `state directory (default ${DEFAULT_STATE_DIR} as root; env PALISADE_NETWORK_DIR)`)
    .option("--netns <name>", "operate inside this network namespace (tests, labs)");

  group
    .command("create <name>")
    .description("create a switch")
    .requiredOption("--type <type>", `one of ${SWITCH_TYPES.join(", ")}`)
    .option("--uplink <iface>", "host interface to bridge (external only; never the management interface)")
    .option("--subnet <cidr>", "IPv4 subnet, e.g. 10.20.0.0/24 (internal: the host takes the first address)")
    .option("--dhcp", "serve DHCP on an internal switch (dnsmasq)")
    .option("--default-deny", "deny IPv4 traffic no ACL rule allows (ARP and IPv6 neighbour discovery pass)")
    .option("--stateful", "stateful ACLs: replies of allowed connections pass (conntrack)")
    .option("--no-flow-log", "do not log flows (saves one set update per packet)")
    .option("--json", "print the switch as JSON")
    .action(async (name: string, options: { type: string; uplink?: string; subnet?: string; dhcp?: boolean; defaultDeny?: boolean; stateful?: boolean; flowLog: boolean; json?: boolean }, command: Command) => {
      const sw = await switches(command).create({
        name,
        type: oneOf<SwitchType>(options.type, SWITCH_TYPES, "--type"),
        uplink: options.uplink,
        subnet: options.subnet === undefined ? undefined : parseCidr(options.subnet, "--subnet"),
        dhcp: options.dhcp,
        defaultDeny: options.defaultDeny,
        stateful: options.stateful,
        flowLog: options.flowLog,
      });
      print(options.json === true, switchView(sw), () => `Created ${sw.type} switch ${sw.name} (bridge ${sw.bridge})\n`);
    });

  group
    .command("list")
    .description("list switches")
    .option("--json", "JSON output")
    .action((options: { json?: boolean }, command: Command) => {
      const all = switches(command).list();
      print(options.json === true, all.map(switchView), () =>
        all.length === 0
          ? "No switches\n"
          : table([
              ["NAME", "TYPE", "BRIDGE", "PORTS", "ACLS", "SUBNET", "UPLINK"],
              ...all.map((sw) => [sw.name, sw.type, sw.bridge, String(sw.ports.length), String(sw.acls.length), sw.subnet === undefined ? "-" : formatCidr(sw.subnet), sw.uplink ?? "-"]),
            ]),
      );
    });

  group
    .command("show <name>")
    .description("show a switch, its ports, ACLs, mirrors and counters")
    .option("--json", "JSON output")
    .action(async (name: string, options: { json?: boolean }, command: Command) => {
      const vs = switches(command);
      const sw = vs.get(name);
      const counters = await vs.counters(name);
      const view = {
        ...switchView(sw),
        counters: { rules: Object.fromEntries(counters.rules), defaultDeny: counters.defaultDeny, guards: Object.fromEntries(counters.guards) },
      };
      print(options.json === true, view, () => {
        const lines = [
          `Switch ${sw.name}: ${sw.type}, bridge ${sw.bridge}, nft table bridge ${sw.table}`,
          `  subnet ${sw.subnet === undefined ? "-" : formatCidr(sw.subnet)}, uplink ${sw.uplink ?? "-"}, dhcp ${sw.dhcp ? "on" : "off"}, default ${sw.defaultDeny ? "deny" : "allow"}, acls ${sw.stateful ? "stateful" : "stateless"}, flow log ${sw.flowLog ? "on" : "off"}`,
          `  ports (${sw.ports.length}):`,
          ...sw.ports.map((port) => {
            const guards = counters.guards.get(formatPortRef(port));
            return `    ${formatPortRef(port)}  ${port.ifname} ${port.kind} ${port.mac} vlan ${port.vlan === undefined ? "untagged" : String(port.vlan)}  dropped: spoofed ${guards?.mac ?? 0}, dhcp ${guards?.dhcp ?? 0}, ra ${guards?.routerAdvert ?? 0}`;
          }),
          `  acls (${sw.acls.length}), see "switch acl list"; default-deny drops ${counters.defaultDeny.packets}`,
          ...sw.mirrors.map((mirror) => `  mirror ${formatPortRef(mirror.from)} -> ${"port" in mirror.to ? formatPortRef(mirror.to.port) : mirror.to.ifname}`),
        ];
        return `${lines.join("\n")}\n`;
      });
    });

  group
    .command("delete <name>")
    .description("delete a switch and everything it put on the host")
    .action(async (name: string, _options: unknown, command: Command) => {
      await switches(command).delete(name);
      write(`Deleted switch ${name}\n`);
    });

  group
    .command("repair")
    .description("re-apply every switch and remove leftovers (after a crash or a host restart)")
    .option("--json", "JSON output")
    .action(async (options: { json?: boolean }, command: Command) => {
      const report = await switches(command).repair();
      print(options.json === true, report, () =>
        [
          `Re-applied: ${report.reapplied.join(", ") || "-"}`,
          `Removed interfaces: ${report.removedInterfaces.join(", ") || "-"}`,
          `Removed tables: ${report.removedTables.join(", ") || "-"}`,
          `Stale ports dropped: ${report.stalePorts.join(", ") || "-"}`,
          `DHCP restarted: ${report.restartedDhcp.join(", ") || "-"}`,
          ...report.failed.map((failure) => `FAILED ${failure}`),
          "",
        ].join("\n"),
      );
    });

  const port = group.command("port").description("ports for network namespaces (VM ports come from the engine)");
  port
    .command("add <switch>")
    .description("give a network namespace a port through a veth pair")
    .requiredOption("--vm <name>", "name the port's owner goes by (VM:NIC in ACLs)")
    .requiredOption("--nic <name>", "NIC name, e.g. net0")
    .requiredOption("--peer-netns <name>", "namespace receiving the guest end")
    .option("--peer-ifname <name>", "name of the guest end", "eth0")
    .option("--mac <mac>", "MAC address (default random 52:54:00:…)")
    .option("--no-mac-guard", "allow any source MAC")
    .option("--vlan <n>", "access VLAN 1-4094 (default untagged)")
    .action(async (switchName: string, options: { vm: string; nic: string; peerNetns: string; peerIfname: string; mac?: string; macGuard: boolean; vlan?: string }, command: Command) => {
      const vlan = options.vlan === undefined ? undefined : parseVlan(options.vlan, "--vlan");
      const added = await switches(command).attachVethPort({ switchName, vmName: options.vm, nic: options.nic, peerNetns: options.peerNetns, peerIfname: options.peerIfname, mac: options.mac, macGuard: options.macGuard, vlan });
      write(`Port ${formatPortRef(added)} on ${switchName}: ${added.ifname} (${added.mac})${added.vlan === undefined ? "" : `, vlan ${String(added.vlan)}`}\n`);
    });
  port
    .command("remove <switch> <port>")
    .description("remove a port (VM:NIC)")
    .action(async (switchName: string, portText: string, _options: unknown, command: Command) => {
      const ref = parsePortRef(portText, "port");
      await switches(command).detachPort({ switchName, ...ref });
      write(`Removed port ${portText} from ${switchName}\n`);
    });

  const acl = group.command("acl").description("port ACLs: stateless IPv4 rules, higher priority first");
  acl
    .command("add <switch>")
    .description("add a rule")
    .option("--port <vm:nic>", "the port the rule applies to (default: every port)")
    .requiredOption("--direction <dir>", "in (to the VM) or out (from the VM)")
    .requiredOption("--action <action>", "allow or deny")
    .requiredOption("--proto <proto>", "tcp, udp, icmp or any")
    .option("--remote <cidr>", "the other end: source for in, destination for out (default any)")
    .option("--port-range <a-b>", "destination port or range, tcp/udp only")
    .option("--priority <n>", `${ACL_PRIORITY_MIN}-${ACL_PRIORITY_MAX}, higher first`, String(ACL_PRIORITY_DEFAULT))
    .option("--json", "print the rule as JSON")
    .action(async (switchName: string, options: { port?: string; direction: string; action: string; proto: string; remote?: string; portRange?: string; priority: string; json?: boolean }, command: Command) => {
      const rule = await switches(command).addAcl(switchName, {
        ...(options.port === undefined ? {} : { port: parsePortRef(options.port) }),
        direction: oneOf<AclDirection>(options.direction, ["in", "out"], "--direction"),
        action: oneOf<AclAction>(options.action, ["allow", "deny"], "--action"),
        protocol: oneOf<AclProtocol>(options.proto, ["tcp", "udp", "icmp", "any"], "--proto"),
        ...(options.remote === undefined ? {} : { remote: parseCidr(options.remote, "--remote") }),
        ...(options.portRange === undefined ? {} : { portRange: parsePortRange(options.portRange) }),
        priority: parsePriority(options.priority),
      });
      print(options.json === true, ruleView(rule), () => `Added rule ${rule.id} to ${switchName}\n`);
    });
  acl
    .command("list <switch>")
    .description("list rules in evaluation order, with their counters")
    .option("--json", "JSON output")
    .action(async (switchName: string, options: { json?: boolean }, command: Command) => {
      const vs = switches(command);
      const sw = vs.get(switchName);
      const counters = await vs.counters(switchName);
      const rules = [...sw.acls].sort((a, b) => b.priority - a.priority || a.id - b.id).map((rule) => ({ ...ruleView(rule), ...(counters.rules.get(rule.id) ?? { packets: 0, bytes: 0 }) }));
      print(options.json === true, rules, () =>
        table([
          ["ID", "PRIO", "PORT", "DIR", "ACTION", "PROTO", "REMOTE", "PORTS", "PACKETS", "BYTES"],
          ...rules.map((rule) => [rule.id, rule.priority, rule.port, rule.direction, rule.action, rule.protocol, rule.remote, rule.portRange, rule.packets, rule.bytes].map(String)),
        ]) + `default: ${sw.defaultDeny ? "deny" : "allow"}\n`,
      );
    });
  acl
    .command("remove <switch> <id>")
    .description("remove a rule by id, or all rules")
    .action(async (switchName: string, idText: string, _options: unknown, command: Command) => {
      const id = idText === "all" ? "all" : parseCount(idText, "rule id");
      await switches(command).removeAcl(switchName, id);
      write(`Removed rule ${idText} from ${switchName}\n`);
    });

  group
    .command("mirror <switch>")
    .description("copy a port's traffic (both directions) to another port or a host interface")
    .requiredOption("--from <vm:nic>", "the mirrored port")
    .option("--to <target>", "VM:NIC of an appliance port, or a host interface")
    .option("--remove", "stop mirroring --from")
    .action(async (switchName: string, options: { from: string; to?: string; remove?: boolean }, command: Command) => {
      const from = parsePortRef(options.from, "--from");
      const vs = switches(command);
      if (options.remove === true) {
        await vs.removeMirror(switchName, from);
        write(`Stopped mirroring ${options.from}\n`);
        return;
      }
      if (options.to === undefined) throw new ConfigError("switch mirror needs --to VM:NIC|IFACE (or --remove)", "network.bad-mirror");
      const to = options.to.includes(":") ? { port: parsePortRef(options.to, "--to") } : { ifname: options.to };
      await vs.addMirror(switchName, { from, to });
      write(`Mirroring ${options.from} to ${options.to}\n`);
    });

  group
    .command("flows <switch>")
    .description("VM-to-VM and VM-to-outside IPv4 flows: 5-tuple, counters, first/last seen, verdict and rule")
    .option("--follow", "keep printing flows as they change")
    .option("--interval <s>", "poll interval with --follow", "1")
    .option("--json", "JSON (one object per line with --follow)")
    .action(async (switchName: string, options: { follow?: boolean; interval: string; json?: boolean }, command: Command) => {
      const vs = switches(command);
      const flows = await vs.flows(switchName);
      if (options.follow !== true) {
        print(options.json === true, flows, () => (flows.length === 0 ? "No flows\n" : flows.map(flowLine).join("")));
        return;
      }
      const intervalMs = parseCount(options.interval, "--interval") * 1000;
      const seen = new Map<string, number>();
      const stopped = new AbortController();
      process.once("SIGINT", () => {
        stopped.abort();
      });
      for (let current = flows; !stopped.signal.aborted; current = await vs.flows(switchName)) {
        for (const flow of current) {
          const key = `${flow.verdict}|${flow.ifname}|${flow.protocol}|${flow.source}|${flow.sourcePort}|${flow.destination}|${flow.destinationPort}`;
          if (seen.get(key) === flow.packets) continue;
          seen.set(key, flow.packets);
          write(options.json === true ? `${JSON.stringify(flow)}\n` : flowLine(flow));
        }
        await sleep(intervalMs, undefined, { signal: stopped.signal }).catch(() => undefined);
      }
    });

  group
    .command("capture <switch>")
    .description("capture a switch's (or one port's) traffic into a pcap file with tcpdump")
    .option("--port <vm:nic>", "capture one port only")
    .requiredOption("--out <file>", "pcap file to write")
    .option("--filter <expr>", "tcpdump filter expression, e.g. \"icmp or port 53\"")
    .option("--count <n>", "stop after n packets")
    .option("--duration <s>", "stop after s seconds")
    .action(async (switchName: string, options: { port?: string; out: string; filter?: string; count?: string; duration?: string }, command: Command) => {
      const controller = new AbortController();
      process.once("SIGINT", () => {
        controller.abort();
      });
      await switches(command).capture(switchName, {
        port: options.port === undefined ? undefined : parsePortRef(options.port),
        out: options.out,
        filter: options.filter,
        count: options.count === undefined ? undefined : parseCount(options.count, "--count"),
        durationMs: options.duration === undefined ? undefined : parseCount(options.duration, "--duration") * 1000,
        signal: controller.signal,
      });
      write(`Wrote ${options.out}\n`);
    });
}
