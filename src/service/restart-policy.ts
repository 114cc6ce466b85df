/**
 * Supervision decisions (pure): whether a VM whose worker ended is started again (its
 * restart policy, like libvirt's `on_crash` or Hyper-V's automatic recovery), after how
 * long, and when a VM marked autostart is started once the service is up.
 */
import { byCodeUnits } from "../util/order.js";

/** A VM's restart policy as stored; absent means `never`. */
export interface RestartPolicy {
  /** `never`: a crashed VM stays crashed. `on-failure`: a crash (not a poweroff or a requested stop) restarts it. */
  readonly mode: "never" | "on-failure";
  /** Restarts in a row before giving up; default {@link DEFAULT_MAX_RETRIES}. */
  readonly maxRetries?: number | undefined;
  /** Delay before the first restart, doubled for each next one (at most {@link MAX_BACKOFF_MS}); default 1 s. */
  readonly backoffSeconds?: number | undefined;
}

export const DEFAULT_MAX_RETRIES = 3;
export const DEFAULT_BACKOFF_SECONDS = 1;
/** The backoff never grows beyond 5 minutes. */
export const MAX_BACKOFF_MS = 300_000;
/** A run that lasted this long before crashing starts a new series: its crash is restart 1 again. */
export const STABLE_RUN_MS = 600_000;

/** How a given-up series is named in the VM's state reason (a service restart leaves it crashed). */
export const GAVE_UP = "restart policy gave up";

/** The restarts of the current series of one VM. */
export interface RestartHistory {
  /** Restarts made since the last start a user asked for (or since a stable run). */
  readonly attempts: number;
  /** When the worker that just ended was started (ms since the epoch); null when unknown. */
  readonly lastStartMs: number | null;
}

/** The answer of {@link decideRestart}. */
export type RestartDecision =
  | { readonly restart: true; readonly attempt: number; readonly of: number; readonly delayMs: number }
  | { readonly restart: false; readonly reason: string; readonly gaveUp: boolean };

/**
 * Whether a VM that ended in `state` is restarted under `policy`, which attempt it is and
 * after which delay. Only a crash restarts (a guest poweroff and a requested stop or kill
 * end as `stopped`).
 *
 * @example
 * decideRestart({ mode: "on-failure", maxRetries: 2 }, "crashed", { attempts: 0, lastStartMs: null }, 0);
 * // { restart: true, attempt: 1, of: 2, delayMs: 1000 }
 */
export function decideRestart(
  policy: RestartPolicy | undefined,
  state: "stopped" | "crashed",
  history: RestartHistory,
  nowMs: number,
): RestartDecision {
  if (state !== "crashed") return { restart: false, reason: "it stopped without a crash", gaveUp: false };
  if (policy === undefined || policy.mode === "never")
    return { restart: false, reason: "its restart policy is never", gaveUp: false };
  const max = policy.maxRetries ?? DEFAULT_MAX_RETRIES;
  const stable = history.lastStartMs !== null && nowMs - history.lastStartMs >= STABLE_RUN_MS;
  const done = stable ? 0 : history.attempts;
  if (done >= max)
    return {
      restart: false,
      reason: `${GAVE_UP} after ${done} restart${done === 1 ? "" : "s"}`,
      gaveUp: true,
    };
  const base = (policy.backoffSeconds ?? DEFAULT_BACKOFF_SECONDS) * 1000;
  return { restart: true, attempt: done + 1, of: max, delayMs: Math.min(MAX_BACKOFF_MS, base * 2 ** done) };
}

/** One VM as {@link autostartPlan} sees it. */
export interface AutostartCandidate {
  readonly name: string;
  readonly autostart: boolean;
  /** Seconds after the service start; default 0. */
  readonly autostartDelaySeconds?: number;
  readonly state: string;
}

/**
 * The VMs to start once the service is up (after it re-attached the workers that survived
 * it) and when, by delay then name: those marked autostart that are not already running
 * and not `skip`ped (a restart is already pending for them).
 */
export function autostartPlan(
  vms: readonly AutostartCandidate[],
  skip: ReadonlySet<string> = new Set(),
): { name: string; delayMs: number }[] {
  return vms
    .filter((vm) => vm.autostart && (vm.state === "stopped" || vm.state === "crashed") && !skip.has(vm.name))
    .map((vm) => ({ name: vm.name, delayMs: (vm.autostartDelaySeconds ?? 0) * 1000 }))
    .sort((a, b) => a.delayMs - b.delayMs || byCodeUnits(a.name, b.name));
}
