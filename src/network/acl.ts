/**
 * Port ACLs, decided in pure functions: which rules apply to a port, in which order, what
 * verdict a packet gets (used to name the rule behind a logged flow), and how an ordered
 * rule list becomes nftables verdict maps so that 10,000 rules cost a few set lookups,
 * not 10,000 rule evaluations. Each map element carries its own counter (the rule's), so
 * the table holds no named object per rule: nft 1.0.6 fetches every named object of the
 * namespace before any `add rule` or `add element`, which made attaching a port cost
 * ~150 ms with 10,000 rules.
 *
 * Semantics (stateless by default, like Hyper-V's port ACLs; a `stateful` switch lets
 * replies of allowed connections through before the stages, see ruleset.ts): rules match IPv4 packets only. For a
 * port, the rules of one direction (its own and the switch-wide ones) are taken in
 * order — higher priority first; at equal priority port rules before switch-wide ones,
 * deny before allow, older before newer — and the first match decides. No match: the
 * switch default (allow, or deny with `--default-deny`).
 */
import { ConfigError } from "../util/errors.js";
import { cidrContains, cidrsOverlap, formatCidr, formatPortRange, type Ipv4Cidr, type PortRange, type PortRef } from "./addresses.js";
import { isPort, type AclAction, type AclDirection, type AclProtocol, type AclRule } from "./model.js";

/** IANA protocol numbers of the protocols ACLs name. */
export const PROTOCOL_NUMBER: Readonly<Record<Exclude<AclProtocol, "any">, number>> = { tcp: 6, udp: 17, icmp: 1 };

/** A rule as the user typed it, before it gets an id. */
export type AclRuleInput = Omit<AclRule, "id">;

/**
 * Checks a rule's fields against each other.
 * @throws {ConfigError} `network.bad-acl` when a port range is given for icmp or any.
 */
export function checkAclRule(rule: AclRuleInput): AclRuleInput {
  if (rule.portRange !== undefined && rule.protocol !== "tcp" && rule.protocol !== "udp") {
    throw new ConfigError(`--port-range needs --proto tcp or udp, not ${rule.protocol}`, "network.bad-acl");
  }
  return rule;
}

/** The order in which rules are evaluated (see the module comment). */
export function compareRules(a: AclRule, b: AclRule): number {
  return (
    b.priority - a.priority ||
    (a.port === undefined ? 1 : 0) - (b.port === undefined ? 1 : 0) ||
    (a.action === "deny" ? 0 : 1) - (b.action === "deny" ? 0 : 1) ||
    a.id - b.id
  );
}

/** The rules of one direction that apply to a port (or, with `port` unset, the switch-wide ones), in evaluation order. */
export function stageRules(rules: readonly AclRule[], direction: AclDirection, port: PortRef | undefined): AclRule[] {
  return rules
    .filter((rule) => rule.direction === direction && (rule.port === undefined || (port !== undefined && isPort(rule.port, port))))
    .sort(compareRules);
}

/** The fields of an IPv4 packet an ACL looks at, from the port's point of view. */
export interface AclPacket {
  /** IP protocol number (6 tcp, 17 udp, 1 icmp, …). */
  readonly protocol: number;
  /** Source address for `in`, destination address for `out`. */
  readonly remote: number;
  /** Destination port, for tcp and udp. */
  readonly destinationPort?: number;
}

/** Whether one rule matches a packet. */
export function ruleMatches(rule: AclRule, packet: AclPacket): boolean {
  if (rule.protocol !== "any" && PROTOCOL_NUMBER[rule.protocol] !== packet.protocol) return false;
  if (rule.remote !== undefined && !cidrContains(rule.remote, packet.remote)) return false;
  if (rule.portRange !== undefined) {
    const port = packet.destinationPort;
    if (port === undefined || port < rule.portRange.first || port > rule.portRange.last) return false;
  }
  return true;
}

/** The verdict of a stage and the rule that gave it (`undefined`: the switch default). */
export interface AclVerdict {
  readonly action: AclAction;
  readonly ruleId: number | undefined;
}

/** Evaluates an ordered stage (from {@link stageRules}) on a packet: first match wins. */
export function evaluateStage(ordered: readonly AclRule[], packet: AclPacket, defaultDeny: boolean): AclVerdict {
  const rule = ordered.find((candidate) => ruleMatches(candidate, packet));
  return rule === undefined ? { action: defaultDeny ? "deny" : "allow", ruleId: undefined } : { action: rule.action, ruleId: rule.id };
}

/** How a rule's match fields become a map key; rules of one shape share a map type. */
type Shape = "addr" | "addr-proto" | "addr-proto-port";

interface Element {
  readonly ruleId: number;
  readonly remote: Ipv4Cidr;
  readonly protocol: number | undefined;
  readonly portRange: PortRange | undefined;
}

const ANY: Ipv4Cidr = { address: 0, prefixLength: 0 };

function elementOf(rule: AclRule): { shape: Shape; element: Element } {
  const protocol = rule.protocol === "any" ? undefined : PROTOCOL_NUMBER[rule.protocol];
  const shape: Shape = protocol === undefined ? "addr" : rule.portRange === undefined ? "addr-proto" : "addr-proto-port";
  return { shape, element: { ruleId: rule.id, remote: rule.remote ?? ANY, protocol, portRange: rule.portRange } };
}

function elementsOverlap(a: Element, b: Element): boolean {
  if (a.protocol !== b.protocol) return false;
  if (a.portRange !== undefined && b.portRange !== undefined && (a.portRange.last < b.portRange.first || b.portRange.last < a.portRange.first)) {
    return false;
  }
  return cidrsOverlap(a.remote, b.remote);
}

/** A CIDR as one exact number (below 2^38), cheaper to hash than text. */
function cidrKey(address: number, prefixLength: number): number {
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return prefixLength * 0x100000000 + ((address & mask) >>> 0);
}

/**
 * A map under construction. nftables refuses overlapping intervals in one map, so
 * overlapping elements of one run go to separate maps; indexes by CIDR keep the
 * overlap check near-linear for the usual lists (distinct hosts or ports).
 */
class MapBuilder {
  readonly elements: Element[] = [];
  readonly #exact = new Map<number, Element[]>();
  readonly #below = new Map<number, Element[]>();

  conflicts(element: Element): boolean {
    const { address, prefixLength } = element.remote;
    const overlaps = (other: Element): boolean => elementsOverlap(other, element);
    if (this.#below.get(cidrKey(address, prefixLength))?.some(overlaps) === true) return true;
    for (let length = 0; length <= prefixLength; length++) {
      if (this.#exact.get(cidrKey(address, length))?.some(overlaps) === true) return true;
    }
    return false;
  }

  add(element: Element): void {
    const { address, prefixLength } = element.remote;
    this.elements.push(element);
    const key = cidrKey(address, prefixLength);
    const same = this.#exact.get(key);
    if (same === undefined) this.#exact.set(key, [element]);
    else same.push(element);
    for (let length = 0; length < prefixLength; length++) {
      const above = cidrKey(address, length);
      const list = this.#below.get(above);
      if (list === undefined) this.#below.set(above, [element]);
      else list.push(element);
    }
  }
}

/** One nftables verdict map of a compiled stage: `key → named counter`, one action. */
export interface CompiledMap {
  readonly name: string;
  readonly shape: Shape;
  readonly action: AclAction;
  /** Rule ids in element order. */
  readonly ruleIds: readonly number[];
  /** Element keys as nft text, e.g. `10.0.0.0/24 . 6 . 80-90`, in the order of `ruleIds`. */
  readonly elements: readonly string[];
  /** The same keys in canonical form (see {@link canonicalKey}), to find an element's rule in a listing. */
  readonly keys: readonly string[];
}

/**
 * Every shape is a concatenation: nft 1.0.6 loads the elements of every non-concatenated
 * interval set of the namespace before an `add element`, so an `addr` map is
 * `addr . 0-255` (any protocol) rather than a plain `ipv4_addr` interval map.
 */
const MAP_TYPE: Readonly<Record<Shape, string>> = {
  addr: "ipv4_addr . inet_proto",
  "addr-proto": "ipv4_addr . inet_proto",
  "addr-proto-port": "ipv4_addr . inet_proto . inet_service",
};

function elementText(shape: Shape, element: Element): string {
  const parts = [formatCidr(element.remote), shape === "addr" ? "0-255" : String(element.protocol)];
  if (shape === "addr-proto-port" && element.portRange !== undefined) parts.push(formatPortRange(element.portRange));
  return parts.join(" . ");
}

/**
 * One canonical text for an element key, whichever way it was written: `a.b.c.d/len|proto|first-last`,
 * with `*` for a field the shape does not match on.
 */
export function canonicalKey(key: { remote: Ipv4Cidr; protocol: number | undefined; portRange: PortRange | undefined }): string {
  return `${formatCidr(key.remote)}|${key.protocol ?? "*"}|${key.portRange === undefined ? "*" : `${key.portRange.first}-${key.portRange.last}`}`;
}

const PROTOCOL_BY_NAME: Readonly<Record<string, number>> = { tcp: 6, udp: 17, icmp: 1 };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function jsonRange(value: unknown): [unknown, unknown] | undefined {
  return isRecord(value) && Array.isArray(value.range) && value.range.length === 2 ? [value.range[0], value.range[1]] : undefined;
}

/**
 * The canonical key ({@link canonicalKey}) of an ACL map element as `nft -j list` prints
 * it (`{"concat": ["10.1.0.1", "udp", 53]}`, prefixes as `{"prefix": …}`, ranges as
 * `{"range": [a, b]}`); undefined for anything else. Pure.
 */
export function canonicalKeyOfJson(value: unknown): string | undefined {
  if (!isRecord(value) || !Array.isArray(value.concat)) return undefined;
  const [address, protocol, port] = value.concat as unknown[];
  let cidr: string | undefined;
  if (typeof address === "string") cidr = `${address}/32`;
  else if (isRecord(address) && isRecord(address.prefix) && typeof address.prefix.addr === "string" && typeof address.prefix.len === "number") {
    cidr = `${address.prefix.addr}/${address.prefix.len}`;
  }
  let proto: string | undefined;
  const protoRange = jsonRange(protocol);
  if (typeof protocol === "number") proto = String(protocol);
  else if (typeof protocol === "string") proto = PROTOCOL_BY_NAME[protocol] === undefined ? protocol : String(PROTOCOL_BY_NAME[protocol]);
  else if (protoRange?.[0] === 0 && protoRange[1] === 255) proto = "*";
  let ports: string | undefined = "*";
  const portRange = jsonRange(port);
  if (typeof port === "number") ports = `${port}-${port}`;
  else if (portRange !== undefined && typeof portRange[0] === "number" && typeof portRange[1] === "number") ports = `${portRange[0]}-${portRange[1]}`;
  else if (port !== undefined) ports = undefined;
  return cidr === undefined || proto === undefined || ports === undefined ? undefined : `${cidr}|${proto}|${ports}`;
}

/**
 * Compiles an ordered stage into verdict maps, in evaluation order. Consecutive rules
 * with the same action form a run; inside a run order does not matter, so a run's rules
 * are grouped by shape into maps (split further only where elements overlap). A rule
 * whose match fields repeat an earlier rule of the same run adds nothing and keeps a zero
 * counter.
 */
export function compileStage(ordered: readonly AclRule[], mapPrefix: string): CompiledMap[] {
  const maps: CompiledMap[] = [];
  let index = 0;
  while (index < ordered.length) {
    const action = ordered[index]?.action;
    const builders = new Map<Shape, MapBuilder[]>();
    const seen = new Set<string>();
    for (; index < ordered.length && ordered[index]?.action === action; index++) {
      const rule = ordered[index];
      if (rule === undefined) break;
      const { shape, element } = elementOf(rule);
      const identity = `${shape} ${elementText(shape, element)}`;
      if (seen.has(identity)) continue;
      seen.add(identity);
      const list = builders.get(shape) ?? [];
      builders.set(shape, list);
      let target = list.find((builder) => !builder.conflicts(element));
      if (target === undefined) {
        target = new MapBuilder();
        list.push(target);
      }
      target.add(element);
    }
    for (const shape of ["addr-proto-port", "addr-proto", "addr"] as const) {
      for (const builder of builders.get(shape) ?? []) {
        maps.push({
          name: `${mapPrefix}_${maps.length}`,
          shape,
          action: action ?? "allow",
          ruleIds: builder.elements.map((element) => element.ruleId),
          elements: builder.elements.map((element) => elementText(shape, element)),
          keys: builder.elements.map((element) => canonicalKey(element)),
        });
      }
    }
  }
  return maps;
}

/** Packets and bytes counted by a rule. */
export interface RuleCount {
  readonly packets: number;
  readonly bytes: number;
}

/**
 * The nft declaration of a compiled map: a verdict map with a counter per element —
 * `return` (allow: on to the next stage) or `goto` the deny chain. `initial` carries
 * rule counts over a re-apply.
 */
export function mapDeclaration(map: CompiledMap, denyChain: string, initial?: ReadonlyMap<number, RuleCount>): string {
  const elements = mapElements(map, denyChain, initial);
  return `map ${map.name} { ${mapSpec(map)}${elements.length === 0 ? "" : ` elements = { ${elements.join(", ")} }`} }`;
}

/** The type, flags and counter statement of a compiled map's declaration. */
export function mapSpec(map: CompiledMap): string {
  return `type ${MAP_TYPE[map.shape]} : verdict; flags interval; counter;`;
}

/** A compiled map's elements as nft text, `key [counter packets P bytes B] : verdict`. */
export function mapElements(map: CompiledMap, denyChain: string, initial?: ReadonlyMap<number, RuleCount>): string[] {
  const verdict = map.action === "allow" ? "return" : `goto ${denyChain}`;
  return map.elements.map((key, index) => {
    const count = initial?.get(map.ruleIds[index] ?? 0);
    return `${key}${count === undefined || count.packets === 0 ? "" : ` counter packets ${count.packets} bytes ${count.bytes}`} : ${verdict}`;
  });
}

/** The nft rule that applies a compiled map in a stage chain (the verdicts are in the map). */
export function mapRule(map: CompiledMap, direction: AclDirection): string {
  const remote = direction === "out" ? "ip daddr" : "ip saddr";
  const key = map.shape === "addr-proto-port" ? `${remote} . meta l4proto . th dport` : `${remote} . meta l4proto`;
  return `${key} vmap @${map.name}`;
}
