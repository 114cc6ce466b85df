/**
 * The VM engine behind the service: each VM is a detached engine worker (one QEMU process
 * in its own session, no Node process per VM) with its run directory at
 * `<data-dir>/vms/<id>/`. The service holds each worker's QMP session and serial console
 * (QEMU's console socket takes one client) and keeps a ring of recent console output;
 * after a service restart it finds the workers again through their run directories.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  describeOutcome,
  probeHost,
  readWorkerRecord,
  startVm,
  Worker,
  type HostFacts,
  type WorkerRecord,
  type Outcome,
} from "../engine/index.js";
import { isWorkerAlive, removeRunDir } from "../engine/run-dir.js";
import { summarizeStderr } from "../engine/worker.js";
import { sandboxHostFacts, sandboxStateDir } from "../engine/worker-jail.js";
import { describeJailExit, holdExitStatus, JailLeftovers, readJailExitCode } from "./jail-leftovers.js";
import { ConfigError } from "../util/errors.js";
import { ConsoleRing } from "./console-ring.js";
import { ValidationError } from "./errors.js";
import { engineSpecOf } from "./engine-spec.js";
import type { ConsoleTap, RuntimeStatus, RuntimeVm, VmRuntime } from "./lifecycle.js";

/**
 * The service's state for an outcome: a VM that ended on its own for a bad reason crashed.
 * `jailExitCode` is what the worker's jail (bwrap) reported, when it did: it names the
 * signal of a worker that ended with no shutdown event.
 */
export function statusOfOutcome(outcome: Outcome, jailExitCode?: number): RuntimeStatus {
  if (
    outcome.kind === "worker-exit" &&
    outcome.exitCode === null &&
    outcome.signal === null &&
    jailExitCode !== undefined
  ) {
    const exit = describeJailExit(jailExitCode);
    return {
      state: exit.state === "stopped" ? "stopped" : "crashed",
      exitReason: `${exit.reason}${outcome.stderr === "" ? "" : `: ${outcome.stderr}`}`,
    };
  }
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
  /** The worker's end as the service records it, once its jail is undone. */
  readonly final: Promise<RuntimeStatus>;
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
  readonly #leftovers: JailLeftovers;

  constructor(options: EngineRuntimeOptions) {
    this.#runRoot = options.runRoot;
    this.#probe = options.probe ?? probeHost;
    const stateDir = sandboxStateDir(options.runRoot);
    this.#leftovers = new JailLeftovers(
      join(options.runRoot, "..", "jail-leftovers"),
      () => {
        const qemu = this.#probe().qemuBinary;
        return qemu === null ? null : sandboxHostFacts(qemu, stateDir);
      },
      stateDir,
    );
  }

  async start(vm: RuntimeVm): Promise<RuntimeStatus> {
    const spec = engineSpecOf(vm.id, vm.spec);
    let worker: Worker;
    try {
      worker = await startVm(spec, this.#probe(), {
        runRoot: this.#runRoot,
        runDir: vm.runDir,
        detached: true,
      });
    } catch (error: unknown) {
      // Bad input found at start (a kernel that is not one, a disk in use): the caller's to fix.
      if (error instanceof ConfigError) throw new ValidationError(error.message, null, error.code);
      throw error;
    }
    await this.#hold(vm.runDir, worker, false);
    return this.#statusOf(worker);
  }

  async stop(runDir: string, options: { readonly timeoutMs: number }): Promise<RuntimeStatus> {
    const held = await this.#find(runDir);
    if (held === null) return { state: "stopped" };
    await held.worker.stop(options.timeoutMs);
    return held.final;
  }

  async kill(runDir: string): Promise<RuntimeStatus> {
    const held = await this.#find(runDir);
    if (held === null) return { state: "stopped" };
    await held.worker.kill();
    return held.final;
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
    if (record !== null && isWorkerAlive(record.pid, record.uuid))
      return Promise.resolve({ state: "running", pid: record.pid });
    return Promise.resolve({ state: "stopped" });
  }

  /**
   * Finds the worker of `runDir` again. A worker that ended while nobody watched is
   * reported with what its jail and log tell, and its jail is undone (cgroups, uid, file
   * owners); a QEMU started by a service killed before it wrote the worker record (an
   * interrupted start) is killed, since nothing can manage it.
   */
  async attach(runDir: string, vmName?: string): Promise<RuntimeStatus | null> {
    const held = this.#held.get(runDir);
    if (held !== undefined) return this.#statusOf(held.worker);
    const id = basename(runDir);
    // The copy kept for a re-attached worker whose end the previous service did not finish handling.
    if (this.#leftovers.has(id) && readWorkerRecord(runDir) === null) await this.#leftovers.cleanKept(id);
    const record = readWorkerRecord(runDir);
    if (record === null) {
      const orphan = findQemuByQmpSocket(join(runDir, "qmp.sock"));
      if (orphan === null) {
        if (vmName !== undefined && existsSync(runDir)) await this.#undoJail(runDir, vmName, undefined);
        return null;
      }
      try {
        process.kill(orphan, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
      if (vmName !== undefined) await this.#undoJail(runDir, vmName, undefined);
      removeRunDir(runDir);
      return {
        state: "stopped",
        exitReason: `worker pid ${orphan} of an interrupted start killed at service start`,
      };
    }
    if (!isWorkerAlive(record.pid, record.uuid)) return this.#endedUnheld(runDir, record);
    let worker: Worker;
    try {
      worker = await Worker.attach(runDir);
    } catch (error: unknown) {
      // A worker on its way out (say, the guest got the power button from the previous
      // service) closes QMP under the attach: if it is gone now, it ended unheld.
      const deadline = Date.now() + 3000;
      while (isWorkerAlive(record.pid, record.uuid) && Date.now() < deadline) await sleep(50);
      if (!isWorkerAlive(record.pid, record.uuid)) return this.#endedUnheld(runDir, record);
      throw error;
    }
    if (record.jailed) this.#leftovers.keep(id, runDir, record.name, record.uuid);
    await this.#hold(runDir, worker, record.jailed);
    return this.#statusOf(worker);
  }

  /** A worker that ended while nobody held it: its exit as the jail and log tell, its jail undone. */
  async #endedUnheld(runDir: string, record: WorkerRecord): Promise<RuntimeStatus> {
    const log = summarizeStderr(readLog(runDir));
    const exitCode = readJailExitCode(runDir);
    if (record.jailed) await this.#undoJail(runDir, record.name, record.uuid);
    removeRunDir(runDir);
    const exit = exitCode === undefined ? null : describeJailExit(exitCode);
    return {
      state: exit?.state ?? "stopped",
      exitReason: `${exit?.reason ?? "worker ended"} while the service was down${log === "" ? "" : `: ${log}`}`,
    };
  }

  async #undoJail(runDir: string, vmName: string, uuid: string | undefined): Promise<void> {
    try {
      await this.#leftovers.cleanRunDir(runDir, vmName, uuid);
    } catch (error: unknown) {
      process.stderr.write(`palisade service: cannot undo the jail of ${runDir}: ${String(error)}\n`);
    }
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

  /**
   * Holds a worker: its console, its exit status, and, for a re-attached jailed worker
   * (`reattachedJail`), the undoing of its jail once it ends (the engine does it for the
   * workers it launched). Exit listeners hear of the end only after that, so the VM is not
   * started again before its jail is gone.
   */
  async #hold(runDir: string, worker: Worker, reattachedJail: boolean): Promise<void> {
    const exitStatus = holdExitStatus(runDir);
    let resolveFinal!: (status: RuntimeStatus) => void;
    const final = new Promise<RuntimeStatus>((resolve) => {
      resolveFinal = resolve;
    });
    const held: Held = { worker, ring: new ConsoleRing(), readers: new Set(), final };
    this.#held.set(runDir, held);
    worker.on("console", (chunk: Buffer) => {
      held.ring.push(chunk);
      for (const reader of held.readers) reader.data(chunk);
    });
    void worker.outcome.then(async (outcome) => {
      const status = statusOfOutcome(outcome, exitStatus.read());
      if (reattachedJail) {
        await this.#leftovers.cleanKept(basename(runDir)).catch((error: unknown) => {
          process.stderr.write(`palisade service: cannot undo the jail of ${runDir}: ${String(error)}\n`);
        });
      }
      if (this.#held.get(runDir) === held) this.#held.delete(runDir);
      for (const reader of held.readers) reader.end();
      resolveFinal(status);
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
