/**
 * VM lifecycle: the states a VM goes through, which action is allowed in which state
 * (pure, so every pair is unit-tested), and the `VmRuntime` interface through which the
 * service drives workers. The service never starts QEMU itself: the engine's detached
 * per-VM worker implements `VmRuntime` (`engine-runtime.ts`).
 */
import { NotSupportedError } from "./errors.js";
import type { VmSpec } from "./api/schemas.js";

/** Where a VM is; `starting` and `stopping` are transitions in progress. */
export type VmState = "stopped" | "starting" | "running" | "paused" | "stopping" | "crashed";

/** What a caller asks of a VM. */
export type VmAction = "start" | "stop" | "kill" | "pause" | "resume" | "delete" | "reconfigure";

/** The answer of {@link checkTransition}. */
export type TransitionCheck =
  { readonly ok: true; readonly during: VmState } | { readonly ok: false; readonly reason: string };

const ALLOWED: Readonly<Record<VmAction, readonly VmState[]>> = {
  start: ["stopped", "crashed"],
  stop: ["running", "paused"],
  // A kill is the way out of any state with a worker, a stuck transition included.
  kill: ["starting", "running", "paused", "stopping"],
  pause: ["running"],
  resume: ["paused"],
  delete: ["stopped", "crashed"],
  // A definition can change while the VM runs; the change applies at the next start.
  reconfigure: ["stopped", "crashed", "running", "paused"],
};

const DURING: Readonly<Record<VmAction, (from: VmState) => VmState>> = {
  start: () => "starting",
  stop: () => "stopping",
  kill: () => "stopping",
  pause: () => "running",
  resume: () => "paused",
  delete: (from) => from,
  reconfigure: (from) => from,
};

/**
 * Whether `action` may run on a VM in `state`, and the state it is in meanwhile.
 * A refusal becomes a 409 carrying the current state.
 *
 * @example
 * checkTransition("running", "delete"); // { ok: false, reason: "VM is running; stop it first" }
 */
export function checkTransition(state: VmState, action: VmAction): TransitionCheck {
  if (ALLOWED[action].includes(state)) return { ok: true, during: DURING[action](state) };
  const hint =
    action === "delete"
      ? "; stop it first"
      : state === "starting" || state === "stopping"
        ? "; wait for it or kill it"
        : "";
  return { ok: false, reason: `VM is ${state}${hint}` };
}

/** What a runtime reports about one worker. */
export interface RuntimeStatus {
  readonly state: "running" | "paused" | "stopped" | "crashed";
  readonly pid?: number;
  /** Why the worker ended: `poweroff`, `guest-panic`, `killed by signal 9`, … */
  readonly exitReason?: string;
}

/** What the service hands a runtime to start a VM. */
export interface RuntimeVm {
  readonly id: string;
  readonly name: string;
  readonly spec: VmSpec;
  /** `<data-dir>/vms/<id>/`: the worker's sockets, logs, status file. */
  readonly runDir: string;
}

/**
 * The service's view of the VM engine: one detached worker per VM, found again after a
 * service restart by its run directory (no Node process per VM).
 */
export interface VmRuntime {
  /** Starts the worker and resolves once it runs (or fails to). */
  start(vm: RuntimeVm): Promise<RuntimeStatus>;
  /** Graceful stop: ACPI power button, then forced after `timeoutMs`. */
  stop(runDir: string, options: { readonly timeoutMs: number }): Promise<RuntimeStatus>;
  kill(runDir: string): Promise<RuntimeStatus>;
  pause(runDir: string): Promise<RuntimeStatus>;
  resume(runDir: string): Promise<RuntimeStatus>;
  status(runDir: string): Promise<RuntimeStatus>;
  /**
   * Re-attaches to a worker left running by a previous service; `null` when there is none.
   * A worker found dead is reported with its exit reason and what it left behind removed
   * (`vmName` names its jail's cgroups and uid).
   */
  attach(runDir: string, vmName?: string): Promise<RuntimeStatus | null>;
  /** Called for every state change the runtime observes on its own (crash, guest poweroff). */
  onExit?(listener: (runDir: string, status: RuntimeStatus) => void): void;
  /** The serial console of a running worker the runtime holds; `null` when there is none. */
  openConsole?(runDir: string): ConsoleTap | null;
}

/** One running VM's serial console, as the service holds it. */
export interface ConsoleTap {
  /** The most recent output (bounded ring), oldest first. */
  recent(): Buffer;
  /** Live output from now on; `end` when the VM stops. Returns the unsubscribe function. */
  subscribe(data: (chunk: Buffer) => void, end: () => void): () => void;
  /** Sends bytes to the guest. */
  write(bytes: Buffer): void;
}

/** The 501 every lifecycle action answers before the engine is wired. */
export function notYetError(): NotSupportedError {
  return new NotSupportedError(
    "VM lifecycle is not available yet: the VM engine is not wired to the service",
    "service.no-runtime",
  );
}

/** The runtime until the engine is wired: every action answers 501, and no worker is ever found. */
export const unavailableRuntime: VmRuntime = {
  start: () => Promise.reject(notYetError()),
  stop: () => Promise.reject(notYetError()),
  kill: () => Promise.reject(notYetError()),
  pause: () => Promise.reject(notYetError()),
  resume: () => Promise.reject(notYetError()),
  status: () => Promise.resolve({ state: "stopped" }),
  attach: () => Promise.resolve(null),
};
