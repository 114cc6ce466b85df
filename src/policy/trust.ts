/**
 * Trust-level placement, the seed's best practice: VMs of different trust levels do not
 * share a host unless the host's configuration allows that pair. Pure.
 */

/** A VM as placement sees it. */
export interface TrustPlacementVm {
  readonly name: string;
  readonly trustLevel: string;
}

/** The decision: allowed, or refused with a sentence saying which VM conflicts and how to allow it. */
export type TrustPlacementDecision = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * May `candidate` start next to `running`? Yes when every running VM has the same trust
 * level, or when each differing pair is in `allowedPairs` (pairs are unordered). A running
 * entry with the candidate's own name is ignored (a restart does not conflict with itself).
 *
 * @example
 * checkTrustPlacement({ name: "web", trustLevel: "untrusted" }, [{ name: "db", trustLevel: "trusted" }], [])
 * // { ok: false, reason: 'VM "web" has trust level "untrusted", but VM "db" already running on this host has "trusted"; …' }
 */
export function checkTrustPlacement(
  candidate: TrustPlacementVm,
  running: readonly TrustPlacementVm[],
  allowedPairs: readonly (readonly [string, string])[],
): TrustPlacementDecision {
  const allowed = (a: string, b: string): boolean =>
    allowedPairs.some(([x, y]) => (x === a && y === b) || (x === b && y === a));
  for (const vm of running) {
    if (vm.name === candidate.name || vm.trustLevel === candidate.trustLevel) continue;
    if (allowed(candidate.trustLevel, vm.trustLevel)) continue;
    return {
      ok: false,
      reason:
        `VM "${candidate.name}" has trust level "${candidate.trustLevel}", but VM "${vm.name}" already running on this host has "${vm.trustLevel}"; ` +
        `VMs of different trust levels do not share a host unless the host configuration allows the pair ["${candidate.trustLevel}", "${vm.trustLevel}"]`,
    };
  }
  return { ok: true };
}
