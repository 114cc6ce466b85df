/**
 * Port ACLs, decided in pure functions: which rules apply to a port, in which order, what
 * verdict a packet gets (used to name the rule behind a logged flow), and how an ordered
 * rule list becomes nftables verdict maps so that 10,000 rules cost a few set lookups,
 * not 10,000 rule evaluations.
 *
 * Semantics (stateless, like Hyper-V's port ACLs): rules match IPv4 packets only. For a
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
  /** Element text, e.g. `10.0.0.0/24 . 6 . 80-90 : "acl_7"`. */
  readonly elements: readonly string[];
}

const MAP_TYPE: Readonly<Record<Shape, string>> = {
  addr: "ipv4_addr",
  "addr-proto": "ipv4_addr . inet_proto",
  "addr-proto-port": "ipv4_addr . inet_proto . inet_service",
};

/** Name of the nftables counter object that counts one rule's matches. */
export function ruleCounterName(ruleId: number): string {
  return `acl_${ruleId}`;
}

function elementText(shape: Shape, element: Element): string {
  const parts = [formatCidr(element.remote)];
  if (shape !== "addr") parts.push(String(element.protocol));
  if (shape === "addr-proto-port" && element.portRange !== undefined) parts.push(formatPortRange(element.portRange));
  return `${parts.join(" . ")} : "${ruleCounterName(element.ruleId)}"`;
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
      const identity = `${shape} ${elementText(shape, { ...element, ruleId: 0 })}`;
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
        });
      }
    }
  }
  return maps;
}

/** The nft declaration of a compiled map. */
export function mapDeclaration(map: CompiledMap): string {
  const elements = map.elements.length === 0 ? "" : ` elements = { ${map.elements.join(", ")} }`;
  return `map ${map.name} { type ${MAP_TYPE[map.shape]} : counter; flags interval;${elements} }`;
}

/**
 * The nft rule that applies a compiled map in a stage chain: count the matching rule,
 * then `return` (allow: on to the next stage) or `goto` the deny chain.
 */
export function mapRule(map: CompiledMap, direction: AclDirection, denyChain: string): string {
  const remote = direction === "out" ? "ip daddr" : "ip saddr";
  const key = map.shape === "addr" ? remote : map.shape === "addr-proto" ? `${remote} . meta l4proto` : `${remote} . meta l4proto . th dport`;
  return `counter name ${key} map @${map.name} ${map.action === "allow" ? "return" : `goto ${denyChain}`}`;
}
