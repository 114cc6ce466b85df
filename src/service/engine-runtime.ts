/**
 * The VM engine behind the service: each VM is a detached engine worker (one QEMU process
 * in its own session, no Node process per VM) with its run directory at
 * `<data-dir>/vms/<id>/`. The service holds each worker's QMP session and serial console
 * (QEMU's console socket takes one client) and keeps a ring of recent console output;
 * after a service restart it finds the workers again through their run directories.
 */
import { readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  describeOutcome,
  probeHost,
  readWorkerRecord,
  startVm,
  Worker,
  type HostFacts,
  type Outcome,
} from "../engine/index.js";
import { isWorkerAlive, removeRunDir } from "../engine/run-dir.js";
import { summarizeStderr } from "../engine/worker.js";
import { ConfigError } from "../util/errors.js";
import { ConsoleRing } from "./console-ring.js";
import { ValidationError } from "./errors.js";
import { engineSpecOf } from "./engine-spec.js";
import type { ConsoleTap, RuntimeStatus, RuntimeVm, VmRuntime } from "./lifecycle.js";

/** The service's state for an outcome: a VM that ended on its own for a bad reason crashed. */
export function statusOfOutcome(outcome: Outcome): RuntimeStatus {
  const crashed =
    outcome.kind === "guest-panic" ||
    outcome.kind === "hang" ||
    outcome.kind === "reset-loop" ||
    outcome.kind === "internal-error" ||
    (outcome.kind === "worker-exit" && (outcome.signal !== null || outcome.exitCode !== 0));
  // A detached worker's exit status goes to no one who reports it: say what is known.
  const reason =
    outcome.kind === "worker-exit" && outcome.exitCode === null && outcome.signal === null
      ? `worker (QEMU) ended without a shutdown event: killed or crashed${outcome.stderr === "" ? "" : `: ${outcome.stderr}`}`
      : describeOutcome(outcome);
  return { state: crashed ? "crashed" : "stopped", exitReason: reason };
}

interface Held {
  readonly worker: Worker;
  readonly ring: ConsoleRing;
  readonly readers: Set<{ data: (chunk: Buffer) => void; end: () => void }>;
}

/** Options of {@link EngineRuntime}. */
export interface EngineRuntimeOptions {
  /** `<data-dir>/vms`: the parent of every run directory (the engine's disk-in-use check scans it). */
  readonly runRoot: string;
  /** The host probe; default `probeHost` at every start (free memory changes). */
  readonly probe?: () => HostFacts;
}

/** `VmRuntime` over the engine's detached workers. */
export class EngineRuntime implements VmRuntime {
  readonly #runRoot: string;
  readonly #probe: () => HostFacts;
  readonly #held = new Map<string, Held>();
  readonly #exitListeners: ((runDir: string, status: RuntimeStatus) => void)[] = [];

  constructor(options: EngineRuntimeOptions) {
    this.#runRoot = options.runRoot;
    this.#probe = options.probe ?? probeHost;
  }

  async start(vm: RuntimeVm): Promise<RuntimeStatus> {
    const spec = engineSpecOf(vm.id, vm.spec);
    let worker: Worker;
    try {
      worker = await startVm(spec, this.#probe(), { runRoot: this.#runRoot, runDir: vm.runDir, detached: true });
    } catch (error: unknown) {
      // Bad input found at start (a kernel that is not one, a disk in use): the caller's to fix.
      if (error instanceof ConfigError) throw new ValidationError(error.message, null, error.code);
      throw error;
    }
    await this.#hold(vm.runDir, worker);
    return this.#statusOf(worker);
  }

  async stop(runDir: string, options: { readonly timeoutMs: number }): Promise<RuntimeStatus> {
    const held = await this.#find(runDir);
    if (held === null) return { state: "stopped" };
    return statusOfOutcome(await held.worker.stop(options.timeoutMs));
  }

  async kill(runDir: string): Promise<RuntimeStatus> {
    const held = await this.#find(runDir);
    if (held === null) return { state: "stopped" };
    return statusOfOutcome(await held.worker.kill());
  }

  async pause(runDir: string): Promise<RuntimeStatus> {
    const held = await this.#require(runDir);
    await held.worker.pause();
    return { state: "paused", pid: held.worker.record.pid };
  }

  async resume(runDir: string): Promise<RuntimeStatus> {
    const held = await this.#require(runDir);
    await held.worker.resume();
    return { state: "running", pid: held.worker.record.pid };
  }

  status(runDir: string): Promise<RuntimeStatus> {
    const held = this.#held.get(runDir);
    if (held !== undefined) return Promise.resolve(this.#statusOf(held.worker));
    const record = readWorkerRecord(runDir);
    if (record !== null && isWorkerAlive(record.pid, record.uuid)) return Promise.resolve({ state: "running", pid: record.pid });
    return Promise.resolve({ state: "stopped" });
  }

  /**
   * Finds the worker of `runDir` again. A worker that ended while nobody watched is
   * reported with what its log tells; a QEMU started by a service killed before it wrote
   * the worker record (an interrupted start) is killed, since nothing can manage it.
   */
  async attach(runDir: string): Promise<RuntimeStatus | null> {
    const held = this.#held.get(runDir);
    if (held !== undefined) return this.#statusOf(held.worker);
    const record = readWorkerRecord(runDir);
    if (record === null) {
      const orphan = findQemuByQmpSocket(join(runDir, "qmp.sock"));
      if (orphan === null) return null;
      try {
        process.kill(orphan, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
      removeRunDir(runDir);
      return { state: "stopped", exitReason: `worker pid ${orphan} of an interrupted start killed at service start` };
    }
    if (!isWorkerAlive(record.pid, record.uuid)) {
      const log = summarizeStderr(readLog(runDir));
      removeRunDir(runDir);
      return {
        state: "stopped",
        exitReason: `worker ended while the service was down${log === "" ? "" : `: ${log}`}`,
      };
    }
    const worker = await Worker.attach(runDir);
    await this.#hold(runDir, worker);
    return this.#statusOf(worker);
  }

  onExit(listener: (runDir: string, status: RuntimeStatus) => void): void {
    this.#exitListeners.push(listener);
  }

  openConsole(runDir: string): ConsoleTap | null {
    const held = this.#held.get(runDir);
    if (held === undefined) return null;
    return {
      recent: () => held.ring.contents(),
      subscribe: (data, end) => {
        const reader = { data, end };
        held.readers.add(reader);
        return () => {
          held.readers.delete(reader);
        };
      },
      write: (bytes) => {
        held.worker.writeConsole(bytes);
      },
    };
  }

  /** Run directories of the workers this runtime holds. */
  heldRunDirs(): string[] {
    return [...this.#held.keys()];
  }

  async #hold(runDir: string, worker: Worker): Promise<void> {
    const held: Held = { worker, ring: new ConsoleRing(), readers: new Set() };
    this.#held.set(runDir, held);
    worker.on("console", (chunk: Buffer) => {
      held.ring.push(chunk);
      for (const reader of held.readers) reader.data(chunk);
    });
    void worker.outcome.then((outcome) => {
      if (this.#held.get(runDir) === held) this.#held.delete(runDir);
      for (const reader of held.readers) reader.end();
      const status = statusOfOutcome(outcome);
      for (const listener of this.#exitListeners) listener(runDir, status);
    });
    await worker.holdConsole();
  }

  async #find(runDir: string): Promise<Held | null> {
    const held = this.#held.get(runDir);
    if (held !== undefined) return held;
    const status = await this.attach(runDir);
    return status === null ? null : (this.#held.get(runDir) ?? null);
  }

  async #require(runDir: string): Promise<Held> {
    const held = await this.#find(runDir);
    if (held === null) throw new Error(`No worker in ${basename(runDir)}`);
    return held;
  }

  #statusOf(worker: Worker): RuntimeStatus {
    const state = worker.state === "paused" ? "paused" : worker.state === "stopped" ? "stopped" : "running";
    return { state, pid: worker.record.pid };
  }
}

function readLog(runDir: string): string {
  try {
    return readFileSync(join(runDir, "worker.log"), "utf8").slice(-8192);
  } catch {
    return "";
  }
}

/** The pid of a live process whose command line names `qmpSocket` (QEMU's `-qmp unix:…`), or null. */
export function findQemuByQmpSocket(qmpSocket: string): number | null {
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((entry) => /^\d+$/.test(entry));
  } catch {
    return null;
  }
  for (const pid of pids) {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (args.some((arg) => arg.startsWith(`unix:${qmpSocket},`))) return Number(pid);
    } catch {
      // Gone or not ours to read.
    }
  }
  return null;
}
