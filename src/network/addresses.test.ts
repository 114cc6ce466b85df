import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import {
  cidrContains,
  cidrsOverlap,
  checkName,
  formatCidr,
  formatIpv4,
  parseCidr,
  parseIpv4,
  parseMac,
  parsePortRange,
  parsePortRef,
  parseVlan,
  checkVlan,
  portIfname,
  randomMac,
  subnetPlan,
  switchNames,
} from "./addresses.js";

function refusedWith(code: string, pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  };
}

test("addresses: IPv4 and CIDR round trips", () => {
  assert.equal(parseIpv4("10.0.0.1", "x"), 0x0a000001);
  assert.equal(formatIpv4(0xc0a80101), "192.168.1.1");
  assert.deepEqual(parseCidr("10.1.2.0/24", "--subnet"), { address: 0x0a010200, prefixLength: 24 });
  assert.deepEqual(parseCidr("10.1.2.3", "--remote"), { address: 0x0a010203, prefixLength: 32 });
  assert.equal(formatCidr(parseCidr("0.0.0.0/0", "--remote")), "0.0.0.0/0");
});

test("addresses: invalid CIDRs are refused with the flag and a hint", () => {
  assert.throws(() => parseCidr("10.0.0.5/24", "--subnet"), refusedWith("network.bad-cidr", /^--subnet: "10.0.0.5\/24" has host bits set \(did you mean 10.0.0.0\/24\?\)/));
  assert.throws(() => parseCidr("10.0.0.0/33", "--subnet"), refusedWith("network.bad-cidr", /above 32/));
  assert.throws(() => parseCidr("256.0.0.0/8", "--remote"), refusedWith("network.bad-cidr", /not an IPv4 CIDR/));
  assert.throws(() => parseCidr("10.0.0/8", "--remote"), ConfigError);
  assert.throws(() => parseCidr("fe80::/64", "--remote"), ConfigError);
  assert.throws(() => parseCidr("010.0.0.0/8", "--remote"), ConfigError);
});

test("addresses: containment and overlap of CIDRs", () => {
  const net = parseCidr("10.1.0.0/16", "x");
  assert.ok(cidrContains(net, parseIpv4("10.1.255.3", "x")));
  assert.ok(!cidrContains(net, parseIpv4("10.2.0.1", "x")));
  assert.ok(cidrsOverlap(net, parseCidr("10.1.2.0/24", "x")));
  assert.ok(cidrsOverlap(parseCidr("0.0.0.0/0", "x"), net));
  assert.ok(!cidrsOverlap(net, parseCidr("10.2.0.0/16", "x")));
});

test("addresses: a subnet gives the host its first address and DHCP the rest", () => {
  const plan = subnetPlan(parseCidr("10.20.0.0/24", "--subnet"));

  assert.equal(formatIpv4(plan.hostAddress), "10.20.0.1");
  assert.equal(formatIpv4(plan.poolFirst), "10.20.0.2");
  assert.equal(formatIpv4(plan.poolLast), "10.20.0.254");
  assert.throws(() => subnetPlan(parseCidr("10.20.0.0/30", "--subnet")), refusedWith("network.bad-cidr", /too small/));
});

test("addresses: port ranges", () => {
  assert.deepEqual(parsePortRange("22"), { first: 22, last: 22 });
  assert.deepEqual(parsePortRange("8000-8080"), { first: 8000, last: 8080 });
  for (const bad of ["0", "65536", "90-80", "a-b", "1-2-3", "", "-5"]) {
    assert.throws(() => parsePortRange(bad), refusedWith("network.bad-port-range", /^--port-range: /), bad);
  }
});

test("addresses: MACs must be unicast", () => {
  assert.equal(parseMac("52:54:00:AB:cd:01"), "52:54:00:ab:cd:01");
  assert.throws(() => parseMac("01:00:5e:00:00:01"), refusedWith("network.bad-mac", /not a unicast/));
  assert.throws(() => parseMac("00:00:00:00:00:00"), ConfigError);
  assert.throws(() => parseMac("52-54-00-ab-cd-01"), refusedWith("network.bad-mac", /not a MAC address/));
  assert.match(randomMac(() => new Uint8Array([1, 2, 255])), /^52:54:00:01:02:ff$/);
});

test("addresses: names and VM:NIC references", () => {
  assert.deepEqual(parsePortRef("web-1:net0"), { vmName: "web-1", nic: "net0" });
  assert.throws(() => parsePortRef("web-1"), refusedWith("network.bad-port", /not a VM port/));
  assert.throws(() => parsePortRef(":0"), ConfigError);
  assert.throws(() => checkName("bad name", "Switch name"), refusedWith("network.bad-name", /^Switch name "bad name" is not valid/));
  assert.throws(() => checkName("x".repeat(64), "Switch name"), ConfigError);
});

test("addresses: kernel names fit IFNAMSIZ and are stable", () => {
  const names = switchNames("a-rather-long-switch-name-that-goes-on");
  const port = portIfname("lab", { vmName: "web-1", nic: "net0" });

  assert.match(names.bridge, /^palb[0-9a-f]{8}$/);
  assert.match(names.table, /^palisade_[0-9a-f]{8}$/);
  assert.match(port, /^palp[0-9a-f]{8}$/);
  assert.ok(names.bridge.length <= 15 && port.length <= 15);
  assert.equal(portIfname("lab", { vmName: "web-1", nic: "net0" }), port);
  assert.notEqual(portIfname("lab", { vmName: "web-1", nic: "net1" }), port);
});

test("addresses: VLAN ids are 1-4094, decimal, and errors name the field", () => {
  assert.equal(parseVlan("1", "--vlan"), 1);
  assert.equal(parseVlan("4094", "--vlan"), 4094);
  assert.equal(checkVlan(10, "vlan"), 10);
  for (const bad of ["0", "4095", "x", "", "-1", "1.5", "10000", " 10"]) {
    assert.throws(() => parseVlan(bad, "--vlan"), refusedWith("network.bad-vlan", /^--vlan: .* is not a VLAN id \(1-4094\)$/), bad);
  }
  for (const bad of [0, 4095, Number.NaN, 1.5, -3]) assert.throws(() => checkVlan(bad, "vlan"), refusedWith("network.bad-vlan", /^vlan: /), String(bad));
});
