/**
 * The flow log, read back from the switch's nftables sets: pure parsing of `nft -j`
 * output into flow records, and the naming of the ACL rule behind each flow (by
 * evaluating the same ordered rules the kernel ran; see `acl.ts`).
 */
import { evaluateStage, stageRules } from "./acl.js";
import { formatPortRef, parseIpv4, type PortRef } from "./addresses.js";
import type { Switch } from "./model.js";
import { FLOW_CLASSES, FLOW_FIRST_SEEN_TIMEOUT_S, FLOW_IDLE_TIMEOUT_S, FLOW_SETS, firstSeenSet, flowSetName, type FlowClass } from "./ruleset.js";
import { byCodeUnits } from "../util/order.js";

/** One element of an nft set: its key fields, seconds until it expires, its counter. */
export interface SetElement {
  readonly key: readonly (string | number)[];
  readonly expiresS: number | undefined;
  readonly packets: number;
  readonly bytes: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/**
 * The elements of every set in `nft -j list set …` output; pure. Counters are 64-bit in
 * the kernel but arrive as JSON numbers, exact up to 2^53 bytes (8 PiB) per flow.
 */
export function parseSetElements(json: unknown): SetElement[] {
  const entries = isRecord(json) && Array.isArray(json.nftables) ? (json.nftables as unknown[]) : [];
  const elements: SetElement[] = [];
  for (const entry of entries) {
    const set = isRecord(entry) ? entry.set : undefined;
    if (!isRecord(set) || !Array.isArray(set.elem)) continue;
    for (const item of set.elem as unknown[]) {
      const elem = isRecord(item) && isRecord(item.elem) ? item.elem : undefined;
      const val = isRecord(elem) && isRecord(elem.val) ? elem.val.concat : undefined;
      if (elem === undefined || !Array.isArray(val)) continue;
      const counter = isRecord(elem.counter) ? elem.counter : {};
      elements.push({
        key: val.filter((field): field is string | number => typeof field === "string" || typeof field === "number"),
        expiresS: typeof elem.expires === "number" ? elem.expires : undefined,
        packets: typeof counter.packets === "number" ? counter.packets : 0,
        bytes: typeof counter.bytes === "number" ? counter.bytes : 0,
      });
    }
  }
  return elements;
}

/** IPv4 protocol numbers nft may print by name. */
const PROTOCOL_NAMES: Readonly<Record<string, number>> = { icmp: 1, igmp: 2, tcp: 6, udp: 17, gre: 47, esp: 50, ah: 51, sctp: 132 };

/** Protocol number from an nft field (a number or a name; unknown names give -1). */
export function protocolNumber(field: string | number | undefined): number {
  if (typeof field === "number") return field;
  if (field === undefined) return -1;
  return PROTOCOL_NAMES[field] ?? (/^\d+$/.test(field) ? Number(field) : -1);
}

/** Name of a protocol number for display. */
export function protocolName(protocol: number): string {
  return Object.entries(PROTOCOL_NAMES).find(([, value]) => value === protocol)?.[0] ?? String(protocol);
}

/** One flow (one direction of a conversation) seen by the switch. */
export interface FlowRecord {
  readonly verdict: "allowed" | "denied";
  /** For a denial: the ACL stage that denied it (`out` of the sender's port, `in` of the receiver's). */
  readonly stage: "out" | "in" | undefined;
  /** The interface the set was keyed by: ingress port for allowed flows, the denying port for denials. */
  readonly ifname: string;
  /** That interface as `VM:NIC`, when it is a VM port. */
  readonly port: string | undefined;
  readonly protocol: string;
  readonly source: string;
  readonly destination: string;
  readonly sourcePort: number | undefined;
  readonly destinationPort: number | undefined;
  readonly packets: number;
  readonly bytes: number;
  /** Unset when unknown: a TCP flow whose SYN the switch did not see. */
  readonly firstSeen: string | undefined;
  readonly lastSeen: string;
  /** `acl:<id>` for the rule that decided, `default` for the switch default, undefined when no ACL stage applied. */
  readonly rule: string | undefined;
}

/** The raw set contents {@link buildFlows} needs, by set name. */
export type FlowSetContents = ReadonlyMap<string, readonly SetElement[]>;

/** The names of every set the flow log reads. */
export function flowSetNames(): string[] {
  return Object.values(FLOW_SETS).flatMap((set) => FLOW_CLASSES.flatMap((flowClass) => [flowSetName(set, flowClass), firstSeenSet(flowSetName(set, flowClass))]));
}

function keyText(key: readonly (string | number)[]): string {
  return key.join("|");
}

/**
 * Flow records from the sets' contents at time `nowMs`, newest last-seen first; pure.
 * Last seen comes from the idle timeout each packet refreshes; first seen from a second
 * set whose entries are added once and never refreshed.
 */
export function buildFlows(sw: Switch, contents: FlowSetContents, nowMs: number): FlowRecord[] {
  const portsByIfname = new Map<string, PortRef>(sw.ports.map((port) => [port.ifname, { vmName: port.vmName, nic: port.nic }]));
  const flows: FlowRecord[] = [];
  const sources: { set: string; verdict: "allowed" | "denied"; stage: "out" | "in" | undefined }[] = [
    { set: FLOW_SETS.allowed, verdict: "allowed", stage: undefined },
    { set: FLOW_SETS.deniedOut, verdict: "denied", stage: "out" },
    { set: FLOW_SETS.deniedIn, verdict: "denied", stage: "in" },
  ];
  for (const source of sources) {
    for (const flowClass of FLOW_CLASSES) {
      const name = flowSetName(source.set, flowClass);
      const firstSeen = new Map((contents.get(firstSeenSet(name)) ?? []).map((element) => [keyText(element.key), element.expiresS]));
      for (const element of contents.get(name) ?? []) {
        const flow = flowOf(sw, portsByIfname, source, flowClass, element, firstSeen.get(keyText(element.key)), nowMs);
        if (flow !== undefined) flows.push(flow);
      }
    }
  }
  return flows.sort((a, b) => byCodeUnits(b.lastSeen, a.lastSeen) || byCodeUnits(a.source, b.source));
}

function flowOf(
  sw: Switch,
  portsByIfname: ReadonlyMap<string, PortRef>,
  source: { verdict: "allowed" | "denied"; stage: "out" | "in" | undefined },
  flowClass: FlowClass,
  element: SetElement,
  firstExpiresS: number | undefined,
  nowMs: number,
): FlowRecord | undefined {
  const [ifnameField, sourceField, destinationField, fourth, fifth] = element.key;
  if (typeof ifnameField !== "string" || typeof sourceField !== "string" || typeof destinationField !== "string") return undefined;
  const protocol = flowClass === "tcp" ? 6 : flowClass === "udp" ? 17 : protocolNumber(fourth);
  const sourcePort = flowClass === "other" ? undefined : Number(fourth);
  const destinationPort = flowClass === "other" ? undefined : Number(fifth);
  const ref = portsByIfname.get(ifnameField);
  const lastSeenMs = nowMs - (FLOW_IDLE_TIMEOUT_S - (element.expiresS ?? FLOW_IDLE_TIMEOUT_S)) * 1000;
  const firstSeenMs = firstExpiresS === undefined ? undefined : nowMs - (FLOW_FIRST_SEEN_TIMEOUT_S - firstExpiresS) * 1000;
  // The stage to replay: the denying one, or for an allowed flow the sender's `out` stage.
  const stage = source.stage ?? (ref === undefined ? undefined : "out");
  let rule: string | undefined;
  if (ref !== undefined && stage !== undefined) {
    let remote: number;
    try {
      remote = parseIpv4(stage === "out" ? destinationField : sourceField, "flow");
    } catch {
      return undefined;
    }
    const verdict = evaluateStage(stageRules(sw.acls, stage, ref), { protocol, remote, ...(destinationPort === undefined ? {} : { destinationPort }) }, sw.defaultDeny);
    rule = verdict.ruleId === undefined ? "default" : `acl:${verdict.ruleId}`;
  }
  return {
    verdict: source.verdict,
    stage: source.stage,
    ifname: ifnameField,
    port: ref === undefined ? undefined : formatPortRef(ref),
    protocol: protocolName(protocol),
    source: sourceField,
    destination: destinationField,
    sourcePort,
    destinationPort,
    packets: element.packets,
    bytes: element.bytes,
    firstSeen: firstSeenMs === undefined ? undefined : new Date(Math.min(firstSeenMs, lastSeenMs)).toISOString(),
    lastSeen: new Date(lastSeenMs).toISOString(),
    rule,
  };
}
