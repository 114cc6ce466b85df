import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ConfigError } from "../util/errors.js";
import { canonicalKeyOfJson, checkAclRule, compileStage, evaluateStage, mapDeclaration, mapRule, ruleMatches, stageRules, type AclPacket } from "./acl.js";
import { parseCidr, parseIpv4 } from "./addresses.js";
import type { AclRule } from "./model.js";

const web = { vmName: "web", nic: "net0" };
const db = { vmName: "db", nic: "net0" };

function rule(fields: Partial<AclRule> & Pick<AclRule, "id">): AclRule {
  return { direction: "in", action: "deny", protocol: "any", priority: 1000, ...fields };
}

const ssh: AclPacket = { protocol: 6, remote: parseIpv4("10.0.0.9", "x"), destinationPort: 22 };

test("acl: a port range needs tcp or udp", () => {
  assert.throws(
    () => checkAclRule({ direction: "in", action: "deny", protocol: "icmp", portRange: { first: 1, last: 2 }, priority: 1 }),
    (error: unknown) => error instanceof ConfigError && error.code === "network.bad-acl",
  );
});

test("acl: a deny blocks exactly what it names", () => {
  const deny = rule({ id: 1, protocol: "tcp", portRange: { first: 22, last: 22 }, remote: parseCidr("10.0.0.0/24", "x") });

  assert.ok(ruleMatches(deny, ssh));
  assert.ok(!ruleMatches(deny, { ...ssh, destinationPort: 80 }));
  assert.ok(!ruleMatches(deny, { ...ssh, protocol: 17 }));
  assert.ok(!ruleMatches(deny, { ...ssh, remote: parseIpv4("10.0.1.9", "x") }));
});

test("acl: a higher-priority allow re-opens a deny", () => {
  const rules = [rule({ id: 1, protocol: "tcp", priority: 100 }), rule({ id: 2, action: "allow", protocol: "tcp", portRange: { first: 22, last: 22 }, priority: 200 })];

  const ordered = stageRules(rules, "in", web);

  assert.deepEqual(evaluateStage(ordered, ssh, false), { action: "allow", ruleId: 2 });
  assert.deepEqual(evaluateStage(ordered, { ...ssh, destinationPort: 80 }, false), { action: "deny", ruleId: 1 });
});

test("acl: at equal priority, port rules come before switch-wide ones and deny before allow", () => {
  const rules = [
    rule({ id: 1, action: "allow" }),
    rule({ id: 2, action: "deny" }),
    rule({ id: 3, action: "allow", port: web }),
    rule({ id: 4, action: "deny", port: db }),
    rule({ id: 5, action: "deny", direction: "out" }),
  ];

  assert.deepEqual(stageRules(rules, "in", web).map((r) => r.id), [3, 2, 1]);
  assert.deepEqual(stageRules(rules, "in", db).map((r) => r.id), [4, 2, 1]);
  assert.deepEqual(stageRules(rules, "in", undefined).map((r) => r.id), [2, 1]);
});

test("acl: no match gives the switch default", () => {
  assert.deepEqual(evaluateStage([], ssh, false), { action: "allow", ruleId: undefined });
  assert.deepEqual(evaluateStage([], ssh, true), { action: "deny", ruleId: undefined });
});

test("acl: rules compile to one map per run and shape, in evaluation order", () => {
  const ordered = stageRules(
    [
      rule({ id: 1, protocol: "tcp", portRange: { first: 22, last: 22 }, priority: 300 }),
      rule({ id: 2, protocol: "icmp", priority: 300 }),
      rule({ id: 3, action: "allow", remote: parseCidr("10.0.0.0/8", "x"), priority: 200 }),
      rule({ id: 4, protocol: "udp", portRange: { first: 53, last: 53 }, priority: 100 }),
    ],
    "in",
    web,
  );

  const maps = compileStage(ordered, "m");

  assert.deepEqual(
    maps.map((map) => [map.name, map.shape, map.action, map.ruleIds]),
    [
      ["m_0", "addr-proto-port", "deny", [1]],
      ["m_1", "addr-proto", "deny", [2]],
      ["m_2", "addr", "allow", [3]],
      ["m_3", "addr-proto-port", "deny", [4]],
    ],
  );
  assert.equal(mapDeclaration(maps[0] ?? assert.fail(), "deny_in"), "map m_0 { type ipv4_addr . inet_proto . inet_service : verdict; flags interval; counter; elements = { 0.0.0.0/0 . 6 . 22 : goto deny_in } }");
  assert.equal(mapDeclaration(maps[2] ?? assert.fail(), "deny_in"), "map m_2 { type ipv4_addr . inet_proto : verdict; flags interval; counter; elements = { 10.0.0.0/8 . 0-255 : return } }");
  assert.equal(mapRule(maps[0] ?? assert.fail(), "in"), "ip saddr . meta l4proto . th dport vmap @m_0");
  assert.equal(mapRule(maps[2] ?? assert.fail(), "out"), "ip daddr . meta l4proto vmap @m_2");
});

test("acl: a re-apply carries a rule's count into its map element", () => {
  const maps = compileStage([rule({ id: 7, protocol: "udp", portRange: { first: 53, last: 53 } })], "m");

  const text = mapDeclaration(maps[0] ?? assert.fail(), "deny_out", new Map([[7, { packets: 3, bytes: 180 }]]));

  assert.match(text, /elements = \{ 0\.0\.0\.0\/0 \. 17 \. 53 counter packets 3 bytes 180 : goto deny_out \}/);
});

test("acl: an element listed by nft -j has the same canonical key as the compiled one", () => {
  const maps = compileStage(
    [rule({ id: 1, protocol: "udp", remote: parseCidr("10.1.0.1/32", "x"), portRange: { first: 53, last: 53 } }), rule({ id: 2, protocol: "any", remote: parseCidr("10.0.0.0/24", "x"), priority: 1 })],
    "m",
  );

  assert.equal(canonicalKeyOfJson({ concat: ["10.1.0.1", "udp", 53] }), maps[0]?.keys[0]);
  assert.equal(canonicalKeyOfJson({ concat: [{ prefix: { addr: "10.0.0.0", len: 24 } }, { range: [0, 255] }] }), maps[1]?.keys[0]);
  assert.equal(canonicalKeyOfJson({ concat: [{ prefix: { addr: "10.0.0.0", len: 24 } }, "tcp", { range: [80, 90] }] }), "10.0.0.0/24|6|80-90");
  assert.equal(canonicalKeyOfJson("10.0.0.1"), undefined);
});

test("acl: overlapping elements of one run go to separate maps (nftables refuses overlaps)", () => {
  const ordered = stageRules(
    [rule({ id: 1, remote: parseCidr("10.0.0.0/8", "x") }), rule({ id: 2, remote: parseCidr("10.1.0.0/16", "x") }), rule({ id: 3, remote: parseCidr("192.168.0.0/16", "x") })],
    "in",
    web,
  );

  const maps = compileStage(ordered, "m");

  assert.deepEqual(maps.map((map) => map.ruleIds), [[1, 3], [2]]);
});

test("acl: 10,000 rules of one action compile into a single map", () => {
  // Distinct /32 hosts, as a block list would be: one run, one shape, no overlap.
  const rules = Array.from({ length: 10_000 }, (_, index) =>
    rule({ id: index + 1, protocol: "tcp", portRange: { first: 443, last: 443 }, remote: { address: 0x0a000000 + index, prefixLength: 32 } }),
  );

  const maps = compileStage(stageRules(rules, "in", web), "m");

  assert.equal(maps.length, 1);
  assert.equal(maps[0]?.elements.length, 10_000);
});

// Property: the compiled maps, evaluated the way the kernel does (first map in order that
// has a matching element decides), agree with evaluateStage on every packet.
const cidrArbitrary = fc.record({ octet: fc.integer({ min: 0, max: 3 }), prefixLength: fc.constantFrom(8, 16, 24, 32) }).map(({ octet, prefixLength }) => {
  const address = 0x0a000000 + octet * 0x10101;
  const mask = (0xffffffff << (32 - prefixLength)) >>> 0;
  return { address: (address & mask) >>> 0, prefixLength };
});
const ruleArbitrary = fc
  .record({
    action: fc.constantFrom("allow", "deny"),
    protocol: fc.constantFrom("tcp", "udp", "icmp", "any"),
    remote: fc.option(cidrArbitrary, { nil: undefined }),
    ports: fc.option(fc.tuple(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 10 })), { nil: undefined }),
    priority: fc.integer({ min: 1, max: 4 }),
    forWeb: fc.boolean(),
  })
  .map(({ action, protocol, remote, ports, priority, forWeb }) => ({
    direction: "in" as const,
    action,
    protocol,
    priority,
    ...(remote === undefined ? {} : { remote }),
    ...(ports === undefined || (protocol !== "tcp" && protocol !== "udp") ? {} : { portRange: { first: ports[0], last: ports[0] + ports[1] } }),
    ...(forWeb ? { port: web } : {}),
  }));
const packetArbitrary = fc.record({
  protocol: fc.constantFrom(1, 6, 17, 47),
  remote: fc.integer({ min: 0, max: 3 }).map((octet) => 0x0a000000 + octet * 0x10101),
  destinationPort: fc.integer({ min: 1, max: 45 }),
});

test("acl: compiled maps decide like the rule list (property)", () => {
  fc.assert(
    fc.property(fc.array(ruleArbitrary, { maxLength: 25 }), fc.array(packetArbitrary, { minLength: 1, maxLength: 10 }), fc.boolean(), (inputs, packets, defaultDeny) => {
      const rules = inputs.map((input, index) => ({ ...input, id: index + 1 }));
      const ordered = stageRules(rules, "in", web);
      const maps = compileStage(ordered, "m");
      const byId = new Map(rules.map((r) => [r.id, r]));
      for (const packet of packets) {
        const l4 = packet.protocol === 6 || packet.protocol === 17 ? packet : { protocol: packet.protocol, remote: packet.remote };
        const hit = maps.find((map) => map.ruleIds.some((id) => ruleMatches(byId.get(id) ?? assert.fail(), l4)));
        const kernel = hit === undefined ? (defaultDeny ? "deny" : "allow") : hit.action;
        assert.equal(kernel, evaluateStage(ordered, l4, defaultDeny).action);
      }
    }),
    { numRuns: 300 },
  );
});
