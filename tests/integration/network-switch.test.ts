/**
 * Virtual switches on real kernel objects, inside network namespaces this test creates:
 * the switch lives in a "host" namespace, and stand-in VMs are either namespaces on veth
 * ports or TAP file descriptors held by this process (as QEMU would hold them). The
 * machine's own interfaces are never touched.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import type { VirtualSwitches } from "../../src/network/index.js";
import { connects, must, NetworkLab, ping, run } from "./network-harness.js";

let lab: NetworkLab;
let switches: VirtualSwitches;
let host = "";

before(async () => {
  lab = await NetworkLab.open("pn");
  switches = lab.switches;
  host = lab.host;
});

after(async () => {
  await lab.close();
});

test("private switch: two VMs ping each other, the host cannot reach them", async () => {
  await switches.create({ name: "priv", type: "private" });
  const a = await lab.vmNamespace("priv", "pa", "10.61.0.1/24", "52:54:00:61:00:01");
  const b = await lab.vmNamespace("priv", "pb", "10.61.0.2/24", "52:54:00:61:00:02");

  assert.ok(await ping(a, "10.61.0.2"), "a reaches b");
  assert.ok(await ping(b, "10.61.0.1"), "b reaches a");
  const bridge = switches.get("priv").bridge;
  const addresses = JSON.parse(await must(host, ["ip", "-j", "addr", "show", "dev", bridge])) as { addr_info: unknown[] }[];
  assert.deepEqual(addresses[0]?.addr_info, [], "no IPv4 or IPv6 address on a private bridge");
  assert.ok(!(await ping(host, "10.61.0.1")), "the host cannot reach a VM on a private switch");
});

test("internal switch: the host reaches the VMs, DHCP hands out a lease", async () => {
  await switches.create({ name: "int", type: "internal", subnet: { address: 0x0a3e0000, prefixLength: 24 }, dhcp: true });
  const vm = await lab.vmNamespace("int", "ia", "10.62.0.50/24", "52:54:00:62:00:01");

  assert.ok(await ping(host, "10.62.0.50"), "host reaches the VM");
  assert.ok(await ping(vm, "10.62.0.1"), "the VM reaches the host's address on the switch");
  const lease = await run(vm, ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", "/bin/true"], 15_000);
  assert.match(lease.stdout + lease.stderr, /lease of 10\.62\.0\.\d+ obtained/);
});

test("external switch: a VM reaches a server behind the uplink; the management interface is refused", async () => {
  const outside = await lab.namespace("out");
  await must(host, ["ip", "link", "add", "upl0", "type", "veth", "peer", "name", "eth0", "netns", outside]);
  await must(outside, ["ip", "addr", "add", "10.63.0.254/24", "dev", "eth0"]);
  await must(outside, ["ip", "link", "set", "eth0", "up"]);
  // The host's management interface: the one holding the default route.
  await must(host, ["ip", "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt0p"]);
  await must(host, ["ip", "link", "set", "mgmt0p", "up"]);
  await must(host, ["ip", "link", "set", "mgmt0", "up"]);
  await must(host, ["ip", "addr", "add", "192.0.2.10/24", "dev", "mgmt0"]);
  await must(host, ["ip", "route", "add", "default", "via", "192.0.2.1", "dev", "mgmt0"]);

  await assert.rejects(switches.create({ name: "ext-bad", type: "external", uplink: "mgmt0" }), /holds the host's default route/);
  await switches.create({ name: "ext", type: "external", uplink: "upl0" });
  const vm = await lab.vmNamespace("ext", "ea", "10.63.0.1/24", "52:54:00:63:00:01");

  assert.ok(await ping(vm, "10.63.0.254"), "the VM reaches the server outside");
  await switches.delete("ext");
  const uplink = JSON.parse(await must(host, ["ip", "-j", "link", "show", "dev", "upl0"])) as { master?: string }[];
  assert.equal(uplink[0]?.master, undefined, "deleting the switch releases the uplink");
});

test("ACLs: a deny blocks exactly what it names, the flow log shows it, a higher allow re-opens it", async () => {
  await switches.create({ name: "acl", type: "private" });
  const a = await lab.vmNamespace("acl", "aa", "10.64.0.1/24", "52:54:00:64:00:01");
  const b = await lab.vmNamespace("acl", "ab", "10.64.0.2/24", "52:54:00:64:00:02");
  const servers = [5001, 5002].map((port) => execFile("ip", ["netns", "exec", b, "busybox", "nc", "-ll", "-p", String(port), "-e", "/bin/true"]));
  try {
    await sleep(200); // let the listeners bind
    assert.ok(await connects(a, "10.64.0.2", 5001), "before any rule, TCP 5001 passes");
    const deny = await switches.addAcl("acl", { port: { vmName: "ab", nic: "net0" }, direction: "in", action: "deny", protocol: "tcp", portRange: { first: 5001, last: 5001 }, priority: 100 });

    assert.ok(!(await connects(a, "10.64.0.2", 5001)), "TCP 5001 to b is denied");
    assert.ok(await connects(a, "10.64.0.2", 5002), "TCP 5002 is not named and passes");
    assert.ok(await ping(a, "10.64.0.2"), "ICMP is not named and passes");
    const flows = await switches.flows("acl");
    const denial = flows.find((flow) => flow.verdict === "denied" && flow.destinationPort === 5001);
    assert.ok(denial !== undefined, `the flow log shows the denial: ${JSON.stringify(flows)}`);
    assert.equal(denial.rule, `acl:${deny.id}`);
    assert.equal(denial.port, "ab:net0");
    assert.equal(denial.stage, "in");
    assert.equal(denial.source, "10.64.0.1");
    assert.ok(denial.packets >= 1);
    assert.ok(flows.some((flow) => flow.verdict === "allowed" && flow.destinationPort === 5002 && flow.port === "aa:net0"), "allowed flows are logged too");

    await switches.addAcl("acl", { port: { vmName: "ab", nic: "net0" }, direction: "in", action: "allow", protocol: "tcp", remote: { address: 0x0a400001, prefixLength: 32 }, priority: 200 });
    assert.ok(await connects(a, "10.64.0.2", 5001), "the higher-priority allow re-opens TCP 5001 from a");
    const counters = await switches.counters("acl");
    assert.ok((counters.rules.get(deny.id)?.packets ?? 0) >= 1, "the deny rule's counter survives the ruleset change");
  } finally {
    for (const server of servers) server.kill();
  }
});

test("default deny: IPv4 is dropped unless allowed, ARP still resolves", async () => {
  await switches.create({ name: "dd", type: "private", defaultDeny: true });
  const a = await lab.vmNamespace("dd", "da", "10.65.0.1/24", "52:54:00:65:00:01");
  await lab.vmNamespace("dd", "db", "10.65.0.2/24", "52:54:00:65:00:02");

  assert.ok(!(await ping(a, "10.65.0.2")), "nothing allowed yet");
  await switches.addAcl("dd", { direction: "out", action: "allow", protocol: "icmp", priority: 10 });
  await switches.addAcl("dd", { direction: "in", action: "allow", protocol: "icmp", priority: 10 });
  assert.ok(await ping(a, "10.65.0.2"), "ICMP allowed both ways");
  assert.ok((await switches.counters("dd")).defaultDeny.packets >= 1);
});

test("stateful ACLs: replies to a connection a VM opened pass a deny; the connections it names do not", async () => {
  // The same rule on a stateless and a stateful switch: a denies every TCP segment coming in.
  const denyTcpIn = (vmName: string) => ({ port: { vmName, nic: "net0" }, direction: "in" as const, action: "deny" as const, protocol: "tcp" as const, priority: 100 });
  await switches.create({ name: "stless", type: "private" });
  await switches.create({ name: "stful", type: "private", stateful: true });
  const a1 = await lab.vmNamespace("stless", "la", "10.66.0.1/24", "52:54:00:66:00:01");
  const b1 = await lab.vmNamespace("stless", "lb", "10.66.0.2/24", "52:54:00:66:00:02");
  const a2 = await lab.vmNamespace("stful", "fa", "10.67.0.1/24", "52:54:00:67:00:01");
  const b2 = await lab.vmNamespace("stful", "fb", "10.67.0.2/24", "52:54:00:67:00:02");
  await switches.addAcl("stless", denyTcpIn("la"));
  await switches.addAcl("stful", denyTcpIn("fa"));
  const servers = [a1, b1, a2, b2].map((ns) => execFile("ip", ["netns", "exec", ns, "busybox", "nc", "-ll", "-p", "5010", "-e", "/bin/true"]));
  try {
    await sleep(200); // let the listeners bind

    assert.ok(!(await connects(a1, "10.66.0.2", 5010)), "stateless: b's SYN-ACK to a is a TCP segment coming in, and denied");
    assert.ok(await connects(a2, "10.67.0.2", 5010), "stateful: b's replies belong to a's connection and pass");
    assert.ok(!(await connects(b2, "10.67.0.1", 5010)), "stateful: a connection b opens to a is still denied");
    assert.ok(((await switches.counters("stful")).rules.get(1)?.packets ?? 0) >= 1, "the deny counted b's SYNs");
    const table = switches.get("stful").table;
    assert.match(await must(host, ["nft", "list", "table", "ip", table]), /ct state established,related/);
    assert.ok(!(await run(host, ["nft", "list", "table", "ip", switches.get("stless").table])).ok, "a stateless switch has no conntrack table");
    await switches.delete("stful");
    assert.ok(!(await run(host, ["nft", "list", "table", "ip", table])).ok, "deleting the switch removes its conntrack table");
  } finally {
    for (const server of servers) server.kill();
  }
});

test("stateful ACLs on an internal switch: the host's replies to a VM pass, the host's own connections to it do not", async () => {
  await switches.create({ name: "stint", type: "internal", subnet: { address: 0x0a480000, prefixLength: 24 }, stateful: true });
  const vm = await lab.vmNamespace("stint", "ia2", "10.72.0.5/24", "52:54:00:72:00:05");
  await switches.addAcl("stint", { port: { vmName: "ia2", nic: "net0" }, direction: "in", action: "deny", protocol: "tcp", priority: 100 });
  const servers = [execFile("ip", ["netns", "exec", host, "busybox", "nc", "-ll", "-p", "5020", "-e", "/bin/true"]), execFile("ip", ["netns", "exec", vm, "busybox", "nc", "-ll", "-p", "5021", "-e", "/bin/true"])];
  try {
    await sleep(200); // let the listeners bind

    assert.ok(await connects(vm, "10.72.0.1", 5020), "the host's replies (bridge output) belong to the VM's connection");
    assert.ok(!(await connects(host, "10.72.0.5", 5021)), "a connection the host opens is judged by the deny");
  } finally {
    for (const server of servers) server.kill();
  }
});

test("stateful switches with the same subnet keep their connections apart (one conntrack zone each)", async () => {
  const zones: string[] = [];
  for (const name of ["zone1", "zone2"]) {
    await switches.create({ name, type: "private", stateful: true });
    const a = await lab.vmNamespace(name, `${name}a`, "10.81.0.1/24", `52:54:00:81:0${name.slice(-1)}:01`);
    await lab.vmNamespace(name, `${name}b`, "10.81.0.2/24", `52:54:00:81:0${name.slice(-1)}:02`);
    assert.ok(await ping(a, "10.81.0.2"), `${name}: a reaches b`);
    zones.push(/ct zone set (\d+)/.exec(await must(host, ["nft", "list", "table", "ip", switches.get(name).table]))?.[1] ?? assert.fail("no zone"));
  }

  const table = await must(host, ["cat", "/proc/net/nf_conntrack"]);
  assert.notEqual(zones[0], zones[1]);
  for (const zone of zones) assert.match(table, new RegExp(`icmp .*src=10\\.81\\.0\\.1 dst=10\\.81\\.0\\.2 .*zone=${zone}`), `an entry in zone ${zone}:\n${table}`);
});
