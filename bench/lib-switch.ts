/** Shared by the switch benchmarks (bench/switch.ts, bench/switch-guests.ts). */
import type { AclRuleInput } from "../src/network/index.js";

/**
 * `count` ACL rules that look like a real block list: distinct hosts and services, a few
 * allow runs. All in 172.16.0.0/12, never the benchmarks' own 10.9x.0.0/24 traffic, so
 * every packet is looked up against every map and then passes.
 */
export function benchRules(count: number): AclRuleInput[] {
  return Array.from({ length: count }, (_, index): AclRuleInput => ({
    direction: index % 2 === 0 ? "in" : "out",
    action: index % 1000 === 999 ? "allow" : "deny",
    protocol: index % 3 === 0 ? "udp" : "tcp",
    remote: { address: 0xac100000 + index, prefixLength: 32 },
    portRange: { first: 1000 + (index % 5000), last: 1000 + (index % 5000) },
    priority: 100 + Math.floor(index / 1000),
  }));
}
