import assert from "node:assert/strict";
import { test } from "node:test";
import { switchNames } from "./addresses.js";
import { buildFlows, parseSetElements, protocolNumber, type SetElement } from "./flows.js";
import type { Switch } from "./model.js";

const NOW = Date.parse("2026-11-23T03:00:00Z");

const sw: Switch = {
  name: "lab",
  ...switchNames("lab"),
  type: "private",
  dhcp: false,
  defaultDeny: false,
  stateful: false,
  flowLog: true,
  createdAt: "2026-01-01T00:00:00Z",
  ports: [
    { vmName: "web", nic: "net0", ifname: "palp00000001", kind: "tap", mac: "52:54:00:00:00:01", macGuard: true, dhcpGuard: true, routerGuard: true, createdAt: "" },
    { vmName: "db", nic: "net0", ifname: "palp00000002", kind: "tap", mac: "52:54:00:00:00:02", macGuard: true, dhcpGuard: true, routerGuard: true, createdAt: "" },
  ],
  acls: [{ id: 7, direction: "in", action: "deny", protocol: "tcp", portRange: { first: 5432, last: 5432 }, priority: 10, port: { vmName: "db", nic: "net0" } }],
  nextAclId: 8,
  mirrors: [],
};

// `nft -j list set` output as nftables 1.0.6 prints it.
const listing = {
  nftables: [
    { metainfo: { version: "1.0.6", json_schema_version: 1 } },
    {
      set: {
        family: "bridge",
        name: "denied_in_tcp",
        table: "palisade_x",
        type: ["ifname", "ipv4_addr", "ipv4_addr", "inet_service", "inet_service"],
        elem: [{ elem: { val: { concat: ["palp00000002", "10.9.0.1", "10.9.0.2", 40000, 5432] }, expires: 590, counter: { packets: 3, bytes: 180 } } }],
      },
    },
  ],
};

test("flows: parse nft set elements with counters and expiry", () => {
  assert.deepEqual(parseSetElements(listing), [{ key: ["palp00000002", "10.9.0.1", "10.9.0.2", 40000, 5432], expiresS: 590, packets: 3, bytes: 180 }]);
  assert.deepEqual(parseSetElements({ nftables: [{ set: { name: "empty" } }] }), []);
  assert.deepEqual(parseSetElements("garbage"), []);
});

test("flows: a denial names its port, stage, rule and times", () => {
  const contents = new Map<string, SetElement[]>([
    ["denied_in_tcp", parseSetElements(listing)],
    ["denied_in_tcp_first", [{ key: ["palp00000002", "10.9.0.1", "10.9.0.2", 40000, 5432], expiresS: 86400 - 60, packets: 0, bytes: 0 }]],
  ]);

  const [flow, ...rest] = buildFlows(sw, contents, NOW);

  assert.equal(rest.length, 0);
  assert.deepEqual(flow, {
    verdict: "denied",
    stage: "in",
    ifname: "palp00000002",
    port: "db:net0",
    protocol: "tcp",
    source: "10.9.0.1",
    destination: "10.9.0.2",
    sourcePort: 40000,
    destinationPort: 5432,
    packets: 3,
    bytes: 180,
    firstSeen: "2026-11-23T02:59:00.000Z",
    lastSeen: "2026-11-23T02:59:50.000Z",
    rule: "acl:7",
  });
});

test("flows: an allowed ICMP flow from a VM port is decided by the default", () => {
  const contents = new Map<string, SetElement[]>([["flows_other", [{ key: ["palp00000001", "10.9.0.1", "10.9.0.2", "icmp"], expiresS: 600, packets: 2, bytes: 168 }]]]);

  const flow = buildFlows(sw, contents, NOW)[0] ?? assert.fail("no flow");

  assert.equal(flow.protocol, "icmp");
  assert.equal(flow.port, "web:net0");
  assert.equal(flow.rule, "default");
  assert.equal(flow.sourcePort, undefined);
  assert.equal(flow.lastSeen, "2026-11-23T03:00:00.000Z");
});

test("flows: traffic from the host or an uplink has no port and no rule", () => {
  const contents = new Map<string, SetElement[]>([["flows_udp", [{ key: ["", "10.9.0.254", "10.9.0.2", 53, 53], expiresS: 600, packets: 1, bytes: 60 }]]]);

  const flow = buildFlows(sw, contents, NOW)[0] ?? assert.fail("no flow");

  assert.equal(flow.port, undefined);
  assert.equal(flow.rule, undefined);
});

test("flows: protocol names and numbers", () => {
  assert.equal(protocolNumber("icmp"), 1);
  assert.equal(protocolNumber(47), 47);
  assert.equal(protocolNumber("132"), 132);
  assert.equal(protocolNumber("martian"), -1);
});
