import assert from "node:assert/strict";
import { test } from "node:test";
import { switchNames } from "./addresses.js";
import type { Port, Switch } from "./model.js";
import { conntrackScript, conntrackZone, nftScript, nftTable, parseTableObjects, portAddScript, portRemoveScript, ruleCounts, totalRuleCounts, VLAN_MARK_MASK } from "./ruleset.js";

function port(vmName: string, ifname: string, mac: string): Port {
  return { vmName, nic: "net0", ifname, kind: "tap", mac, macGuard: true, dhcpGuard: true, routerGuard: true, createdAt: "2026-01-01T00:00:00Z" };
}

function lab(fields: Partial<Switch> = {}): Switch {
  return {
    name: "lab",
    ...switchNames("lab"),
    type: "private",
    dhcp: false,
    defaultDeny: false,
    stateful: false,
    flowLog: true,
    createdAt: "2026-01-01T00:00:00Z",
    ports: [port("web", "palp00000001", "52:54:00:00:00:01"), port("db", "palp00000002", "52:54:00:00:00:02")],
    acls: [],
    nextAclId: 1,
    mirrors: [],
    ...fields,
  };
}

test("ruleset: each port gets a MAC spoofing, DHCP server and RA guard", () => {
  const text = nftTable(lab());

  assert.match(text, /chain guard_palp00000001 \{\n {4}ether saddr != 52:54:00:00:00:01 counter name "guard_palp00000001_mac" drop\n/);
  assert.match(text, /udp sport 67 udp dport 68 counter name "guard_palp00000001_dhcp" drop/);
  assert.match(text, /icmpv6 type nd-router-advert counter name "guard_palp00000001_ra" drop/);
  assert.match(text, /map port_guards \{ type ifname : verdict; elements = \{ "palp00000001" : jump guard_palp00000001, "palp00000002" : jump guard_palp00000002 \} \}/);
  assert.match(text, /chain prerouting \{\n {4}type filter hook prerouting priority -200; policy accept;\n {4}meta mark set iifname map @port_vlan\n {4}iifname vmap @port_guards\n/);
});

test("ruleset: a guard switched off is not generated", () => {
  const text = nftTable(lab({ ports: [{ ...port("web", "palp00000001", "52:54:00:00:00:01"), macGuard: false }] }));

  assert.doesNotMatch(text, /ether saddr !=/);
  assert.match(text, /udp sport 67/);
});

test("ruleset: without rules or default deny no ACL stage is dispatched", () => {
  const text = nftTable(lab());

  assert.match(text, /map port_out \{ type ifname : verdict; \}/);
  assert.match(text, /map port_in \{ type ifname : verdict; \}/);
  assert.doesNotMatch(text, /chain (in|out)_/);
  assert.match(text, /chain forward \{\n {4}type filter hook forward priority 0; policy accept;\n {4}iifname != @members return\n {4}oifname \. meta mark & 0x00000fff != @vlan_members drop\n {4}iifname vmap @port_out\n {4}oifname vmap @port_in\n {4}jump flowlog\n/);
  assert.match(text, /set members \{ type ifname; elements = \{ "palp00000001", "palp00000002" \} \}/);
});

test("ruleset: ports without rules of their own share the switch-wide stage", () => {
  const text = nftTable(lab({ acls: [{ id: 1, direction: "in", action: "deny", protocol: "tcp", priority: 10 }, { id: 2, direction: "in", action: "deny", protocol: "udp", priority: 10, port: { vmName: "db", nic: "net0" } }], nextAclId: 3 }));

  assert.match(text, /map port_in \{ type ifname : verdict; elements = \{ "palp00000001" : jump in_all, "palp00000002" : jump in_palp00000002 \} \}/);
  assert.doesNotMatch(text, /counter acl_/, "no named object per rule: element counters");
  assert.match(text, /chain in_palp00000002 \{\n {4}ip saddr \. meta l4proto vmap @m_in_palp00000002_0\n/);
});

test("ruleset: default deny lets ARP and neighbour discovery through, counts and logs the rest", () => {
  const text = nftTable(lab({ defaultDeny: true }));

  assert.match(text, /chain out_all \{\n {4}ether type arp return\n {4}icmpv6 type \{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit \} return\n {4}counter name "default_deny" goto deny_out\n/);
  assert.match(text, /meta l4proto tcp update @denied_out_tcp \{ iifname \. ip saddr \. ip daddr \. tcp sport \. tcp dport \}/);
});

test("ruleset: re-applying keeps flow sets and live counters, drops obsolete objects", () => {
  const sw = lab({ acls: [{ id: 2, direction: "in", action: "deny", protocol: "tcp", priority: 10 }], nextAclId: 3 });
  const existing = parseTableObjects({
    nftables: [
      { metainfo: {} },
      { counter: { name: "acl_1" } },
      { counter: { name: "acl_2" } },
      { map: { name: "m_in_all_0" } },
      { chain: { name: "in_all" } },
      { chain: { name: "forward" } },
      { set: { name: "flows_tcp" } },
    ],
  });

  const script = nftScript(sw, existing);

  // acl_N: named counters of an older Palisade, removed on the next apply.
  assert.ok(script.startsWith(`flush table bridge ${sw.table}\ndelete map bridge ${sw.table} m_in_all_0\ndelete chain bridge ${sw.table} in_all\ndelete counter bridge ${sw.table} acl_1\ndelete counter bridge ${sw.table} acl_2\ntable bridge ${sw.table} {\n`));
  assert.doesNotMatch(script, /flush set/);
  assert.match(nftScript(sw, existing, { resetFlows: true }), /flush set bridge \S+ flows_tcp\n/);
  assert.equal(nftScript(sw, undefined), nftTable(sw));
});

test("ruleset: attaching a port without rules of its own is a few element insertions", () => {
  const sw = lab({ ports: [], acls: [{ id: 1, direction: "in", action: "deny", protocol: "tcp", priority: 10 }], nextAclId: 2 });
  const web = port("web", "palp00000001", "52:54:00:00:00:01");

  const script = portAddScript(sw, web);

  assert.equal(
    script,
    [
      `add counter bridge ${sw.table} guard_palp00000001_mac`,
      `add counter bridge ${sw.table} guard_palp00000001_dhcp`,
      `add counter bridge ${sw.table} guard_palp00000001_ra`,
      `add chain bridge ${sw.table} guard_palp00000001`,
      `flush chain bridge ${sw.table} guard_palp00000001`,
      `add rule bridge ${sw.table} guard_palp00000001 ether saddr != 52:54:00:00:00:01 counter name "guard_palp00000001_mac" drop`,
      `add rule bridge ${sw.table} guard_palp00000001 udp sport 67 udp dport 68 counter name "guard_palp00000001_dhcp" drop`,
      `add rule bridge ${sw.table} guard_palp00000001 udp sport 547 udp dport 546 counter name "guard_palp00000001_dhcp" drop`,
      `add rule bridge ${sw.table} guard_palp00000001 icmpv6 type nd-router-advert counter name "guard_palp00000001_ra" drop`,
      `add element bridge ${sw.table} members { "palp00000001" }`,
      `add element bridge ${sw.table} port_vlan { "palp00000001" : 0 }`,
      `add element bridge ${sw.table} vlan_members { "palp00000001" . 0 }`,
      `add element bridge ${sw.table} port_guards { "palp00000001" : jump guard_palp00000001 }`,
      `add element bridge ${sw.table} port_in { "palp00000001" : jump in_all }`,
      "",
    ].join("\n"),
  );
  assert.match(portRemoveScript(sw, web), /^delete element bridge \S+ port_guards \{ "palp00000001" \}\n/);
});

test("ruleset: a port with rules of its own brings only its own chains and maps", () => {
  const sw = lab({
    ports: [],
    acls: [
      { id: 1, direction: "out", action: "deny", protocol: "udp", priority: 10, port: { vmName: "web", nic: "net0" } },
      { id: 2, direction: "in", action: "deny", protocol: "tcp", priority: 10, port: { vmName: "db", nic: "net0" } },
    ],
    nextAclId: 3,
  });
  const web = port("web", "palp00000001", "52:54:00:00:00:01");

  const script = portAddScript(sw, web);

  assert.match(script, /add map bridge \S+ m_out_palp00000001_0 \{ type ipv4_addr \. inet_proto : verdict; flags interval; counter; \}\n/);
  assert.match(script, /add element bridge \S+ m_out_palp00000001_0 \{ 0\.0\.0\.0\/0 \. 17 : goto deny_out \}\n/);
  assert.match(script, /add rule bridge \S+ out_palp00000001 ip daddr \. meta l4proto vmap @m_out_palp00000001_0\n/);
  assert.match(script, /add element bridge \S+ port_out \{ "palp00000001" : jump out_palp00000001 \}\n/);
  assert.doesNotMatch(script, /in_palp00000002|port_in/, "another port's rules are not touched");
  assert.match(portRemoveScript(sw, web), /delete chain bridge \S+ out_palp00000001\ndelete map bridge \S+ m_out_palp00000001_0\n/);
});

test("ruleset: per-rule counts are read back from map elements by key", () => {
  const sw = lab({ acls: [{ id: 4, direction: "in", action: "deny", protocol: "tcp", priority: 10, portRange: { first: 5001, last: 5001 } }], nextAclId: 5 });
  const listing = {
    nftables: [{ map: { name: "m_in_all_0", elem: [[{ elem: { val: { concat: [{ prefix: { addr: "0.0.0.0", len: 0 } }, "tcp", 5001] }, counter: { packets: 2, bytes: 120 } } }, { goto: { target: "deny_in" } }]] } }],
  };

  const counts = ruleCounts(sw, listing);

  assert.deepEqual(counts.get("in_all")?.get(4), { packets: 2, bytes: 120 });
  assert.deepEqual(totalRuleCounts(sw, counts).get(4), { packets: 2, bytes: 120 });
});

test("ruleset: a stateful switch lets known connections skip the ACL stages, marked in the ip family", () => {
  const sw = lab({ stateful: true });

  const text = nftTable(sw);
  const conntrack = conntrackScript(sw) ?? assert.fail();

  assert.match(text, /iifname != @members return\n {4}oifname \. meta mark & 0x00000fff != @vlan_members drop\n {4}meta mark & 0x00100000 == 0x00100000 goto flowlog\n {4}iifname vmap @port_out/);
  assert.match(conntrack, new RegExp(`iifname "${sw.bridge}" ct state established,related meta mark set meta mark \\| 0x00100000`));
  assert.match(conntrack, new RegExp(`priority -300; policy accept;\\n {4}iifname "${sw.bridge}" ct zone set ${conntrackZone(sw)}\\n`));
  assert.equal(conntrackScript(lab()), undefined);
});

test("ruleset: a switch without flow log updates no flow set", () => {
  const text = nftTable(lab({ flowLog: false, defaultDeny: true }));

  assert.doesNotMatch(text, /update @/);
  assert.match(text, /chain deny_out \{\n {4}drop\n {2}\}/);
});

test("ruleset: allowed traffic is logged after one protocol dispatch", () => {
  const text = nftTable(lab());

  assert.match(text, /chain flowlog \{\n {4}meta l4proto vmap \{ tcp : goto flowlog_tcp, udp : goto flowlog_udp \}\n/);
  assert.match(text, /chain flowlog_tcp \{\n {4}tcp flags syn add @flows_tcp_first \{ iifname \. ip saddr \. ip daddr \. tcp sport \. tcp dport \}\n {4}update @flows_tcp /);
});

test("ruleset: access VLANs are a port-to-id map, a member set and one drop per hook", () => {
  const sw = lab({
    ports: [{ ...port("web", "palp00000001", "52:54:00:00:00:01"), vlan: 10 }, port("db", "palp00000002", "52:54:00:00:00:02")],
  });
  const text = nftTable(sw);

  assert.match(text, /map port_vlan \{ type ifname : mark; elements = \{ "palp00000001" : 10, "palp00000002" : 0 \} \}/);
  assert.match(text, /set vlan_members \{ type ifname \. mark; elements = \{ "palp00000001" \. 10, "palp00000002" \. 0 \} \}/);
  // The id is set where a frame enters, before the guards; checked before ACLs and the stateful shortcut.
  assert.match(text, /hook prerouting priority -200; policy accept;\n {4}meta mark set iifname map @port_vlan\n/);
  assert.match(text, new RegExp(`iifname != @members return\\n {4}oifname \\. meta mark & ${VLAN_MARK_MASK} != @vlan_members drop\\n`));
  assert.match(text, /iifname != @members return\n {4}meta mark & 0x00000fff != 0 drop\n/);
  assert.match(text, /oifname != @members return\n {4}oifname \. meta mark & 0x00000000 != @vlan_members drop\n/);
  // An uplink is untagged.
  assert.match(nftTable(lab({ type: "external", uplink: "eth9", ports: [] })), /map port_vlan \{ type ifname : mark; elements = \{ "eth9" : 0 \} \}/);

  const tagged = { ...port("app", "palp00000003", "52:54:00:00:00:03"), vlan: 20 };
  assert.match(portAddScript(sw, tagged), /add element bridge \S+ port_vlan \{ "palp00000003" : 20 \}\nadd element bridge \S+ vlan_members \{ "palp00000003" \. 20 \}\n/);
  assert.match(portRemoveScript(sw, tagged), /delete element bridge \S+ port_vlan \{ "palp00000003" \}\ndelete element bridge \S+ vlan_members \{ "palp00000003" \. 20 \}\n/);
});

test("ruleset: a full apply empties the membership sets before declaring them again", () => {
  const sw = lab();
  const existing = parseTableObjects({ nftables: [{ set: { name: "members" } }, { set: { name: "vlan_members" } }, { map: { name: "port_vlan" } }] });
  const script = nftScript(sw, existing);
  assert.ok(script.startsWith(`flush table bridge ${sw.table}\nflush set bridge ${sw.table} members\nflush set bridge ${sw.table} vlan_members\ndelete map bridge ${sw.table} port_vlan\n`), script);
});
