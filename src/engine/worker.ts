/**
 * The per-VM worker: one QEMU process, its run directory, its QMP session and its
 * console. Launched attached (it dies with the process that started it) or detached
 * (it outlives it and is found again through its run directory).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync, openSync, closeSync, readFileSync, symlinkSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import { constants } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { PalisadeError, errorMessage } from "../util/errors.js";
import { QmpClient, type QmpEvent } from "./qmp/client.js";
import {
  INITIAL_LIFECYCLE,
  describeOutcome,
  step,
  type LifecycleAction,
  type LifecycleInput,
  type LifecyclePolicy,
  type LifecycleState,
  type Outcome,
  type VmState,
} from "./lifecycle.js";
import type { WorkerPaths } from "./qemu-argv.js";
import {
  createRunDir,
  isWorkerAlive,
  readWorkerRecord,
  removeRunDir,
  writeWorkerRecord,
  type WorkerRecord,
} from "./run-dir.js";
import type { Accel } from "./accel.js";
import type { LaunchJail } from "./worker-jail.js";
import type { VmSpec } from "./vm-spec.js";

/** QEMU failed before its QMP socket answered: its stderr says why. */
export class WorkerStartError extends PalisadeError {
  readonly code = "worker.start-failed";
}

/** The VM is not in a state that allows the operation. */
export class WorkerStateError extends PalisadeError {
  readonly code = "worker.bad-state";
}

/** A lifecycle event, as written by `--events` and the service's audit. */
export interface WorkerEvent {
  readonly timeMs: number;
  readonly vm: string;
  readonly event: "started" | "ready" | "paused" | "resumed" | "reset" | "panic" | "exited" | "stop-requested";
  readonly detail?: string;
}

export interface WorkerEvents {
  event: [WorkerEvent];
  /** Bytes the guest wrote on its serial console (only when Palisade holds the console). */
  console: [Buffer];
}

export interface LaunchRequest {
  readonly spec: VmSpec;
  readonly accel: Accel;
  readonly qemuBinary: string;
  /** The QEMU argv (without the binary), from qemuArgv(). */
  readonly qemuArgv: readonly string[];
  readonly paths: WorkerPaths;
  /** Detached workers outlive the launching process; attached ones die with it. */
  readonly detached: boolean;
  /** Host file descriptors handed to the worker as fds 3, 4, … (TAPs). */
  readonly passFds?: readonly number[];
  /** The worker's jail; without one QEMU runs as Palisade's user (the host could not jail it). */
  readonly jail?: LaunchJail | null;
  /** Disks the worker holds, as real paths, for the one-VM-per-disk check. */
  readonly diskRealPaths: readonly { path: string; readonly: boolean }[];
}

// Six guest resets in a minute is a crash loop, not a user rebooting (a TCG boot takes ~2 s).
const RESET_LOOP: Omit<LifecyclePolicy, "onPanic"> = { maxResets: 5, resetWindowMs: 60_000 };
const QMP_READY_TIMEOUT_MS = 15_000;
const STDERR_TAIL_BYTES = 8192;

/** The last meaningful lines of QEMU's stderr, without its program-name prefix. */
export function summarizeStderr(text: string): string {
  return text
    .split("\n")
    .map((line) => line.replace(/^qemu-system-x86_64: /, "").trim())
    .filter((line) => line !== "" && !line.startsWith("terminating on signal"))
    .slice(-3)
    .join("; ")
    .slice(0, 500);
}

/** A running (or just ended) worker. */
export class Worker extends EventEmitter<WorkerEvents> {
  readonly record: WorkerRecord;
  readonly outcome: Promise<Outcome>;
  readonly #qmp: QmpClient;
  readonly #child: ChildProcess | null;
  readonly #policy: LifecyclePolicy;
  #lifecycle: LifecycleState = INITIAL_LIFECYCLE;
  #console: Socket | null = null;
  #markerTail = "";
  #bootTimer: NodeJS.Timeout | null = null;
  #resolveOutcome!: (outcome: Outcome) => void;
  #stderrTail: () => string;
  #exitPoll: NodeJS.Timeout | null = null;
  #jail: LaunchJail | null = null;
  #released = false;

  private constructor(record: WorkerRecord, qmp: QmpClient, child: ChildProcess | null, stderrTail: () => string) {
    super();
    this.record = record;
    this.#qmp = qmp;
    this.#child = child;
    this.#stderrTail = stderrTail;
    this.#policy = { onPanic: record.spec.onPanic, ...RESET_LOOP };
    this.outcome = new Promise((resolve) => {
      this.#resolveOutcome = resolve;
    });
    qmp.on("event", (event: QmpEvent) => {
      this.#onQmpEvent(event);
    });
  }

  get name(): string {
    return this.record.name;
  }

  get state(): VmState {
    return this.#lifecycle.state;
  }

  get ready(): boolean {
    return this.#lifecycle.ready;
  }

  /**
   * Starts QEMU and waits until its QMP socket answers.
   * @throws {WorkerStartError} when QEMU exits or does not answer in time, with its stderr.
   */
  static async launch(request: LaunchRequest): Promise<Worker> {
    const { spec, paths } = request;
    createRunDir(paths.runDir);
    const command = [request.qemuBinary, ...request.qemuArgv];
    const jail = request.jail ?? null;
    try {
      await jail?.prepare();
    } catch (error: unknown) {
      await jail?.cleanup().catch(() => undefined);
      removeRunDir(paths.runDir);
      throw error;
    }
    const full = jail !== null ? jail.wrap(command) : attachedToParent(command, request.detached);
    const logFd = openSync(join(paths.runDir, "worker.log"), "a", 0o600);
    const passFds = request.passFds ?? [];
    let child: ChildProcess;
    try {
      child = spawn(full[0] ?? request.qemuBinary, full.slice(1), {
        detached: request.detached,
        // fds 3 and 4 belong to the jail (bwrap's status and seccomp program); passed fds start at 5.
        stdio: ["ignore", logFd, request.detached ? logFd : "pipe", "ignore", "ignore", ...passFds],
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" },
      });
    } finally {
      closeSync(logFd);
    }
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_TAIL_BYTES);
    });
    const stderrTail = (): string => (request.detached ? readLogTail(paths.runDir) : stderr);
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      child.once("exit", (code, signal) => {
        resolve({ code, signal });
      });
      child.once("error", () => {
        resolve({ code: null, signal: null });
      });
    });
    let qmp: QmpClient;
    try {
      qmp = await connectWhenReady(paths.qmpSocket, spec.name, exited);
    } catch (error: unknown) {
      child.kill("SIGKILL");
      await Promise.race([exited, sleep(2000)]);
      await jail?.cleanup().catch(() => undefined);
      removeRunDir(paths.runDir);
      const why = summarizeStderr(stderrTail());
      throw new WorkerStartError(`Worker of VM ${spec.name} failed to start: ${why === "" ? errorMessage(error) : why}`, {
        cause: error,
      });
    }
    if (child.pid === undefined) throw new WorkerStartError(`Worker of VM ${spec.name} has no pid`);
    const qemuPid = (await jail?.qemuPid()) ?? null;
    const record: WorkerRecord = {
      name: spec.name,
      uuid: spec.uuid,
      pid: child.pid,
      ...(qemuPid === null ? {} : { qemuPid }),
      jailed: jail !== null,
      startedAtMs: Date.now(),
      accel: request.accel,
      detached: request.detached,
      diskRealPaths: [...request.diskRealPaths],
      spec,
      paths,
    };
    writeWorkerRecord(record);
    if (spec.console.kind === "socket") symlinkSync(paths.consoleSocket, spec.console.path);
    if (request.detached) child.unref();
    const worker = new Worker(record, qmp, request.detached ? null : child, stderrTail);
    worker.#jail = jail;
    worker.#emit("started", `pid ${child.pid}, accelerator ${request.accel}`);
    if (request.detached) worker.#pollExit();
    else
      void exited.then(async ({ code, signal }) => {
        // QEMU writes its last events (SHUTDOWN and its reason) just before it exits:
        // read them all (the QMP socket closes after them) before judging the exit.
        const drained = new Promise<void>((resolve) => {
          if (qmp.closed) resolve();
          else qmp.once("close", resolve);
        });
        // An unref'd timer: waiting must not keep `palisade run` alive once QMP closed.
        await Promise.race([drained, new Promise<void>((resolve) => setTimeout(resolve, 2000).unref())]);
        worker.#onExit(code, signal);
      });
    qmp.on("close", () => {
      if (request.detached) worker.#checkExitSoon();
    });
    return worker;
  }

  /**
   * Finds a running worker again through its run directory (another process started it).
   * @throws {WorkerStateError} when no live worker is there.
   */
  static async attach(runDir: string): Promise<Worker> {
    const record = readWorkerRecord(runDir);
    if (record === null || !isWorkerAlive(record.pid, record.uuid)) {
      throw new WorkerStateError(`No running worker in ${runDir}`);
    }
    const qmp = await QmpClient.connect(record.paths.qmpSocket, record.name);
    const worker = new Worker(record, qmp, null, () => readLogTail(runDir));
    const status = (await qmp.execute("query-status")) as { status?: unknown };
    worker.#apply({ kind: "ready" });
    if (status.status === "paused") worker.#apply({ kind: "qmp-event", event: "STOP", data: {} });
    worker.#pollExit();
    qmp.on("close", () => {
      worker.#checkExitSoon();
    });
    return worker;
  }

  /**
   * Holds the serial console: watches for the ready marker, re-emits output as `console`
   * events and arms the boot watchdog. Call once, right after launch.
   */
  async holdConsole(): Promise<void> {
    const { spec } = this.record;
    const socket = await connectUnix(this.record.paths.consoleSocket, 5000);
    this.#console = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#watchForMarker(chunk);
      this.emit("console", chunk);
    });
    socket.on("error", () => undefined);
    const waitedFor = spec.readyMarker === undefined ? "console output" : `ready marker "${spec.readyMarker}"`;
    this.#bootTimer = setTimeout(() => {
      this.#apply({ kind: "boot-timeout", timeoutMs: spec.bootTimeoutMs, waitedFor });
    }, spec.bootTimeoutMs);
  }

  /** Arms the boot watchdog without holding the console (console on a user socket). */
  armBootWatchdogOnQmpOnly(): void {
    // Without the console Palisade cannot see readiness; the VM counts as ready once running.
    this.#apply({ kind: "ready" });
  }

  /**
   * Lets go of a running worker without stopping it: closes QMP and the console (QEMU
   * serves one client on each), so another process can `Worker.attach()` it. The outcome
   * of this object then never resolves.
   */
  release(): void {
    if (this.#bootTimer !== null) clearTimeout(this.#bootTimer);
    if (this.#exitPoll !== null) clearInterval(this.#exitPoll);
    this.#released = true;
    this.#console?.destroy();
    this.#qmp.close();
  }

  /** Sends bytes to the guest's serial console. */
  writeConsole(bytes: Buffer | string): void {
    this.#console?.write(bytes);
  }

  async pause(): Promise<void> {
    if (this.state !== "running") throw new WorkerStateError(`VM ${this.name} is ${this.state}, not running`);
    await this.#qmp.execute("stop");
  }

  async resume(): Promise<void> {
    if (this.state !== "paused") throw new WorkerStateError(`VM ${this.name} is ${this.state}, not paused`);
    await this.#qmp.execute("cont");
  }

  /**
   * Graceful stop: ACPI power button, then `quit` after `timeoutMs`, then SIGKILL.
   * Resolves with the VM's outcome.
   */
  async stop(timeoutMs = 30_000, how: "graceful" | "detached" = "graceful"): Promise<Outcome> {
    if (this.#lifecycle.outcome !== null || this.state === "stopped") return this.outcome;
    this.#apply({ kind: "stop-requested", how });
    this.#emit("stop-requested", how);
    if (how === "graceful") {
      await this.#qmp.execute("system_powerdown").catch(() => undefined);
      if (await this.#settlesWithin(timeoutMs)) return this.outcome;
    }
    await this.#qmp.execute("quit", undefined, 2000).catch(() => undefined);
    if (await this.#settlesWithin(3000)) return this.outcome;
    return this.kill();
  }

  /** SIGKILL of the worker; resolves with the outcome once it is gone. */
  async kill(): Promise<Outcome> {
    if (this.#lifecycle.stopRequested === null) this.#apply({ kind: "stop-requested", how: "killed" });
    // In a jail, QEMU is the jail's pid 1 under bwrap: kill both, QEMU first.
    for (const pid of [this.record.qemuPid, this.record.pid]) {
      try {
        if (pid !== undefined) process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    if (this.#child === null) this.#checkExitSoon();
    return this.outcome;
  }

  async #settlesWithin(timeoutMs: number): Promise<boolean> {
    const timeout = sleep(timeoutMs).then(() => false);
    return Promise.race([this.outcome.then(() => true), timeout]);
  }

  #watchForMarker(chunk: Buffer): void {
    if (this.#lifecycle.ready) return;
    const marker = this.record.spec.readyMarker;
    if (marker === undefined) {
      this.#markReady();
      return;
    }
    const text = this.#markerTail + chunk.toString("latin1");
    if (text.includes(marker)) this.#markReady();
    else this.#markerTail = text.slice(-marker.length);
  }

  #markReady(): void {
    if (this.#bootTimer !== null) clearTimeout(this.#bootTimer);
    this.#bootTimer = null;
    this.#markerTail = "";
    this.#apply({ kind: "ready" });
    this.#emit("ready");
  }

  #onQmpEvent(event: QmpEvent): void {
    switch (event.event) {
      case "STOP":
        this.#emit("paused");
        break;
      case "RESUME":
        this.#emit("resumed");
        break;
      case "RESET":
        if (event.data.guest === true) this.#emit("reset", typeof event.data.reason === "string" ? event.data.reason : undefined);
        break;
      case "GUEST_PANICKED":
        this.#emit("panic");
        break;
    }
    this.#apply({ kind: "qmp-event", event: event.event, data: event.data });
    if (event.event === "RESET" && event.data.guest === true && this.#lifecycle.outcome === null && this.#console !== null) {
      // A rebooted guest must reach its marker again within the boot timeout.
      const spec = this.record.spec;
      if (this.#bootTimer !== null) clearTimeout(this.#bootTimer);
      this.#bootTimer = setTimeout(() => {
        this.#apply({ kind: "boot-timeout", timeoutMs: spec.bootTimeoutMs, waitedFor: "ready marker after reset" });
      }, spec.bootTimeoutMs);
    }
  }

  #apply(input: LifecycleInput): void {
    const before = this.#lifecycle.outcome;
    const { next, actions } = step(this.#lifecycle, input, this.#policy, Date.now());
    this.#lifecycle = next;
    for (const action of actions) this.#perform(action);
    if (before === null && next.outcome !== null && next.state === "stopped") this.#finish(next.outcome);
  }

  #perform(action: LifecycleAction): void {
    if (action.kind === "kill") {
      void this.kill();
      return;
    }
    const sent = this.#qmp.execute(action.command, undefined, 3000);
    if (action.command === "query-status") {
      void sent.then(
        (reply) => {
          const status = (reply as { status?: unknown }).status;
          if (typeof status === "string") this.#apply({ kind: "status", status });
        },
        () => undefined,
      );
    } else {
      void sent.catch(() => undefined);
      if (action.command === "quit") {
        // A worker that ignores quit is killed.
        setTimeout(() => {
          if (this.state !== "stopped") void this.kill();
        }, 5000).unref();
      }
    }
  }

  #onExit(code: number | null, signal: string | null): void {
    if (this.state === "stopped") return;
    if (this.#exitPoll !== null) clearInterval(this.#exitPoll);
    // bwrap exits with 128 + N when the jailed QEMU dies of signal N.
    const jailSignal = this.record.jailed && code !== null && code > 128 ? signalName(code - 128) : null;
    this.#apply({
      kind: "worker-exit",
      exitCode: jailSignal === null ? code : null,
      signal: jailSignal ?? signal,
      stderr: summarizeStderr(this.#stderrTail()),
    });
    const outcome = this.#lifecycle.outcome;
    if (outcome !== null) this.#finish(outcome);
  }

  #finished = false;
  #finish(outcome: Outcome): void {
    if (this.#finished || this.state !== "stopped") return;
    this.#finished = true;
    if (this.#bootTimer !== null) clearTimeout(this.#bootTimer);
    this.#console?.destroy();
    this.#qmp.close();
    const jail = this.#jail;
    const done = (): void => {
      removeRunDir(this.record.paths.runDir);
      if (this.record.spec.console.kind === "socket") removeRunDir(this.record.spec.console.path);
      this.#emit("exited", describeOutcome(outcome));
      this.#resolveOutcome(outcome);
    };
    if (jail === null) done();
    else void jail.cleanup().catch(() => undefined).finally(done);
  }

  /** Without a child handle (detached or attached-to), exit is noticed by polling /proc. */
  #pollExit(): void {
    this.#exitPoll = setInterval(() => {
      this.#checkExit();
    }, 500);
    this.#exitPoll.unref();
  }

  #checkExitSoon(): void {
    setTimeout(() => {
      this.#checkExit();
    }, 50).unref();
  }

  #checkExit(): void {
    if (this.#released || isWorkerAlive(this.record.pid, this.record.uuid)) return;
    this.#onExit(null, null);
  }

  #emit(event: WorkerEvent["event"], detail?: string): void {
    this.emit("event", { timeMs: Date.now(), vm: this.record.name, event, ...(detail === undefined ? {} : { detail }) });
  }
}

/** Attached workers die with their parent: setpriv sets PR_SET_PDEATHSIG before exec. */
function attachedToParent(command: readonly string[], detached: boolean): string[] {
  return detached || !existsSync("/usr/bin/setpriv") ? [...command] : ["/usr/bin/setpriv", "--pdeathsig", "SIGKILL", "--", ...command];
}

function signalName(number: number): string {
  const entry = Object.entries(constants.signals).find(([, value]) => value === number);
  return entry?.[0] ?? `signal ${number}`;
}

function readLogTail(runDir: string): string {
  try {
    return readFileSync(join(runDir, "worker.log"), "utf8").slice(-STDERR_TAIL_BYTES);
  } catch {
    return "";
  }
}

async function connectUnix(path: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = createConnection(path);
        socket.once("connect", () => {
          resolve(socket);
        });
        socket.once("error", reject);
      });
    } catch (error: unknown) {
      if (Date.now() > deadline) throw error;
      await sleep(10);
    }
  }
}

/** Polls for QEMU's QMP socket until it answers, QEMU exits or the timeout passes. */
async function connectWhenReady(
  path: string,
  name: string,
  exited: Promise<{ code: number | null; signal: string | null }>,
): Promise<QmpClient> {
  const state = { gone: false };
  void exited.then(() => {
    state.gone = true;
  });
  const deadline = Date.now() + QMP_READY_TIMEOUT_MS;
  for (;;) {
    if (state.gone) throw new Error("QEMU exited during start");
    if (existsSync(path)) {
      try {
        return await QmpClient.connect(path, name);
      } catch (error: unknown) {
        if (Date.now() > deadline) throw error;
      }
    }
    if (Date.now() > deadline) throw new Error(`QMP socket ${path} did not answer within ${QMP_READY_TIMEOUT_MS} ms`);
    await sleep(5);
  }
}
