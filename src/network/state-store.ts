/**
 * The switches' state file: `<state-dir>/switches.json`, validated by zod on every read,
 * written by write-then-rename so a crash leaves the old or the new file, never half of
 * one. Changes are serialized within a process by a promise chain and across processes
 * by a lock file holding the owner's pid (a dead owner's lock is taken over).
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync, openSync, closeSync, unlinkSync, fsyncSync, statSync, type Stats } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ConfigError, HostError, errorMessage } from "../util/errors.js";
import { networkStateSchema, type NetworkState } from "./model.js";

/** Default state directory when running as root. */
export const DEFAULT_STATE_DIR = "/var/lib/palisade/network";

/**
 * The state directory every Palisade process agrees on (the engine and the CLI must see the
 * same switches): `$PALISADE_NETWORK_DIR`, else `/var/lib/palisade/network` as root, else
 * `~/.local/share/palisade/network`.
 */
export function defaultStateDir(): string {
  const fromEnvironment = process.env.PALISADE_NETWORK_DIR;
  if (fromEnvironment !== undefined && fromEnvironment !== "") return fromEnvironment;
  return process.getuid?.() === 0 ? DEFAULT_STATE_DIR : join(homedir(), ".local/share/palisade/network");
}
const LOCK_TIMEOUT_MS = 15_000;

/** Reads and changes the state file of one state directory. */
export class StateStore {
  readonly dir: string;
  readonly #file: string;
  readonly #lock: string;
  #queue: Promise<unknown> = Promise.resolve();
  /** The last state read or written, with the file identity it came from: parsing 10,000 rules costs ~50 ms. */
  #cache: { key: string; state: NetworkState } | undefined;

  constructor(dir: string) {
    this.dir = dir;
    this.#file = join(dir, "switches.json");
    this.#lock = join(dir, "switches.lock");
  }

  /**
   * The current state (empty when there is no file yet).
   * @throws {ConfigError} `network.bad-state` when the file is not valid.
   */
  read(): NetworkState {
    let key: string;
    try {
      key = fileKey(statSync(this.#file));
    } catch {
      key = "missing";
    }
    if (this.#cache?.key === key) return this.#cache.state;
    const state = this.#parse();
    this.#cache = { key, state };
    return state;
  }

  #parse(): NetworkState {
    let text: string;
    try {
      text = readFileSync(this.#file, "utf8");
    } catch (error: unknown) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, switches: [] };
      throw new HostError(`Cannot read ${this.#file}: ${errorMessage(error)}`, "network.state-io", { cause: error });
    }
    try {
      return networkStateSchema.parse(JSON.parse(text));
    } catch (error: unknown) {
      throw new ConfigError(`State file ${this.#file} is not valid: ${errorMessage(error).slice(0, 200)}`, "network.bad-state", { cause: error });
    }
  }

  /**
   * Runs `change` on the current state under the lock; if it returns a state, that state
   * is written. The change's result is returned.
   */
  async update<T>(change: (state: NetworkState) => Promise<{ state?: NetworkState; result: T }>): Promise<T> {
    const run = this.#queue.then(async () => {
      await this.#acquire();
      try {
        const { state, result } = await change(this.read());
        if (state !== undefined) this.#write(state);
        return result;
      } finally {
        this.#release();
      }
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #write(state: NetworkState): void {
    const temporary = `${this.#file}.${process.pid}.tmp`;
    const fd = openSync(temporary, "w", 0o600);
    try {
      writeFileSync(fd, `${JSON.stringify(state)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.#file);
    this.#cache = { key: fileKey(statSync(this.#file)), state };
  }

  async #acquire(): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const deadline = Date.now() + LOCK_TIMEOUT_MS;
    for (;;) {
      try {
        const fd = openSync(this.#lock, "wx", 0o600);
        writeFileSync(fd, String(process.pid));
        closeSync(fd);
        return;
      } catch (error: unknown) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
          throw new HostError(`Cannot create ${this.#lock}: ${errorMessage(error)}`, "network.state-io", { cause: error });
        }
      }
      if (!this.#ownerAlive()) {
        try {
          unlinkSync(this.#lock);
        } catch {
          // Another process took it over first; try again.
        }
        continue;
      }
      if (Date.now() > deadline) throw new HostError(`State lock ${this.#lock} is held by another process`, "network.locked");
      await sleep(20);
    }
  }

  #ownerAlive(): boolean {
    let text: string;
    try {
      text = readFileSync(this.#lock, "utf8");
    } catch {
      return true; // being created right now; look again shortly
    }
    if (text.trim() === "") return true; // its owner is writing its pid right now
    const pid = Number(text);
    if (!Number.isInteger(pid) || pid <= 0) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch (error: unknown) {
      return (error as NodeJS.ErrnoException).code === "EPERM";
    }
  }

  #release(): void {
    try {
      unlinkSync(this.#lock);
    } catch {
      // Already gone: nothing to release.
    }
  }
}

/** Identity of a file version: a rename gives a new inode, a rewrite a new mtime or size. */
function fileKey(stats: Stats): string {
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
}
