/**
 * The nftables ruleset of one switch, as a pure function of its state: port guards
 * (MAC spoofing, DHCP server, router advertisement), the ACL stages compiled by `acl.ts`,
 * the switch default, and the flow log sets. Each switch owns one table,
 * `table bridge palisade_<id>` (and, when its ACLs are stateful, `table ip palisade_<id>`);
 * the script replaces that table atomically and touches nothing else.
 *
 * Attaching or detaching a port is a delta ({@link portAddScript}): its guard chain, its
 * entries in the dispatch maps and, if it has ACL rules of its own, its own stage chains
 * and maps. The table holds no named object per ACL rule and no non-concatenated interval
 * map, because nft 1.0.6 reads all of those (in every table of the namespace) before any
 * `add rule` or `add element`.
 */
import { canonicalKeyOfJson, compileStage, mapDeclaration, mapElements, mapRule, mapSpec, stageRules, type CompiledMap, type RuleCount } from "./acl.js";
import type { AclDirection, AclRule, Port, Switch } from "./model.js";

/** Seconds a flow stays in the flow log after its last packet. */
export const FLOW_IDLE_TIMEOUT_S = 600;
/** Seconds the first-seen time of a flow is remembered. */
export const FLOW_FIRST_SEEN_TIMEOUT_S = 86400;
/** Flows kept per set; beyond that new flows pass but are not logged. */
export const FLOW_SET_SIZE = 65536;

/** The flow sets: `allowed` is keyed by the ingress interface, the denied ones by the VM port. */
export const FLOW_SETS = {
  allowed: "flows",
  deniedOut: "denied_out",
  deniedIn: "denied_in",
} as const;
/** Name of the set remembering when a flow set's entries were first seen. */
export function firstSeenSet(set: string): string {
  return `${set}_first`;
}

/** Counter objects of the port guards, by guard. */
export function guardCounterNames(port: Port): { mac: string; dhcp: string; routerAdvert: string } {
  return { mac: `guard_${port.ifname}_mac`, dhcp: `guard_${port.ifname}_dhcp`, routerAdvert: `guard_${port.ifname}_ra` };
}
/** Counter of packets dropped by the switch default (`--default-deny`). */
export const DEFAULT_DENY_COUNTER = "default_deny";

/**
 * Flow sets are split by protocol class because nftables packs a concatenation's types in
 * 32 bits, 6 bits each: five fields at most, so `port . saddr . daddr . proto . sport .
 * dport` cannot be one key.
 */
export const FLOW_CLASSES = ["tcp", "udp", "other"] as const;
export type FlowClass = (typeof FLOW_CLASSES)[number];
const FLOW_KEY_TYPE: Readonly<Record<FlowClass, string>> = {
  tcp: "ifname . ipv4_addr . ipv4_addr . inet_service . inet_service",
  udp: "ifname . ipv4_addr . ipv4_addr . inet_service . inet_service",
  other: "ifname . ipv4_addr . ipv4_addr . inet_proto",
};
/** Name of the set of one flow set and protocol class, e.g. `flows_tcp`. */
export function flowSetName(set: string, flowClass: FlowClass): string {
  return `${set}_${flowClass}`;
}

/**
 * Flow log rules. `tcpFirstSeenOnSyn`: for TCP, record first-seen on SYN segments only,
 * which keeps bulk TCP at one set update per packet (a flow already open when the switch
 * was applied has no first-seen time).
 */
function flowLogRules(sw: Switch, set: string, ifnameExpr: string, tcpFirstSeenOnSyn: boolean): string[] {
  const lines: string[] = [];
  if (!sw.flowLog) return lines;
  for (const flowClass of FLOW_CLASSES) {
    const name = flowSetName(set, flowClass);
    const match = flowClass === "other" ? "meta protocol ip meta l4proto != { tcp, udp }" : `meta l4proto ${flowClass}`;
    const key = flowClass === "other" ? `${ifnameExpr} . ip saddr . ip daddr . meta l4proto` : `${ifnameExpr} . ip saddr . ip daddr . ${flowClass} sport . ${flowClass} dport`;
    const firstMatch = flowClass === "tcp" && tcpFirstSeenOnSyn ? "tcp flags syn" : match;
    // Separate rules, no verdict: a full set must never change what a packet's fate is.
    lines.push(`${firstMatch} add @${firstSeenSet(name)} { ${key} }`, `${match} update @${name} { ${key} }`);
  }
  return lines;
}

/**
 * The allowed-traffic flow log, on the path of every packet: one protocol dispatch, then
 * only that protocol's two rules (TCP: first-seen on SYN, then the update).
 */
function allowedFlowLogChains(sw: Switch): string[] {
  if (!sw.flowLog) return [chainBlock("flowlog", [])];
  const rules = flowLogRules(sw, FLOW_SETS.allowed, "iifname", true);
  const of = (flowClass: FlowClass): string[] => rules.filter((rule) => rule.includes(`@${flowSetName(FLOW_SETS.allowed, flowClass)}`)).map((rule) => rule.replace(/^meta l4proto (tcp|udp) /, ""));
  return [
    chainBlock("flowlog", ["meta l4proto vmap { tcp : goto flowlog_tcp, udp : goto flowlog_udp }", ...of("other")]),
    chainBlock("flowlog_tcp", of("tcp")),
    chainBlock("flowlog_udp", of("udp")),
  ];
}

function quote(ifname: string): string {
  return `"${ifname}"`;
}

/** Rule counts by stage chain and rule id, carried over a re-apply (see {@link ruleCounts}). */
export type StageCounts = ReadonlyMap<string, ReadonlyMap<number, RuleCount>>;

interface Stage {
  readonly chain: string;
  readonly lines: readonly string[];
  readonly compiled: readonly CompiledMap[];
  readonly maps: readonly string[];
}

function denyChainOf(direction: AclDirection): string {
  return direction === "out" ? "deny_out" : "deny_in";
}

function stage(sw: Switch, direction: AclDirection, port: Port | undefined, counts?: StageCounts): Stage {
  const chain = port === undefined ? `${direction}_all` : `${direction}_${port.ifname}`;
  const compiled = compileStage(stageRules(sw.acls, direction, port), `m_${chain}`);
  const denyChain = denyChainOf(direction);
  const lines = compiled.map((map) => mapRule(map, direction));
  if (sw.defaultDeny) {
    lines.push(
      "ether type arp return",
      "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } return",
      `counter name "${DEFAULT_DENY_COUNTER}" goto ${denyChain}`,
    );
  }
  return { chain, lines, compiled, maps: compiled.map((map) => mapDeclaration(map, denyChain, counts?.get(chain))) };
}

/** The ACL stages of a switch: the shared one of each direction, and those of ports with rules of their own. */
function stages(sw: Switch, counts?: StageCounts): Stage[] {
  const result: Stage[] = [];
  for (const direction of ["out", "in"] as const) {
    result.push(stage(sw, direction, undefined, counts));
    for (const port of sw.ports) {
      if (hasOwnRules(sw, port, direction)) result.push(stage(sw, direction, port, counts));
    }
  }
  return result;
}

/**
 * Per-rule packet and byte counts from `nft -j list table bridge <table>` output, by stage
 * chain: each ACL map element has its own counter, found again by its key. Pure.
 */
export function ruleCounts(sw: Switch, json: unknown): Map<string, Map<number, RuleCount>> {
  const entries = isRecord(json) && Array.isArray(json.nftables) ? (json.nftables as unknown[]) : [];
  const mapsByName = new Map<string, unknown[]>();
  for (const entry of entries) {
    const map = isRecord(entry) ? entry.map : undefined;
    if (isRecord(map) && typeof map.name === "string") mapsByName.set(map.name, Array.isArray(map.elem) ? (map.elem as unknown[]) : []);
  }
  const result = new Map<string, Map<number, RuleCount>>();
  for (const { chain, compiled } of stages(sw)) {
    const counts = new Map<number, RuleCount>();
    for (const map of compiled) {
      const ruleByKey = new Map(map.keys.map((key, index) => [key, map.ruleIds[index] ?? 0]));
      for (const pair of mapsByName.get(map.name) ?? []) {
        const key: unknown = Array.isArray(pair) ? pair[0] : undefined;
        const element = isRecord(key) && isRecord(key.elem) ? key.elem : { val: key };
        const ruleId = ruleByKey.get(canonicalKeyOfJson(element.val) ?? "");
        const counter = isRecord(element.counter) ? element.counter : undefined;
        if (ruleId === undefined || counter === undefined) continue;
        counts.set(ruleId, { packets: typeof counter.packets === "number" ? counter.packets : 0, bytes: typeof counter.bytes === "number" ? counter.bytes : 0 });
      }
    }
    result.set(chain, counts);
  }
  return result;
}

/** Totals of {@link ruleCounts} by rule (a switch-wide rule counts in every stage it is part of). */
export function totalRuleCounts(sw: Switch, counts: StageCounts): Map<number, RuleCount> {
  const totals = new Map<number, RuleCount>(sw.acls.map((rule) => [rule.id, { packets: 0, bytes: 0 }]));
  for (const byRule of counts.values()) {
    for (const [id, count] of byRule) {
      const total = totals.get(id) ?? { packets: 0, bytes: 0 };
      totals.set(id, { packets: total.packets + count.packets, bytes: total.bytes + count.bytes });
    }
  }
  return totals;
}

/** The named verdict maps that send a port's packets to its guard and ACL chains. */
export const DISPATCH_MAPS = { guards: "port_guards", out: "port_out", in: "port_in" } as const;

/**
 * Access VLANs without kernel VLAN support (no bridge VLAN filtering, no 8021Q, no tc vlan
 * action on this kernel): `port_vlan` maps every member interface to its VLAN id (0:
 * untagged, also the uplink's), and `prerouting` sets a frame's mark to the id of the port
 * it entered by; `vlan_members` holds each member's `ifname . id` pair, and `forward` drops
 * a frame whose output port is not in that pair with the frame's id. The host (the
 * bridge's own interface) is untagged: `input` drops frames with a non-zero id and
 * `output` sends only to ports whose pair has id 0.
 */
export const VLAN_OBJECTS = { map: "port_vlan", set: "vlan_members" } as const;
/** The mark bits holding a frame's VLAN id (Palisade sets the mark of frames entering a port). */
export const VLAN_MARK_MASK = "0x00000fff";

/** A port's VLAN id in the ruleset: 0 when untagged. */
export function vlanId(port: Port): number {
  return port.vlan ?? 0;
}

function vlanMembers(sw: Switch): (readonly [string, number])[] {
  return [...sw.ports.map((port) => [port.ifname, vlanId(port)] as const), ...(sw.uplink === undefined ? [] : [[sw.uplink, 0] as const])];
}

/** The map and set of {@link VLAN_OBJECTS}, declared with every member of the switch. */
function vlanDeclarations(sw: Switch): { map: string; set: string } {
  const members = vlanMembers(sw);
  const elements = (separator: string): string => (members.length === 0 ? "" : ` elements = { ${members.map(([ifname, id]) => `${quote(ifname)}${separator}${id}`).join(", ")} }`);
  return { map: `map ${VLAN_OBJECTS.map} { type ifname : mark;${elements(" : ")} }`, set: `set ${VLAN_OBJECTS.set} { type ifname . mark;${elements(" . ")} }` };
}

function verdictMap(name: string, entries: readonly (readonly [string, string])[]): string {
  const elements = entries.length === 0 ? "" : ` elements = { ${entries.map(([ifname, chain]) => `${quote(ifname)} : jump ${chain}`).join(", ")} }`;
  return `map ${name} { type ifname : verdict;${elements} }`;
}

function guardLines(port: Port): string[] {
  const names = guardCounterNames(port);
  const lines: string[] = [];
  if (port.macGuard) lines.push(`ether saddr != ${port.mac} counter name "${names.mac}" drop`);
  if (port.dhcpGuard) lines.push(`udp sport 67 udp dport 68 counter name "${names.dhcp}" drop`, `udp sport 547 udp dport 546 counter name "${names.dhcp}" drop`);
  if (port.routerGuard) lines.push(`icmpv6 type nd-router-advert counter name "${names.routerAdvert}" drop`);
  return lines;
}

/** Which directions have switch-wide rules and which ports have rules of their own, per ACL list. */
interface AclIndex {
  readonly shared: ReadonlySet<AclDirection>;
  /** `<direction> <vm>:<nic>` */
  readonly own: ReadonlySet<string>;
}
/** States are immutable: an ACL list is indexed once, not scanned (10,000 rules) on every attach. */
const aclIndexes = new WeakMap<readonly AclRule[], AclIndex>();

function aclIndex(acls: readonly AclRule[]): AclIndex {
  let index = aclIndexes.get(acls);
  if (index === undefined) {
    const shared = new Set<AclDirection>();
    const own = new Set<string>();
    for (const rule of acls) {
      if (rule.port === undefined) shared.add(rule.direction);
      else own.add(`${rule.direction} ${rule.port.vmName}:${rule.port.nic}`);
    }
    index = { shared, own };
    aclIndexes.set(acls, index);
  }
  return index;
}

/** Whether the shared stage of a direction has anything to do (cheap: no compilation). */
function sharedStageUsed(sw: Switch, direction: AclDirection): boolean {
  return sw.defaultDeny || aclIndex(sw.acls).shared.has(direction);
}

function hasOwnRules(sw: Switch, port: Port, direction: AclDirection): boolean {
  return aclIndex(sw.acls).own.has(`${direction} ${port.vmName}:${port.nic}`);
}

/**
 * The nft commands that add one port to a switch whose table matches `sw` without it:
 * the port's guard chain and counters, its dispatch entries and, when it has ACL rules of
 * its own, its own stage chains and maps. Their cost grows with the port's own stage, not
 * with the switch's rule count (a port without rules joins the shared chains).
 */
export function portAddScript(sw: Switch, port: Port): string {
  const table = `bridge ${sw.table}`;
  const names = guardCounterNames(port);
  const guard = `guard_${port.ifname}`;
  const lines = [
    ...[names.mac, names.dhcp, names.routerAdvert].map((name) => `add counter ${table} ${name}`),
    `add chain ${table} ${guard}`,
    `flush chain ${table} ${guard}`,
    ...guardLines(port).map((line) => `add rule ${table} ${guard} ${line}`),
    `add element ${table} members { ${quote(port.ifname)} }`,
    `add element ${table} ${VLAN_OBJECTS.map} { ${quote(port.ifname)} : ${vlanId(port)} }`,
    `add element ${table} ${VLAN_OBJECTS.set} { ${quote(port.ifname)} . ${vlanId(port)} }`,
    `add element ${table} ${DISPATCH_MAPS.guards} { ${quote(port.ifname)} : jump ${guard} }`,
  ];
  for (const direction of ["out", "in"] as const) {
    if (hasOwnRules(sw, port, direction)) {
      const own = stage(sw, direction, port);
      lines.push(`add chain ${table} ${own.chain}`, `flush chain ${table} ${own.chain}`);
      for (const map of own.compiled) {
        // Declared, emptied, then filled: idempotent over a stale map of the same name.
        const elements = mapElements(map, denyChainOf(direction));
        lines.push(`add map ${table} ${map.name} { ${mapSpec(map)} }`, `flush map ${table} ${map.name}`);
        if (elements.length > 0) lines.push(`add element ${table} ${map.name} { ${elements.join(", ")} }`);
      }
      lines.push(...own.lines.map((line) => `add rule ${table} ${own.chain} ${line}`));
      lines.push(`add element ${table} ${DISPATCH_MAPS[direction]} { ${quote(port.ifname)} : jump ${own.chain} }`);
    } else if (sharedStageUsed(sw, direction)) {
      lines.push(`add element ${table} ${DISPATCH_MAPS[direction]} { ${quote(port.ifname)} : jump ${direction}_all }`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** The nft commands that remove one port (attached by {@link portAddScript}) from a switch's table. */
export function portRemoveScript(sw: Switch, port: Port): string {
  const table = `bridge ${sw.table}`;
  const names = guardCounterNames(port);
  const lines = [
    `delete element ${table} ${DISPATCH_MAPS.guards} { ${quote(port.ifname)} }`,
    `delete element ${table} members { ${quote(port.ifname)} }`,
    `delete element ${table} ${VLAN_OBJECTS.map} { ${quote(port.ifname)} }`,
    `delete element ${table} ${VLAN_OBJECTS.set} { ${quote(port.ifname)} . ${vlanId(port)} }`,
  ];
  const owned: string[] = [];
  for (const direction of ["out", "in"] as const) {
    if (hasOwnRules(sw, port, direction)) {
      const own = stage(sw, direction, port);
      lines.push(`delete element ${table} ${DISPATCH_MAPS[direction]} { ${quote(port.ifname)} }`);
      // The chain goes first: it references the maps.
      owned.push(`delete chain ${table} ${own.chain}`, ...own.compiled.map((map) => `delete map ${table} ${map.name}`));
    } else if (sharedStageUsed(sw, direction)) {
      lines.push(`delete element ${table} ${DISPATCH_MAPS[direction]} { ${quote(port.ifname)} }`);
    }
  }
  lines.push(`delete chain ${table} guard_${port.ifname}`, ...owned, ...[names.mac, names.dhcp, names.routerAdvert].map((name) => `delete counter ${table} ${name}`));
  return `${lines.join("\n")}\n`;
}

function chainBlock(name: string, lines: readonly string[], hook?: string): string {
  const body = hook === undefined ? lines : [hook, ...lines];
  return `  chain ${name} {\n${body.map((line) => `    ${line}\n`).join("")}  }\n`;
}

/** The named objects of an existing table, from `nft -j -t list table` (see {@link parseTableObjects}). */
export interface TableObjects {
  readonly chains: readonly string[];
  readonly maps: readonly string[];
  readonly counters: readonly string[];
  readonly sets: readonly string[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/** The chains, maps and counters in `nft -j -t list table …` output; pure. */
export function parseTableObjects(json: unknown): TableObjects {
  const entries = isRecord(json) && Array.isArray(json.nftables) ? (json.nftables as unknown[]) : [];
  const pick = (kind: string): string[] =>
    entries.flatMap((entry) => {
      const object = isRecord(entry) ? entry[kind] : undefined;
      return isRecord(object) && typeof object.name === "string" ? [object.name] : [];
    });
  return { chains: pick("chain"), maps: pick("map"), counters: pick("counter"), sets: pick("set") };
}

const BASE_CHAINS = new Set(["prerouting", "forward", "input", "output"]);

/**
 * The `nft -f` script that makes the switch's table exactly what its state says, in one
 * atomic transaction, and touches no other table. Given the table's current objects,
 * it keeps the flow sets' entries and the counters of rules that stay (so re-applying
 * after an ACL change loses no flow log); rules are flushed, ACL maps and obsolete
 * chains and counters are deleted, and everything is declared again. `resetFlows` empties
 * the flow log (when the ACL rules change).
 * @example nftScript(sw, undefined) // "table bridge palisade_1a2b3c4d {\n…"
 */
export function nftScript(sw: Switch, existing: TableObjects | undefined, options: { resetFlows?: boolean; counts?: StageCounts } = {}): string {
  const desired = nftTable(sw, options.counts);
  if (existing === undefined) return desired;
  const keepCounters = new Set(counterNames(sw));
  const flowSets = Object.values(FLOW_SETS).flatMap((set) => FLOW_CLASSES.flatMap((flowClass) => [flowSetName(set, flowClass), firstSeenSet(flowSetName(set, flowClass))]));
  const lines = [
    `flush table bridge ${sw.table}`,
    // The flow log names the rule behind a flow by replaying the current rules: when the
    // rules change, older flows would be misattributed, so the log restarts.
    ...(options.resetFlows === true ? flowSets.filter((set) => existing.sets.includes(set)).map((set) => `flush set bridge ${sw.table} ${set}`) : []),
    // Declaring a set adds to its elements: membership sets are emptied, then declared again.
    ...["members", VLAN_OBJECTS.set].filter((set) => existing.sets.includes(set)).map((set) => `flush set bridge ${sw.table} ${set}`),
    ...existing.maps.map((name) => `delete map bridge ${sw.table} ${name}`),
    ...existing.chains.filter((name) => !BASE_CHAINS.has(name)).map((name) => `delete chain bridge ${sw.table} ${name}`),
    ...existing.counters.filter((name) => !keepCounters.has(name)).map((name) => `delete counter bridge ${sw.table} ${name}`),
  ];
  return `${lines.join("\n")}\n${desired}`;
}

function counterNames(sw: Switch): string[] {
  return [
    DEFAULT_DENY_COUNTER,
    ...sw.ports.flatMap((port) => Object.values(guardCounterNames(port))),
  ];
}

/** The declaration of the switch's table alone. */
export function nftTable(sw: Switch, counts?: StageCounts): string {
  const counters = counterNames(sw);
  const sets: string[] = [];
  for (const set of Object.values(FLOW_SETS)) {
    for (const flowClass of FLOW_CLASSES) {
      const name = flowSetName(set, flowClass);
      const type = FLOW_KEY_TYPE[flowClass];
      sets.push(
        `set ${name} { type ${type}; flags dynamic,timeout; timeout ${FLOW_IDLE_TIMEOUT_S}s; size ${FLOW_SET_SIZE}; counter; }`,
        `set ${firstSeenSet(name)} { type ${type}; flags dynamic,timeout; timeout ${FLOW_FIRST_SEEN_TIMEOUT_S}s; size ${FLOW_SET_SIZE}; }`,
      );
    }
  }
  // Bridge-family hooks see every bridge of the namespace, and this kernel lacks
  // `meta ibrname`: the switch recognises its own traffic by its member interfaces.
  const members = [...sw.ports.map((port) => port.ifname), ...(sw.uplink === undefined ? [] : [sw.uplink])];
  sets.push(`set members { type ifname;${members.length === 0 ? "" : ` elements = { ${members.map(quote).join(", ")} }`} }`);
  const vlan = vlanDeclarations(sw);
  sets.push(vlan.set);
  const chains: string[] = [];
  const maps: string[] = [];

  // Port guards, before the bridge decides anything.
  const guards: (readonly [string, string])[] = [];
  for (const port of sw.ports) {
    const lines = guardLines(port);
    if (lines.length === 0) continue;
    chains.push(chainBlock(`guard_${port.ifname}`, lines));
    guards.push([port.ifname, `guard_${port.ifname}`]);
  }

  // ACL stages: one shared chain per direction for ports without rules of their own.
  const dispatch: Record<AclDirection, (readonly [string, string])[]> = { out: [], in: [] };
  for (const direction of ["out", "in"] as const) {
    const shared = stage(sw, direction, undefined, counts);
    if (shared.lines.length > 0) {
      chains.push(chainBlock(shared.chain, shared.lines));
      maps.push(...shared.maps);
    }
    for (const port of sw.ports) {
      if (hasOwnRules(sw, port, direction)) {
        const specific = stage(sw, direction, port, counts);
        chains.push(chainBlock(specific.chain, specific.lines));
        maps.push(...specific.maps);
        dispatch[direction].push([port.ifname, specific.chain]);
      } else if (shared.lines.length > 0) {
        dispatch[direction].push([port.ifname, shared.chain]);
      }
    }
  }
  // Stateful switches: a packet of a connection conntrack has seen both ways (or a related
  // one, an ICMP error) skips the ACL stages; conntrack runs in the ip family, see conntrackScript.
  const established = sw.stateful ? [`meta mark & ${STATEFUL_MARK} == ${STATEFUL_MARK} goto flowlog`] : [];
  // Named verdict maps, so that attaching a port is a few element insertions (see portAddScript).
  maps.push(verdictMap(DISPATCH_MAPS.guards, guards), verdictMap(DISPATCH_MAPS.out, dispatch.out), verdictMap(DISPATCH_MAPS.in, dispatch.in), vlan.map);
  // Access VLANs (see VLAN_OBJECTS), before the ACLs and the stateful shortcut.
  const vlanForward = `oifname . meta mark & ${VLAN_MARK_MASK} != @${VLAN_OBJECTS.set} drop`;
  // \`& 0\`: the host's frames carry VLAN id 0 whatever their mark (nft takes no constant in a concatenation).
  const vlanOutput = `oifname . meta mark & 0x00000000 != @${VLAN_OBJECTS.set} drop`;
  const vlanInput = `meta mark & ${VLAN_MARK_MASK} != 0 drop`;
  chains.push(
    chainBlock("deny_out", [...flowLogRules(sw, FLOW_SETS.deniedOut, "iifname", false), "drop"]),
    chainBlock("deny_in", [...flowLogRules(sw, FLOW_SETS.deniedIn, "oifname", false), "drop"]),
    ...allowedFlowLogChains(sw),
    // A frame entering by a non-member finds no VLAN id: the rule does nothing, its mark stays.
    chainBlock("prerouting", [`meta mark set iifname map @${VLAN_OBJECTS.map}`, `iifname vmap @${DISPATCH_MAPS.guards}`], "type filter hook prerouting priority -200; policy accept;"),
    chainBlock("forward", ["iifname != @members return", vlanForward, ...established, `iifname vmap @${DISPATCH_MAPS.out}`, `oifname vmap @${DISPATCH_MAPS.in}`, "jump flowlog"], "type filter hook forward priority 0; policy accept;"),
    chainBlock("input", ["iifname != @members return", vlanInput, ...established, `iifname vmap @${DISPATCH_MAPS.out}`, "jump flowlog"], "type filter hook input priority 0; policy accept;"),
    chainBlock("output", ["oifname != @members return", vlanOutput, ...established, `oifname vmap @${DISPATCH_MAPS.in}`, "jump flowlog"], "type filter hook output priority 0; policy accept;"),
  );
  return [
    `table bridge ${sw.table} {\n`,
    ...counters.map((name) => `  counter ${name} {}\n`),
    ...sets.map((line) => `  ${line}\n`),
    ...maps.map((line) => `  ${line}\n`),
    ...chains,
    "}\n",
  ].join("");
}

/**
 * The skb mark bit that says "conntrack knows this packet's connection as established or
 * related", set in the ip family (where conntrack works) and read in the bridge family
 * (where this kernel has no conntrack: CONFIG_NF_CONNTRACK_BRIDGE is off, `ct state` in a
 * bridge chain fails with "Protocol error"). Palisade owns this one bit.
 */
export const STATEFUL_MARK = "0x00100000";

/** The conntrack zone of a stateful switch (1–65535, from its id; 0 is the host's default zone). */
export function conntrackZone(sw: Switch): number {
  return (Number.parseInt(sw.id.slice(0, 4), 16) % 65535) + 1;
}

/**
 * The ip-family companion table of a stateful switch, `table ip palisade_<id>`. Bridged
 * IPv4 frames reach the ip hooks through br_netfilter (the bridge's `nf_call_iptables`,
 * which Palisade sets on stateful switches only), conntrack tracks them there, and this
 * table marks those of known connections on the switch's bridge. Replaces the table
 * atomically; undefined when the switch is stateless.
 */
export function conntrackScript(sw: Switch): string | undefined {
  if (!sw.stateful) return undefined;
  const mark = `ct state established,related meta mark set meta mark | ${STATEFUL_MARK}`;
  const zone = `ct zone set ${conntrackZone(sw)}`;
  return [
    `table ip ${sw.table} {}`,
    `flush table ip ${sw.table}`,
    `table ip ${sw.table} {`,
    // Before conntrack (-200): the switch's own zone, so that two switches with the same
    // addresses (private networks often are) never share a connection entry.
    `  chain zone_prerouting {\n    type filter hook prerouting priority -300; policy accept;\n    iifname ${quote(sw.bridge)} ${zone}\n  }`,
    `  chain zone_output {\n    type filter hook output priority -300; policy accept;\n    oifname ${quote(sw.bridge)} ${zone}\n  }`,
    // After conntrack (-200), before anything else the host may filter with.
    `  chain prerouting {\n    type filter hook prerouting priority -150; policy accept;\n    iifname ${quote(sw.bridge)} ${mark}\n  }`,
    `  chain output {\n    type filter hook output priority -150; policy accept;\n    oifname ${quote(sw.bridge)} ${mark}\n  }`,
    "}",
    "",
  ].join("\n");
}
