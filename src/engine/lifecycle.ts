/**
 * A VM's lifecycle, decided from QMP events and the worker's exit, never from what the
 * guest prints. Pure: `step()` takes the state and one input and returns the next state
 * plus the QMP commands to send; the worker module does the sending.
 */

export type VmState = "starting" | "running" | "paused" | "stopped";

/** How a VM ended; `exitCode` in the CLI maps each kind to a documented code. */
export type Outcome =
  | { readonly kind: "poweroff" }
  | { readonly kind: "guest-reset" }
  | { readonly kind: "reset-loop"; readonly resets: number; readonly windowMs: number }
  | { readonly kind: "guest-panic" }
  | { readonly kind: "internal-error" }
  | { readonly kind: "hang"; readonly timeoutMs: number; readonly waitedFor: string }
  | { readonly kind: "stopped"; readonly how: "graceful" | "forced" | "killed" | "detached" }
  | { readonly kind: "worker-exit"; readonly exitCode: number | null; readonly signal: string | null; readonly stderr: string };

export type LifecycleInput =
  | { readonly kind: "qmp-event"; readonly event: string; readonly data: Readonly<Record<string, unknown>> }
  | { readonly kind: "status"; readonly status: string }
  | { readonly kind: "ready" }
  | { readonly kind: "boot-timeout"; readonly timeoutMs: number; readonly waitedFor: string }
  | { readonly kind: "stop-requested"; readonly how: "graceful" | "forced" | "killed" | "detached" }
  | { readonly kind: "worker-exit"; readonly exitCode: number | null; readonly signal: string | null; readonly stderr: string };

/** A QMP command to send, or the worker to kill. */
export type LifecycleAction =
  | { readonly kind: "qmp"; readonly command: "system_reset" | "cont" | "quit" | "query-status" }
  | { readonly kind: "kill" };

export interface LifecyclePolicy {
  readonly onPanic: "exit" | "restart";
  /**
   * More resets than this within `resetWindowMs`, with the guest never ready in between,
   * is a reset loop (a triple-faulting guest).
   */
  readonly maxResets: number;
  readonly resetWindowMs: number;
}

export interface LifecycleState {
  readonly state: VmState;
  readonly ready: boolean;
  /** Times (ms) of recent guest resets, for reset-loop detection. */
  readonly resetTimesMs: readonly number[];
  /** Set once: the first reason the VM ends wins (a later QEMU exit does not overwrite it). */
  readonly outcome: Outcome | null;
  /** A stop Palisade asked for: the SHUTDOWN/exit that follows is expected. */
  readonly stopRequested: "graceful" | "forced" | "killed" | "detached" | null;
}

export const INITIAL_LIFECYCLE: LifecycleState = {
  state: "starting",
  ready: false,
  resetTimesMs: [],
  outcome: null,
  stopRequested: null,
};

interface Step {
  readonly next: LifecycleState;
  readonly actions: readonly LifecycleAction[];
}

const QUIT: LifecycleAction = { kind: "qmp", command: "quit" };

function end(state: LifecycleState, outcome: Outcome, actions: readonly LifecycleAction[] = []): Step {
  if (state.outcome !== null) return { next: state, actions: [] };
  return { next: { ...state, outcome }, actions };
}

function onShutdown(state: LifecycleState, reason: string): Step {
  if (state.stopRequested !== null) {
    // A graceful stop the guest did not honour in time ended with QEMU's quit: say so.
    const how = state.stopRequested === "graceful" && reason !== "guest-shutdown" ? "forced" : state.stopRequested;
    return end(state, { kind: "stopped", how });
  }
  switch (reason) {
    case "guest-shutdown":
      return end(state, { kind: "poweroff" });
    case "guest-reset":
      return end(state, { kind: "guest-reset" });
    case "guest-panic":
      return end(state, { kind: "guest-panic" });
    default:
      // host-signal, host-qmp-quit from someone else, host-error…: the worker was stopped
      // by something other than the guest or Palisade; its exit tells the rest.
      return { next: state, actions: [] };
  }
}

/** Advances the lifecycle by one input at time `nowMs`. */
export function step(state: LifecycleState, input: LifecycleInput, policy: LifecyclePolicy, nowMs: number): Step {
  switch (input.kind) {
    case "ready":
      return { next: { ...state, ready: true, state: state.state === "starting" ? "running" : state.state }, actions: [] };
    case "boot-timeout":
      if (state.ready || state.outcome !== null) return { next: state, actions: [] };
      return end(state, { kind: "hang", timeoutMs: input.timeoutMs, waitedFor: input.waitedFor }, [{ kind: "kill" }]);
    case "stop-requested":
      return { next: { ...state, stopRequested: state.stopRequested ?? input.how }, actions: [] };
    case "status":
      // QEMU pauses forever after "KVM internal error"; only query-status tells it apart.
      if (input.status === "internal-error") return end(state, { kind: "internal-error" }, [QUIT]);
      return { next: state, actions: [] };
    case "worker-exit": {
      const stopped = { ...state, state: "stopped" as const };
      if (state.outcome !== null) return { next: stopped, actions: [] };
      if (state.stopRequested !== null) return end(stopped, { kind: "stopped", how: state.stopRequested });
      return end(stopped, { kind: "worker-exit", exitCode: input.exitCode, signal: input.signal, stderr: input.stderr });
    }
    case "qmp-event":
      return onQmpEvent(state, input.event, input.data, policy, nowMs);
  }
}

function onQmpEvent(
  state: LifecycleState,
  event: string,
  data: Readonly<Record<string, unknown>>,
  policy: LifecyclePolicy,
  nowMs: number,
): Step {
  switch (event) {
    case "SHUTDOWN":
      return onShutdown(state, typeof data.reason === "string" ? data.reason : "");
    case "STOP":
      return { next: { ...state, state: "paused" }, actions: [{ kind: "qmp", command: "query-status" }] };
    case "RESUME":
      return { next: { ...state, state: state.ready ? "running" : state.state === "paused" ? "running" : state.state }, actions: [] };
    case "GUEST_PANICKED":
      if (policy.onPanic === "exit") return end(state, { kind: "guest-panic" }, [QUIT]);
      // QEMU paused the guest (-action panic=pause); restart it in place.
      return { next: { ...state, ready: false }, actions: [{ kind: "qmp", command: "system_reset" }, { kind: "qmp", command: "cont" }] };
    case "RESET": {
      if (data.guest !== true) return { next: state, actions: [] };
      // A guest that reached its ready marker since the last reset rebooted on purpose (a
      // user's `reboot`); only resets with no ready boot between them make a loop.
      const history = state.ready ? [] : state.resetTimesMs;
      const recent = [...history.filter((t) => nowMs - t < policy.resetWindowMs), nowMs];
      const next = { ...state, ready: false, resetTimesMs: recent };
      if (recent.length > policy.maxResets) {
        return end(next, { kind: "reset-loop", resets: recent.length, windowMs: policy.resetWindowMs }, [QUIT]);
      }
      return { next, actions: [] };
    }
    default:
      return { next: state, actions: [] };
  }
}

/** One line describing an outcome, for the CLI and the event log. */
export function describeOutcome(outcome: Outcome): string {
  switch (outcome.kind) {
    case "poweroff":
      return "guest powered off";
    case "guest-reset":
      return "guest reset (--on-reboot exit)";
    case "reset-loop":
      return `guest reset ${outcome.resets} times within ${outcome.windowMs / 1000} s (triple fault or reset loop); stopped`;
    case "guest-panic":
      return "guest kernel panicked (pvpanic)";
    case "internal-error":
      return "KVM internal error: the accelerator could not run the guest; worker stopped";
    case "hang":
      return `guest hung: no ${outcome.waitedFor} within ${outcome.timeoutMs / 1000} s; worker killed`;
    case "stopped":
      return outcome.how === "detached" ? "detached from the console; VM stopped" : `VM stopped (${outcome.how})`;
    case "worker-exit": {
      const how = outcome.signal !== null ? `killed by ${outcome.signal}` : `exited with code ${outcome.exitCode ?? "?"}`;
      return `worker (QEMU) ${how}${outcome.stderr === "" ? "" : `: ${outcome.stderr}`}`;
    }
  }
}
