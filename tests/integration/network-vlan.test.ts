/**
 * Access VLANs (Hyper-V's "VLAN ID" on a VM network adapter) on a kernel without VLAN
 * support, with real packets between network namespaces this test creates: the switch
 * lives in a "host" namespace and stand-in VMs are namespaces on veth ports. The machine's
 * own interfaces are never touched.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Command } from "commander";
import { registerSwitchCommands } from "../../src/cli/switch-command.js";
import type { VirtualSwitches } from "../../src/network/index.js";
import { HostError, PalisadeError } from "../../src/util/errors.js";
import { must, NetworkLab, ping, run } from "./network-harness.js";

let lab: NetworkLab;
let switches: VirtualSwitches;

before(async () => {
  lab = await NetworkLab.open("pv");
  switches = lab.switches;
});

after(async () => {
  await lab.close();
});

/** A stand-in VM on a port of `vlan` (undefined: untagged), with an address. */
async function vm(switchName: string, name: string, address: string, mac: string, vlan?: number): Promise<string> {
  const ns = await lab.namespace(name);
  await switches.attachVethPort({ switchName, vmName: name, nic: "net0", peerNetns: ns, mac, vlan });
  await must(ns, ["ip", "addr", "add", address, "dev", "eth0"]);
  return ns;
}

/** Whether an ARP request from `netns` for `address` is answered within a second. */
async function arps(netns: string, address: string): Promise<boolean> {
  return (await run(netns, ["busybox", "arping", "-c", "1", "-w", "1", "-I", "eth0", address])).ok;
}

/** Whether `netns` reaches `address` by ARP and by ICMP. */
async function reaches(netns: string, address: string): Promise<{ arp: boolean; ping: boolean }> {
  return { arp: await arps(netns, address), ping: await ping(netns, address) };
}

/** The switch's `port_vlan` map as the kernel holds it: interface → VLAN id (0: untagged). */
async function kernelVlans(switchName: string): Promise<Record<string, number>> {
  const sw = switches.get(switchName);
  const listing = JSON.parse(await must(lab.host, ["nft", "-j", "list", "map", "bridge", sw.table, "port_vlan"])) as { nftables: { map?: { elem?: [string, number][] } }[] };
  const elements = listing.nftables.find((entry) => entry.map !== undefined)?.map?.elem ?? [];
  return Object.fromEntries(elements.map(([ifname, id]) => [ifname, id]));
}

/** What the state says the map should be. */
function expectedVlans(switchName: string): Record<string, number> {
  return Object.fromEntries(switches.get(switchName).ports.map((port) => [port.ifname, port.vlan ?? 0]));
}

/** Runs `palisade switch ARGS` in this process and returns its stdout. */
async function cli(...args: string[]): Promise<string> {
  const program = new Command("palisade").exitOverride();
  const chunks: string[] = [];
  registerSwitchCommands(program, { write: (text) => chunks.push(text) });
  await program.parseAsync(["switch", "--state-dir", lab.stateDir, "--netns", lab.host, ...args], { from: "user" });
  return chunks.join("");
}

/** Whether each listener namespace receives IPv4 multicast to 224.0.0.1 while `send` runs (tcpdump, bounded). */
async function hearsMulticast(listeners: readonly string[], send: () => Promise<unknown>): Promise<boolean[]> {
  const captures = listeners.map((ns) => run(ns, ["timeout", "5", "tcpdump", "-i", "eth0", "-n", "-p", "-c", "1", "ip and dst host 224.0.0.1"], 8000));
  await new Promise((resolve) => setTimeout(resolve, 1500)); // tcpdump is listening
  await send();
  return (await Promise.all(captures)).map((outcome) => outcome.stdout.includes("> 224.0.0.1"));
}

test("private switch: same-VLAN ports talk, other VLANs and untagged ports do not (ARP, ICMP, multicast)", async () => {
  await switches.create({ name: "vl", type: "private" });
  const a10 = await vm("vl", "a10", "10.62.0.1/24", "52:54:00:62:00:01", 10);
  const b10 = await vm("vl", "b10", "10.62.0.2/24", "52:54:00:62:00:02", 10);
  const c20 = await vm("vl", "c20", "10.62.0.3/24", "52:54:00:62:00:03", 20);
  await vm("vl", "d20", "10.62.0.4/24", "52:54:00:62:00:04", 20);
  const u = await vm("vl", "u", "10.62.0.5/24", "52:54:00:62:00:05");
  await vm("vl", "v", "10.62.0.6/24", "52:54:00:62:00:06");

  assert.deepEqual(await reaches(a10, "10.62.0.2"), { arp: true, ping: true }, "vlan 10 to vlan 10");
  assert.deepEqual(await reaches(c20, "10.62.0.4"), { arp: true, ping: true }, "vlan 20 to vlan 20");
  assert.deepEqual(await reaches(u, "10.62.0.6"), { arp: true, ping: true }, "untagged to untagged");
  assert.deepEqual(await reaches(a10, "10.62.0.3"), { arp: false, ping: false }, "vlan 10 to vlan 20");
  assert.deepEqual(await reaches(c20, "10.62.0.1"), { arp: false, ping: false }, "vlan 20 to vlan 10");
  assert.deepEqual(await reaches(u, "10.62.0.1"), { arp: false, ping: false }, "untagged to vlan 10");
  assert.deepEqual(await reaches(u, "10.62.0.3"), { arp: false, ping: false }, "untagged to vlan 20");
  assert.deepEqual(await reaches(a10, "10.62.0.5"), { arp: false, ping: false }, "vlan 10 to untagged");

  // A known MAC does not help: a static neighbour entry sends unicast straight at another VLAN.
  await must(a10, ["ip", "neigh", "replace", "10.62.0.3", "lladdr", "52:54:00:62:00:03", "dev", "eth0"]);
  assert.equal(await ping(a10, "10.62.0.3"), false, "unicast to a known MAC of another VLAN");

  // Multicast from a vlan-10 port reaches its VLAN only.
  await must(a10, ["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"]);
  const heard = await hearsMulticast([b10, c20, u], () => run(a10, ["busybox", "ping", "-c", "3", "-i", "0.3", "-W", "1", "224.0.0.1"], 5000));
  assert.deepEqual(heard, [true, false, false], "multicast heard by [vlan 10, vlan 20, untagged]");

  const view = JSON.parse(await cli("show", "vl", "--json")) as { ports: { port: string; vlan: number | null }[] };
  assert.deepEqual(
    view.ports.map((port) => [port.port, port.vlan]).sort(),
    [["a10:net0", 10], ["b10:net0", 10], ["c20:net0", 20], ["d20:net0", 20], ["u:net0", null], ["v:net0", null]],
  );
  const text = await cli("show", "vl");
  assert.match(text, /a10:net0 +palp\w+ veth 52:54:00:62:00:01 vlan 10 /);
  assert.match(text, /u:net0 +palp\w+ veth 52:54:00:62:00:05 vlan untagged /);
});

test("detach and re-attach keep the kernel's VLAN map in step with the ports", async () => {
  await switches.create({ name: "vm", type: "private" });
  const a = await vm("vm", "ma", "10.63.0.1/24", "52:54:00:63:00:01", 10);
  const b = await vm("vm", "mb", "10.63.0.2/24", "52:54:00:63:00:02", 10);
  await vm("vm", "mc", "10.63.0.3/24", "52:54:00:63:00:03", 20);
  assert.deepEqual(await kernelVlans("vm"), expectedVlans("vm"));
  assert.equal(await ping(a, "10.63.0.2"), true);

  // mb moves to VLAN 20: it now reaches mc and no longer ma.
  await switches.detachPort({ switchName: "vm", vmName: "mb", nic: "net0" });
  assert.deepEqual(await kernelVlans("vm"), expectedVlans("vm"));
  assert.equal(Object.keys(await kernelVlans("vm")).length, 2);
  await switches.attachVethPort({ switchName: "vm", vmName: "mb", nic: "net0", peerNetns: b, mac: "52:54:00:63:00:02", vlan: 20 });
  await must(b, ["ip", "addr", "add", "10.63.0.2/24", "dev", "eth0"]);
  assert.deepEqual(await kernelVlans("vm"), expectedVlans("vm"));
  assert.equal((await kernelVlans("vm"))[switches.get("vm").ports.find((port) => port.vmName === "mb")?.ifname ?? ""], 20);
  await must(b, ["ip", "neigh", "flush", "dev", "eth0"]);
  await must(a, ["ip", "neigh", "flush", "dev", "eth0"]);
  assert.equal(await ping(b, "10.63.0.3"), true, "mb reaches mc on VLAN 20");
  assert.deepEqual(await reaches(b, "10.63.0.1"), { arp: false, ping: false }, "mb no longer reaches ma");

  // A full apply (repair) builds the same map and pair set as the attach/detach deltas did.
  const table = switches.get("vm").table;
  const pairs = async (): Promise<string> => (await must(lab.host, ["nft", "list", "set", "bridge", table, "vlan_members"])).replace(/\s+/g, " ");
  const incremental = { map: await kernelVlans("vm"), pairs: await pairs() };
  await switches.repair();
  assert.deepEqual(await kernelVlans("vm"), incremental.map);
  assert.equal(await pairs(), incremental.pairs);
  assert.deepEqual(await reaches(b, "10.63.0.1"), { arp: false, ping: false }, "still apart after repair");

  for (const name of ["ma", "mb", "mc"]) await switches.detachPort({ switchName: "vm", vmName: name, nic: "net0" });
  assert.deepEqual(await kernelVlans("vm"), {});
  assert.doesNotMatch(await pairs(), /palp/);
});

test("internal switch: the host is untagged; an external switch refuses a VLAN port", async () => {
  await switches.create({ name: "vi", type: "internal", subnet: { address: 0x0a400000, prefixLength: 24 } });
  const tagged = await vm("vi", "it", "10.64.0.10/24", "52:54:00:64:00:10", 30);
  const plain = await vm("vi", "ip", "10.64.0.11/24", "52:54:00:64:00:11");
  assert.equal(await ping(plain, "10.64.0.1"), true, "untagged port reaches the host");
  assert.deepEqual(await reaches(tagged, "10.64.0.1"), { arp: false, ping: false }, "VLAN port does not reach the host");
  assert.equal(await ping(lab.host, "10.64.0.10"), false, "the host does not reach the VLAN port");

  await must(lab.host, ["ip", "link", "add", "vup0", "type", "veth", "peer", "name", "vup0p"]);
  await switches.create({ name: "vx", type: "external", uplink: "vup0" });
  const ns = await lab.namespace("xt");
  await assert.rejects(switches.attachVethPort({ switchName: "vx", vmName: "xt", nic: "net0", peerNetns: ns, vlan: 10 }), (error: unknown) => {
    assert.ok(error instanceof HostError);
    assert.equal(error.code, "network.no-vlan");
    assert.match(error.message, /^vlan: VLAN 10 on external switch "vx" .*802\.1Q.*CONFIG_BRIDGE_VLAN_FILTERING.*CONFIG_VLAN_8021Q/);
    return true;
  });
  assert.equal(switches.get("vx").ports.length, 0);
  assert.equal((await run(lab.host, ["ip", "link", "show", "dev", "vup0"])).ok, true, "the uplink stays");
  assert.doesNotMatch(await must(lab.host, ["ip", "-o", "link", "show", "master", switches.get("vx").bridge]), /palp/, "no port interface left behind");
  // Untagged ports still work on an external switch.
  await switches.attachVethPort({ switchName: "vx", vmName: "xt", nic: "net0", peerNetns: ns });
});

test("bad VLAN ids are refused, naming the field", async () => {
  await switches.create({ name: "vb", type: "private" });
  const ns = await lab.namespace("bv");
  for (const bad of [0, 4095, Number.NaN, 2.5]) {
    await assert.rejects(switches.attachVethPort({ switchName: "vb", vmName: "bv", nic: "net0", peerNetns: ns, vlan: bad }), (error: unknown) => {
      assert.ok(error instanceof PalisadeError);
      assert.equal(error.code, "network.bad-vlan");
      assert.match(error.message, /^vlan: .* is not a VLAN id \(1-4094\)$/);
      return true;
    });
  }
  for (const bad of ["0", "4095", "x"]) {
    await assert.rejects(cli("port", "add", "vb", "--vm", "bv", "--nic", "net0", "--peer-netns", ns, "--vlan", bad), (error: unknown) => {
      assert.ok(error instanceof PalisadeError);
      assert.equal(error.code, "network.bad-vlan");
      assert.match(error.message, /^--vlan: .* is not a VLAN id \(1-4094\)$/);
      return true;
    });
  }
  assert.equal(switches.get("vb").ports.length, 0);
  assert.match(await cli("port", "add", "vb", "--vm", "bv", "--nic", "net0", "--peer-netns", ns, "--vlan", "4094"), /, vlan 4094\n$/);
});
