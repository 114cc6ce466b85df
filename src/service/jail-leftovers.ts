/**
 * What a jailed worker leaves behind (its cgroups, its per-VM uid, the owners of the files
 * it was given, its run directory) and how it ended, for the workers whose jail the
 * engine cannot undo itself: those found again after a service restart (the engine's
 * `Worker.attach()` knows nothing of their jail, and removes their run directory, where
 * the jail's records live, when they end) and those that ended while the service was down.
 *
 * The engine's own fix would be for `Worker.attach()` to rebuild the jail's cleanup from
 * the run directory and read bwrap's exit status before removing it; until then the
 * service keeps a copy of the jail's records (`<data-dir>/jail-leftovers/<id>/`, so a
 * service killed in between still finds them) and holds the status file open.
 */
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  rmSync,
  writeFileSync,
  readFileSync,
} from "node:fs";
import { join } from "node:path";
import { constants } from "node:os";
import {
  cleanupJail,
  jailPaths,
  parseWorkerStatus,
  releaseUid,
  type JailSpec,
  type SandboxHostFacts,
} from "../sandbox/index.js";

/** How a jailed worker ended, from bwrap's exit code (128 + N for signal N); pure. */
export function describeJailExit(exitCode: number): { state: "stopped" | "crashed"; reason: string } {
  if (exitCode === 0) return { state: "stopped", reason: "worker (QEMU) exited normally (code 0)" };
  if (exitCode > 128) {
    const number = exitCode - 128;
    const name = Object.entries(constants.signals).find(([, value]) => value === number)?.[0];
    return { state: "crashed", reason: `worker (QEMU) killed by signal ${name ?? "?"} (${number})` };
  }
  return { state: "crashed", reason: `worker (QEMU) exited with code ${exitCode}` };
}

/**
 * Holds a jail's status file open, so that bwrap's exit code can be read once the worker
 * ended even after the engine removed the run directory. `read()` answers the exit code
 * (undefined when the jail reported none: not jailed, or bwrap itself was killed) and
 * closes the file.
 */
export function holdExitStatus(runDir: string): { read(): number | undefined } {
  let fd: number | null;
  try {
    fd = openSync(jailPaths(runDir).statusFile, "r");
  } catch {
    fd = null;
  }
  return {
    read() {
      if (fd === null) return undefined;
      const chunks: Buffer[] = [];
      const buffer = Buffer.alloc(4096);
      let position = 0;
      for (
        let n = readSync(fd, buffer, 0, buffer.length, position);
        n > 0;
        n = readSync(fd, buffer, 0, buffer.length, position)
      ) {
        chunks.push(Buffer.from(buffer.subarray(0, n)));
        position += n;
        if (position > 65536) break;
      }
      closeSync(fd);
      fd = null;
      return parseWorkerStatus(Buffer.concat(chunks).toString("utf8")).exitCode;
    },
  };
}

/** bwrap's exit code in a run directory's status file, if the worker has ended and reported one. */
export function readJailExitCode(runDir: string): number | undefined {
  return holdExitStatus(runDir).read();
}

const OWNERS_FILE = "owners.json";
/** Host facts that name no cgroup (cleanupJail reads only `root` and `cgroups` of them). */
const NO_CGROUPS = { root: false, cgroups: { version: "none" } } as SandboxHostFacts;
const NAME_FILE = "vm-name";
const UUID_FILE = "vm-uuid";

/** Undoes jails from their records; `root` is `<data-dir>/jail-leftovers`. */
export class JailLeftovers {
  readonly #root: string;
  readonly #host: () => SandboxHostFacts | null;
  readonly #stateDir: string;

  /**
   * @param host the sandbox's host facts (cgroup layout), or null when the host has no QEMU
   * @param stateDir the sandbox's state directory (its uid pool)
   */
  constructor(root: string, host: () => SandboxHostFacts | null, stateDir: string) {
    this.#root = root;
    this.#host = host;
    this.#stateDir = stateDir;
  }

  /** Keeps a copy of the records of the jail in `runDir` (a live worker the service re-attached). */
  keep(id: string, runDir: string, vmName: string, uuid: string): void {
    const controlDir = join(this.#root, id, ".jail");
    mkdirSync(controlDir, { recursive: true, mode: 0o700 });
    const owners = join(jailPaths(runDir).controlDir, OWNERS_FILE);
    if (existsSync(owners)) copyFileSync(owners, join(controlDir, OWNERS_FILE));
    writeFileSync(join(this.#root, id, UUID_FILE), uuid, { mode: 0o600 });
    writeFileSync(join(this.#root, id, NAME_FILE), vmName, { mode: 0o600 });
  }

  /** Whether a copy is kept for VM `id`. */
  has(id: string): boolean {
    return existsSync(join(this.#root, id, NAME_FILE));
  }

  /** Undoes the jail of VM `id` from the kept copy (its worker has ended), then forgets it. */
  async cleanKept(id: string): Promise<void> {
    const dir = join(this.#root, id);
    let vmName: string;
    let uuid: string | undefined;
    try {
      vmName = readFileSync(join(dir, NAME_FILE), "utf8");
      uuid = existsSync(join(dir, UUID_FILE)) ? readFileSync(join(dir, UUID_FILE), "utf8") : undefined;
    } catch {
      return;
    }
    await this.#undo(dir, vmName, uuid);
    rmSync(dir, { recursive: true, force: true });
  }

  /** Undoes the jail of a worker that ended while nobody held it, from its own run directory. */
  async cleanRunDir(runDir: string, vmName: string, uuid: string | undefined): Promise<void> {
    await this.#undo(runDir, vmName, uuid);
  }

  /**
   * `uuid` keys the worker's uid claim; unknown (no worker record left), the claim is
   * reclaimed by the pool once its owner (the previous service) is gone and no process
   * runs as the uid.
   */
  async #undo(runDir: string, vmName: string, uuid: string | undefined): Promise<void> {
    // Without host facts no cgroup can be named; the file owners are still given back.
    const host = this.#host() ?? NO_CGROUPS;
    // INVARIANT: cleanupJail reads only vmId (its cgroups) and runDir (its control files).
    await cleanupJail({ vmId: vmName, runDir } as JailSpec, host);
    if (uuid !== undefined) await releaseUid(uuid, this.#stateDir);
  }
}
