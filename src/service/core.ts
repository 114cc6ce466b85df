/**
 * The service's state and the operations on it, without HTTP: the store, the policy, the
 * audit log, the runtime, and the VM lifecycle orchestration (state in the store first,
 * then the worker, then the outcome), so that a crash at any point leaves the store
 * consistent and reconcile() repairs what is in flight.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { AuditLog, type AuditEntry } from "../authz/index.js";
import { PalisadeError } from "../util/errors.js";
import { assertCallerMayUseFiles } from "./engine-spec.js";
import { ConflictError, NotFoundError, ValidationError } from "./errors.js";
import { HostUsers } from "./host-identity.js";
import {
  checkTransition,
  notYetError,
  unavailableRuntime,
  type RuntimeStatus,
  type VmAction,
  type VmRuntime,
  type VmState,
} from "./lifecycle.js";
import type { DataDirPaths } from "./paths.js";
import { autostartPlan, decideRestart, GAVE_UP } from "./restart-policy.js";
import { startCheckpointer, type Checkpointer } from "./store/checkpointer.js";
import { openStore } from "./store/database.js";
import { PolicyStore } from "./store/policy-store.js";
import { VmStore, type VmRecord } from "./store/vm-store.js";

/**
 * How long a read-only request's audit entry waits for others to share its commit. It
 * bounds the latency this adds; under load the window fills long before it ends.
 */
export const GROUP_COMMIT_WINDOW_MS = 1;

/** Options of {@link ServiceCore}. */
export interface CoreOptions {
  readonly paths: DataDirPaths;
  readonly runtime: VmRuntime;
  /** `false` skips `decide()` (benchmarks only; never exposed on the command line). */
  readonly authorize: boolean;
  readonly hostUsers?: HostUsers;
  /** Graceful stop timeout before a forced stop. */
  readonly stopTimeoutMs?: number;
}

interface Supervision {
  readonly attempts: number;
  readonly lastStartMs: number | null;
  /** The timer of a scheduled restart. */
  readonly pending: NodeJS.Timeout | null;
}

/** The service minus its HTTP front. */
export class ServiceCore {
  readonly db: Database.Database;
  readonly vms: VmStore;
  readonly policies: PolicyStore;
  readonly audit: AuditLog;
  readonly hostUsers: HostUsers;
  readonly runtime: VmRuntime;
  readonly authorize: boolean;
  readonly paths: DataDirPaths;
  readonly startedAt = new Date();
  readonly #stopTimeoutMs: number;
  readonly #checkpointer: Checkpointer;
  #flushScheduled = false;
  #queue: { entry: AuditEntry; resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** VMs with a lifecycle action in flight in this process. */
  readonly #busy = new Map<string, VmAction>();
  /** Per VM: restarts of the current series, its worker's start time, a pending restart. */
  readonly #supervision = new Map<string, Supervision>();
  /** Pending autostarts and restarts. */
  readonly #timers = new Set<NodeJS.Timeout>();
  #closing = false;

  constructor(options: CoreOptions) {
    this.paths = options.paths;
    this.db = openStore(options.paths.database);
    this.#checkpointer = startCheckpointer(options.paths.database);
    this.vms = new VmStore(this.db);
    this.policies = new PolicyStore(this.db);
    this.audit = new AuditLog(this.db);
    this.hostUsers = options.hostUsers ?? new HostUsers();
    this.runtime = options.runtime;
    this.authorize = options.authorize;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 30_000;
    options.runtime.onExit?.((runDir, status) => {
      const vm = this.vms.list().find((v) => this.runDir(v) === runDir);
      if (vm === undefined) return;
      this.#recordState(vm, status.state, status.exitReason ?? null);
      // An exit during an action of this process is that action's to report.
      if (!this.#busy.has(vm.name)) this.#superviseExit(vm.name, status.state, status.exitReason ?? null);
    });
  }

  /** `<data-dir>/vms/<id>/`. */
  runDir(vm: VmRecord): string {
    return join(this.paths.vmsDir, vm.id);
  }

  /**
   * Runs `fn` in one store transaction, after the audit entries still queued (so the
   * chain keeps the order in which requests were answered).
   */
  transaction<T>(fn: () => T): T {
    const batch = this.#queue;
    this.#queue = [];
    let result: T;
    try {
      result = this.db.transaction(() => {
        this.audit.appendMany(batch.map((item) => item.entry));
        return fn();
      })();
    } catch (error: unknown) {
      this.policies.invalidate();
      this.vms.invalidate();
      // The queued entries were rolled back with fn's changes: queue them again.
      if (batch.length > 0) {
        this.#queue = [...batch, ...this.#queue];
        this.#scheduleFlush();
      }
      throw error;
    }
    for (const item of batch) item.resolve();
    return result;
  }

  /** Appends a request or event to the audit log now (inside the caller's transaction, if any). */
  record(entry: AuditEntry): void {
    this.audit.append(entry);
  }

  /**
   * Queues the audit entry of a request that changed nothing and resolves once it is
   * committed (group commit: one transaction for every entry queued in the same turn of
   * the event loop). The caller answers only after that, so no answered request lacks its
   * entry, even after a kill -9.
   */
  recordQueued(entry: AuditEntry): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ entry, resolve, reject });
      this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // A commit costs 100-300 µs here, whatever its size: wait a little for company.
    setTimeout(() => {
      this.#flushScheduled = false;
      if (this.#queue.length === 0) return;
      const batch = this.#queue;
      this.#queue = [];
      try {
        this.audit.appendMany(batch.map((item) => item.entry));
      } catch (error: unknown) {
        for (const item of batch) item.reject(error);
        return;
      }
      for (const item of batch) item.resolve();
    }, GROUP_COMMIT_WINDOW_MS);
  }

  #recordState(vm: VmRecord, state: VmState, reason: string | null): void {
    if (vm.state === state) return;
    const time = new Date().toISOString();
    this.transaction(() => {
      this.vms.setState(vm.name, state, reason, time);
      this.record({
        time,
        kind: "event",
        principal: "system",
        uid: null,
        operation: "vm.state",
        scope: vm.scope,
        vm: vm.name,
        decision: "none",
        result: `${vm.state}->${state}`,
        detail: reason,
      });
    });
  }

  /**
   * Finds again the workers of VMs the store says are not stopped (after a restart or a
   * crash of the service) and records what it finds.
   */
  async reconcile(): Promise<void> {
    for (const vm of this.vms.list()) {
      if (vm.state === "stopped") continue;
      if (vm.state === "crashed") {
        // A restart pending when the previous service stopped is made now (a new series);
        // one whose policy had given up stays crashed.
        const reason = vm.stateReason ?? "crashed";
        if (!reason.includes(GAVE_UP))
          this.#superviseExit(vm.name, "crashed", reason.replace(/; restart \d+ of \d+ in [\d.]+ s$/, ""));
        continue;
      }
      let status: RuntimeStatus | null;
      try {
        status = await this.runtime.attach(this.runDir(vm), vm.name);
      } catch (error: unknown) {
        status = {
          state: "crashed",
          exitReason: `cannot attach to worker: ${error instanceof Error ? error.message : String(error)}`,
        };
      }
      const state = status?.state ?? "stopped";
      const reason = status === null ? "no worker found at service start" : (status.exitReason ?? null);
      this.#recordState(vm, state, reason);
      if (state === "crashed" || state === "stopped") this.#superviseExit(vm.name, state, reason);
    }
  }

  /**
   * Starts the VMs marked autostart that are not running (call after {@link reconcile},
   * so that workers which survived the service are not started twice), each after its
   * `autostartDelaySeconds`. A failure is audited and does not stop the service.
   */
  autostart(): void {
    const pending = new Set(
      [...this.#supervision].filter(([, s]) => s.pending !== null).map(([name]) => name),
    );
    const plan = autostartPlan(
      this.vms.list().map((vm) => ({ ...vm.spec, name: vm.name, state: vm.state })),
      pending,
    );
    for (const { name, delayMs } of plan) {
      this.#later(delayMs, () => this.#systemStart(name, "vm.autostart"));
    }
  }

  /** The VM's current series of automatic restarts (for the API). */
  restartsOf(name: string): { attempts: number; pending: boolean } {
    const s = this.#supervision.get(name);
    return { attempts: s?.attempts ?? 0, pending: (s?.pending ?? null) !== null };
  }

  #later(delayMs: number, fn: () => Promise<void>): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#closing) void fn();
    }, delayMs);
    this.#timers.add(timer);
    return timer;
  }

  /** A worker ended on its own (or was found dead at service start): its restart policy decides. */
  #superviseExit(name: string, state: VmState, reason: string | null): void {
    if (state !== "crashed" && state !== "stopped") return;
    const vm = this.vms.find(name);
    if (vm === undefined || this.#closing) return;
    const history = this.#supervision.get(name) ?? { attempts: 0, lastStartMs: null, pending: null };
    const decision = decideRestart(vm.spec.restartPolicy, state, history, Date.now());
    if (!decision.restart) {
      if (decision.gaveUp) {
        this.#supervision.set(name, { ...history, pending: null });
        this.#audit(vm, "vm.restart", "gave-up", `${reason ?? "crashed"}; ${decision.reason}`, true);
      }
      return;
    }
    const why = `${reason ?? "crashed"}; restart ${decision.attempt} of ${decision.of} in ${decision.delayMs / 1000} s`;
    this.#audit(vm, "vm.restart", "scheduled", why, true);
    const timer = this.#later(decision.delayMs, () => this.#systemStart(name, "vm.restart"));
    this.#supervision.set(name, {
      attempts: decision.attempt,
      lastStartMs: history.lastStartMs,
      pending: timer,
    });
  }

  /** A start the service makes on its own (autostart, restart policy); audited, never thrown. */
  async #systemStart(name: string, operation: "vm.autostart" | "vm.restart"): Promise<void> {
    const supervision = this.#supervision.get(name);
    if (supervision !== undefined) this.#supervision.set(name, { ...supervision, pending: null });
    const vm = this.vms.find(name);
    // Deleted, or started by someone meanwhile: nothing to do.
    if (vm === undefined || (vm.state !== "stopped" && vm.state !== "crashed")) return;
    try {
      await this.lifecycle(name, "start", "system");
      this.#audit(vm, operation, "ok", null);
    } catch (error: unknown) {
      if (this.#closing) return;
      const message = error instanceof Error ? error.message : String(error);
      process.stderr.write(`palisade service: ${operation} of VM ${name} failed: ${message}\n`);
      try {
        this.#audit(vm, operation, error instanceof PalisadeError ? error.code : "failed", message);
        // A start that failed on its own (not one raced by a user's action) counts as a crash.
        const raced = error instanceof ConflictError || error instanceof NotFoundError;
        if (operation === "vm.restart" && !raced && this.vms.find(name) !== undefined)
          this.#superviseExit(name, "crashed", `restart failed: ${message}`);
      } catch (auditError: unknown) {
        process.stderr.write(
          `palisade service: cannot audit ${operation} of ${name}: ${String(auditError)}\n`,
        );
      }
    }
  }

  /**
   * Audits a supervision event by `system`; with `asReason`, the VM's state becomes
   * `crashed` with `detail` as its reason, in the same transaction.
   */
  #audit(vm: VmRecord, operation: string, result: string, detail: string | null, asReason = false): void {
    const time = new Date().toISOString();
    this.transaction(() => {
      if (asReason) this.vms.setState(vm.name, "crashed", detail, time);
      this.record({
        time,
        kind: "event",
        principal: "system",
        uid: null,
        operation,
        scope: vm.scope,
        vm: vm.name,
        decision: "none",
        result,
        detail,
      });
    });
  }

  /**
   * Runs a lifecycle action: checks the state (409 with the current state otherwise),
   * records the transition, calls the runtime, records the outcome. On failure the VM
   * returns to the state it was in, or to what the runtime reports. `by` says who asked
   * (a user's start begins a new series of automatic restarts); `timings` gets the time
   * spent in the runtime (`runtime`, ms).
   *
   * @throws {ConflictError} `vm.busy` or `vm.bad-state`
   */
  async lifecycle(
    name: string,
    action: Exclude<VmAction, "delete" | "reconfigure">,
    by: "user" | "system" = "user",
    timings?: Map<string, number>,
  ): Promise<VmRecord> {
    const vm = this.vms.get(name);
    if (this.runtime === unavailableRuntime) throw notYetError();
    const inFlight = this.#busy.get(name);
    if (inFlight !== undefined && action !== "kill") {
      throw new ConflictError(`VM ${name} is busy: ${inFlight} in progress`, "vm.busy", { state: vm.state });
    }
    const check = checkTransition(vm.state, action);
    if (!check.ok)
      throw new ConflictError(`Cannot ${action} VM ${name}: ${check.reason}`, "vm.bad-state", {
        state: vm.state,
      });
    if (action === "start") this.#assertFilesAllowed(vm);
    this.#busy.set(name, action);
    const runDir = this.runDir(vm);
    try {
      if (action === "start") mkdirSync(runDir, { recursive: true, mode: 0o700 });
      this.#recordState(vm, check.during, `${action} requested`);
      let status: RuntimeStatus;
      try {
        const called = performance.now();
        try {
          status = await this.#call(action, vm, runDir);
        } finally {
          timings?.set("runtime", performance.now() - called);
        }
      } catch (error: unknown) {
        const now = await this.runtime.status(runDir).catch(() => null);
        this.#recordState(this.vms.get(name), now?.state ?? vm.state, `${action} failed`);
        throw error;
      }
      this.#recordState(this.vms.get(name), status.state, status.exitReason ?? null);
      if (action === "start") {
        // A start asked for by a user begins a new series of automatic restarts.
        const before = this.#supervision.get(name);
        if (before?.pending != null) clearTimeout(before.pending);
        this.#supervision.set(name, {
          attempts: by === "user" ? 0 : (before?.attempts ?? 0),
          lastStartMs: Date.now(),
          pending: null,
        });
      }
      return this.vms.get(name);
    } finally {
      if (this.#busy.get(name) === action) this.#busy.delete(name);
    }
  }

  /**
   * The files were checked against the caller who named them; check again now, with the
   * same uid, in case a file was swapped (say, for a symlink to /etc/shadow) since.
   *
   * @throws {ValidationError} `vm.path-denied`
   */
  #assertFilesAllowed(vm: VmRecord): void {
    const uid = vm.spec.pathsCheckedFor;
    if (uid === undefined) {
      throw new ValidationError(
        `VM ${vm.name}'s files were never checked against the caller who named them; set its kernel again (PATCH)`,
        "body.kernel",
        "vm.path-denied",
      );
    }
    assertCallerMayUseFiles(vm.spec, { uid, gids: this.hostUsers.gidsOf(uid) });
  }

  #call(
    action: Exclude<VmAction, "delete" | "reconfigure">,
    vm: VmRecord,
    runDir: string,
  ): Promise<RuntimeStatus> {
    switch (action) {
      case "start":
        return this.runtime.start({ id: vm.id, name: vm.name, spec: vm.spec, runDir });
      case "stop":
        return this.runtime.stop(runDir, { timeoutMs: this.#stopTimeoutMs });
      case "kill":
        return this.runtime.kill(runDir);
      case "pause":
        return this.runtime.pause(runDir);
      case "resume":
        return this.runtime.resume(runDir);
    }
  }

  /** Whether a lifecycle action is in flight for `name` in this process. */
  isBusy(name: string): boolean {
    return this.#busy.has(name);
  }

  /** Cancels pending autostarts and restarts, stops the checkpointer and closes the store. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    await this.#checkpointer.stop();
    this.db.close();
  }
}
