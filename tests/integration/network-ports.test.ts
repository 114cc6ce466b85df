/**
 * Switch ports as QEMU gets them: TAP file descriptors held by this process, raw Ethernet
 * frames written into one and read from another; port guards; mirroring to an appliance;
 * capture; and that deleting a switch, or repairing after a crash, leaves the host
 * namespace exactly as it was. Everything happens in network namespaces this test creates.
 */
import assert from "node:assert/strict";
import { readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import { closeFd, type AttachedPort, type VirtualSwitches } from "../../src/network/index.js";
import { must, NetworkLab, run } from "./network-harness.js";

let lab: NetworkLab;
let switches: VirtualSwitches;
let host = "";
let stateDir = "";
const openFds: number[] = [];

async function tap(switchName: string, vmName: string, mac: string): Promise<AttachedPort> {
  // Raw frames without the virtio-net header, non-blocking so the test can poll.
  const port = await switches.attachPort({ switchName, vmName, nic: "net0", mac, vnetHdr: false, nonBlocking: true });
  openFds.push(port.fd);
  return port;
}

function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(":").map((octet) => parseInt(octet, 16)));
}

/** An Ethernet frame with the local experimental ethertype 0x88b5 and a marker payload. */
function markerFrame(destination: string, source: string, marker: string): Buffer {
  return Buffer.concat([macBytes(destination), macBytes(source), Buffer.from([0x88, 0xb5]), Buffer.from(marker.padEnd(46, "."))]);
}

function ipChecksum(header: Buffer): number {
  let sum = 0;
  for (let offset = 0; offset < header.length; offset += 2) sum += header.readUInt16BE(offset);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** A broadcast IPv4/UDP frame, e.g. a DHCP server reply (67 -> 68). */
function udpFrame(source: string, sourcePort: number, destinationPort: number, marker: string): Buffer {
  const payload = Buffer.from(marker.padEnd(32, "."));
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(sourcePort, 0);
  udp.writeUInt16BE(destinationPort, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  const ip = Buffer.alloc(20);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(20 + 8 + payload.length, 2);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(17, 9);
  Buffer.from([10, 66, 0, 1]).copy(ip, 12);
  Buffer.from([255, 255, 255, 255]).copy(ip, 16);
  ip.writeUInt16BE(ipChecksum(ip), 10);
  return Buffer.concat([macBytes("ff:ff:ff:ff:ff:ff"), macBytes(source), Buffer.from([0x08, 0x00]), ip, udp, payload]);
}

/** Whether a frame containing `marker` arrives on a TAP fd within `timeoutMs`. */
async function receives(fd: number, marker: string, timeoutMs = 1500): Promise<boolean> {
  const buffer = Buffer.alloc(65536);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let length = 0;
    try {
      length = readSync(fd, buffer, 0, buffer.length, null);
    } catch (error: unknown) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
    }
    if (length > 0 && buffer.subarray(0, length).includes(marker)) return true;
    if (length === 0) await sleep(20);
  }
  return false;
}

/** What exists in the host namespace: interfaces, nft tables, qdiscs and tc filters, our processes (not live counters). */
async function hostSnapshot(): Promise<string> {
  const links = (JSON.parse(await must(host, ["ip", "-j", "link", "show"])) as { ifname: string }[]).map((link) => link.ifname).sort();
  const ruleset = await must(host, ["nft", "list", "tables"]);
  const filters = await Promise.all(
    links.map(async (link) => {
      const qdiscs = await must(host, ["tc", "qdisc", "show", "dev", link]);
      const ingress = await run(host, ["tc", "filter", "show", "dev", link, "ingress"]);
      const egress = await run(host, ["tc", "filter", "show", "dev", link, "egress"]);
      return `${link}: ${qdiscs} ${ingress.stdout} ${egress.stdout}`;
    }),
  );
  const processes = (await must(undefined, ["ps", "-eo", "args"])).split("\n").filter((line) => line.includes(stateDir)).sort();
  return JSON.stringify({ links, ruleset, filters, processes }, null, 1);
}

before(async () => {
  lab = await NetworkLab.open("pp");
  ({ switches, host, stateDir } = lab);
});

after(async () => {
  for (const fd of openFds) closeFd(fd);
  await lab.close();
});

test("TAP ports: a frame written into one VM's fd comes out of the other's; a spoofed source MAC is dropped", async () => {
  await switches.create({ name: "taps", type: "private" });
  const a = await tap("taps", "ta", "52:54:00:71:00:01");
  const b = await tap("taps", "tb", "52:54:00:71:00:02");
  const links = JSON.parse(await must(host, ["ip", "-j", "link", "show", "dev", a.ifname])) as { master?: string }[];
  assert.equal(links[0]?.master, switches.get("taps").bridge, "the TAP is a port of the switch's bridge");

  writeSync(a.fd, markerFrame("ff:ff:ff:ff:ff:ff", a.mac, "genuine-frame"));
  assert.ok(await receives(b.fd, "genuine-frame"), "a's frame reaches b");

  writeSync(a.fd, markerFrame("ff:ff:ff:ff:ff:ff", "52:54:00:99:99:99", "spoofed-frame"));
  assert.ok(!(await receives(b.fd, "spoofed-frame")), "a frame with someone else's source MAC is dropped");
  assert.ok((await switches.counters("taps")).guards.get("ta:net0")?.mac === 1, "and counted by the port's guard");
});

/** The structure of a switch's table (no counter values, no flow entries), in a canonical order. */
async function tableShape(table: string): Promise<string> {
  const text = await must(host, ["nft", "-t", "list", "table", "bridge", table]);
  return text
    .replace(/^table bridge \S+ \{\n|\n\}\n$/g, "") // the table's own braces
    .replace(/\n\s*packets \d+ bytes \d+/g, "")
    .replace(/elements = \{([^}]*)\}/g, (_, elements: string) => `elements = { ${elements.split(",").map((element) => element.trim()).sort().join(", ")} }`)
    .split("\n\n") // one block per object, in creation order: sort them
    .map((block) => block.trim())
    .sort()
    .join("\n\n");
}

test("attaching ports incrementally gives the same ruleset as a full apply", async () => {
  await switches.create({ name: "incr", type: "private" });
  await switches.addAcl("incr", { direction: "in", action: "deny", protocol: "udp", portRange: { first: 9, last: 9 }, priority: 5 });
  // ib and id have rules of their own: their attach brings their own chains and maps.
  await switches.addAcl("incr", { port: { vmName: "ib", nic: "net0" }, direction: "out", action: "deny", protocol: "tcp", priority: 7 });
  await switches.addAcl("incr", { port: { vmName: "id", nic: "net0" }, direction: "in", action: "allow", protocol: "any", remote: { address: 0x0a000000, prefixLength: 8 }, priority: 9 });
  await tap("incr", "ia", "52:54:00:75:00:01");
  await tap("incr", "ib", "52:54:00:75:00:02");
  await switches.detachPort({ switchName: "incr", vmName: "ia", nic: "net0" });
  await tap("incr", "ic", "52:54:00:75:00:03");
  await tap("incr", "id", "52:54:00:75:00:04");
  await switches.detachPort({ switchName: "incr", vmName: "id", nic: "net0" });
  await tap("incr", "id", "52:54:00:75:00:04");
  const table = switches.get("incr").table;
  const incremental = await tableShape(table);

  await switches.repair(); // a full apply of every switch

  assert.equal(await tableShape(table), incremental);
});

test("DHCP guard: a VM's DHCP server reply is dropped, its DHCP request is not", async () => {
  await switches.create({ name: "guard", type: "private" });
  const a = await tap("guard", "ga", "52:54:00:72:00:01");
  const b = await tap("guard", "gb", "52:54:00:72:00:02");

  writeSync(a.fd, udpFrame(a.mac, 68, 67, "dhcp-request"));
  assert.ok(await receives(b.fd, "dhcp-request"), "client traffic passes");
  writeSync(a.fd, udpFrame(a.mac, 67, 68, "rogue-offer"));
  assert.ok(!(await receives(b.fd, "rogue-offer")), "a rogue DHCP server reply is dropped");
  assert.equal((await switches.counters("guard")).guards.get("ga:net0")?.dhcp, 1);
});

test("detaching a TAP port removes its interface; closing the last fd removes the TAP", async () => {
  await switches.create({ name: "life", type: "private" });
  const a = await switches.attachPort({ switchName: "life", vmName: "la", nic: "net0" });
  await switches.detachPort({ switchName: "life", vmName: "la", nic: "net0" });
  closeFd(a.fd);
  assert.ok(!(await run(host, ["ip", "link", "show", "dev", a.ifname])).ok, "detached TAP is gone");

  const b = await switches.attachPort({ switchName: "life", vmName: "lb", nic: "net0" });
  closeFd(b.fd); // as if the worker holding it died
  assert.ok(!(await run(host, ["ip", "link", "show", "dev", b.ifname])).ok, "a TAP whose holder is gone disappears");
  const report = await switches.repair();
  assert.deepEqual(report.stalePorts, ["life/lb:net0"], "repair drops the record of the dead port");
  await assert.rejects(switches.detachPort({ switchName: "life", vmName: "lb", nic: "net0" }), /has no port/);

  const nics = [await switches.attachPort({ switchName: "life", vmName: "lc", nic: "net0" }), await switches.attachPort({ switchName: "life", vmName: "lc", nic: "net1" })];
  assert.deepEqual(await switches.detachVm("lc"), ["life/lc:net0", "life/lc:net1"], "a VM's teardown removes all its ports");
  for (const nic of nics) closeFd(nic.fd);
});

test("mirroring: an appliance port sees the ICMP between two other VMs; a capture file opens with tcpdump -r", async () => {
  await switches.create({ name: "mir", type: "private" });
  const a = await lab.vmNamespace("mir", "ma", "10.73.0.1/24", "52:54:00:73:00:01");
  await lab.vmNamespace("mir", "mb", "10.73.0.2/24", "52:54:00:73:00:02");
  const appliance = await lab.vmNamespace("mir", "mc", "10.73.0.3/24", "52:54:00:73:00:03");
  await switches.addMirror("mir", { from: { vmName: "ma", nic: "net0" }, to: { port: { vmName: "mc", nic: "net0" } } });
  // A host interface as a second target: a veth pair whose far end a monitor reads.
  await must(host, ["ip", "link", "add", "mon0", "type", "veth", "peer", "name", "mon0p"]);
  await must(host, ["ip", "link", "set", "mon0", "up"]);
  await must(host, ["ip", "link", "set", "mon0p", "up"]);
  await switches.addMirror("mir", { from: { vmName: "ma", nic: "net0" }, to: { ifname: "mon0" } });
  await assert.rejects(switches.addMirror("mir", { from: { vmName: "ma", nic: "net0" }, to: { ifname: "nosuch0" } }), /Mirror target interface "nosuch0" does not exist/);

  const sniffer = run(appliance, ["timeout", "8", "tcpdump", "-l", "-n", "-i", "eth0", "-c", "2", "icmp and host 10.73.0.1 and host 10.73.0.2"], 10_000);
  const monitor = run(host, ["timeout", "8", "tcpdump", "-l", "-n", "-i", "mon0p", "-c", "2", "icmp and host 10.73.0.1 and host 10.73.0.2"], 10_000);
  const pcap = join(stateDir, "mir.pcap");
  let captureReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (captureReady = resolve));
  const capture = switches.capture("mir", { port: { vmName: "mb", nic: "net0" }, out: pcap, filter: "icmp", count: 2, durationMs: 8000, onReady: captureReady });
  await ready;
  await sleep(500); // tcpdump in the appliance attaches too
  await must(a, ["busybox", "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.73.0.2"]);

  const seen = await sniffer;
  assert.match(seen.stdout, /10\.73\.0\.1 > 10\.73\.0\.2: ICMP echo request/);
  assert.match((await monitor).stdout, /10\.73\.0\.1 > 10\.73\.0\.2: ICMP echo request/, "the host interface gets the copies too");
  await capture;
  const read = await must(undefined, ["tcpdump", "-n", "-r", pcap]);
  assert.match(read, /ICMP echo (request|reply)/);
});

test("deleting a switch leaves no bridge, TAP, veth, nft table, tc filter or dnsmasq behind", async () => {
  const before = await hostSnapshot();
  await switches.create({ name: "gone", type: "internal", subnet: { address: 0x0a4a0000, prefixLength: 24 }, dhcp: true });
  await tap("gone", "xa", "52:54:00:74:00:01");
  await lab.vmNamespace("gone", "xb", "10.74.0.2/24", "52:54:00:74:00:02");
  await switches.addAcl("gone", { direction: "in", action: "deny", protocol: "udp", portRange: { first: 53, last: 53 }, priority: 5 });
  await switches.addMirror("gone", { from: { vmName: "xa", nic: "net0" }, to: { port: { vmName: "xb", nic: "net0" } } });
  assert.notEqual(await hostSnapshot(), before);

  await switches.delete("gone");

  assert.equal(await hostSnapshot(), before);
  assert.equal(switches.list().some((sw) => sw.name === "gone"), false);
});

test("repair: re-creates what a crash or a reboot lost and removes strays", async () => {
  await switches.create({ name: "rep", type: "internal", subnet: { address: 0x0a4b0000, prefixLength: 24 }, dhcp: true });
  const sw = switches.get("rep");
  await must(host, ["nft", "delete", "table", "bridge", sw.table]);
  await assert.rejects(switches.flows("rep"), /table of switch "rep" is missing; run "palisade switch repair"/);
  await must(host, ["ip", "link", "add", "palbdeadbeef", "type", "bridge"]);
  await must(host, ["nft", "add", "table", "bridge", "palisade_deadbeef"]);
  await must(host, ["nft", "add", "table", "bridge", "someone_else"]);
  const pid = Number((await must(undefined, ["cat", join(stateDir, `dnsmasq-${sw.id}.pid`)])).trim());
  process.kill(pid, "SIGKILL");
  await sleep(100);

  const report = await switches.repair();

  assert.deepEqual(report.removedInterfaces, ["palbdeadbeef"]);
  assert.deepEqual(report.removedTables, ["palisade_deadbeef"]);
  assert.deepEqual(report.restartedDhcp, ["rep"]);
  assert.ok((await run(host, ["nft", "list", "table", "bridge", sw.table])).ok, "the switch's table is back");
  assert.ok((await run(host, ["nft", "list", "table", "bridge", "someone_else"])).ok, "tables Palisade does not own are left alone");
  const again = await switches.repair();
  assert.deepEqual([again.removedInterfaces, again.removedTables, again.restartedDhcp, again.failed], [[], [], [], []], "repair is idempotent");
});

test("after a host restart (bridge and table gone), attaching a port re-applies the switch", async () => {
  await switches.create({ name: "reboot", type: "private" });
  const sw = switches.get("reboot");
  await must(host, ["ip", "link", "del", sw.bridge]);
  await must(host, ["nft", "delete", "table", "bridge", sw.table]);

  const a = await tap("reboot", "ra", "52:54:00:76:00:01");
  const b = await tap("reboot", "rb", "52:54:00:76:00:02");

  writeSync(a.fd, markerFrame("ff:ff:ff:ff:ff:ff", "52:54:00:99:99:98", "spoofed-after-restart"));
  assert.ok(!(await receives(b.fd, "spoofed-after-restart")), "the guards are back");
  writeSync(a.fd, markerFrame("ff:ff:ff:ff:ff:ff", a.mac, "frame-after-restart"));
  assert.ok(await receives(b.fd, "frame-after-restart"), "and the bridge forwards");
});

test("repair: a switch that cannot be re-applied is reported and does not stop the others", async () => {
  await must(host, ["ip", "link", "add", "upr0", "type", "veth", "peer", "name", "upr0p"]);
  await switches.create({ name: "unplugged", type: "external", uplink: "upr0" });
  await must(host, ["ip", "link", "del", "upr0"]);

  const report = await switches.repair();

  assert.equal(report.failed.length, 1);
  assert.match(report.failed[0] ?? "", /^unplugged: /);
  assert.ok(report.reapplied.length >= 1, "the other switches were re-applied");
  const bridge = switches.get("unplugged").bridge;
  await switches.delete("unplugged");
  assert.ok(!(await run(host, ["ip", "link", "show", "dev", bridge])).ok, "deleting it still removes its bridge");
});
