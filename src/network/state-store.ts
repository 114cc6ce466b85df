/**
 * The switches' state file: `<state-dir>/switches.json`, validated by zod on every read,
 * written by write-then-rename so a crash leaves the old or the new file, never half of
 * one. Changes are serialized within a process by a promise chain and across processes
 * by a lock file holding the owner's pid (a dead owner's lock is taken over).
 *
 * Each switch's ACL rules live in a file of their own, `acls/<sha256>.json`, named by its
 * content and referenced from `switches.json`: attaching a port rewrites a small file, not
 * 10,000 rules (~1.5 MB). An ACL file is written (and fsynced) before the state that names
 * it, and deleted once no state names it, so a crash leaves a consistent pair.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync, openSync, closeSync, unlinkSync, fsyncSync, statSync, type Stats } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ConfigError, HostError, errorMessage } from "../util/errors.js";
import * as z from "zod";
import { aclRuleSchema, switchSchema, type AclRule, type NetworkState } from "./model.js";

/** `switches.json` as stored: ACL rules inline (older files) or in a file named by `aclFile`. */
const storedStateSchema = z.object({
  version: z.literal(1),
  switches: z.array(switchSchema.extend({ acls: z.array(aclRuleSchema).optional(), aclFile: z.string().regex(/^[0-9a-f]{64}\.json$/).optional() })),
});
const aclFileSchema = z.array(aclRuleSchema);

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
  /** ACL lists by content file name and back; the files never change once written. */
  readonly #aclsByFile = new Map<string, readonly AclRule[]>();
  readonly #fileByAcls = new WeakMap<readonly AclRule[], string>();
  /** The ACL files the last write of this process referenced; undefined before the first. */
  #referencedKey: string | undefined;

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
      const stored = storedStateSchema.parse(JSON.parse(text));
      // Validated above, field by field; the ACL list comes from its own (validated, cached) file.
      return { version: stored.version, switches: stored.switches.map(({ aclFile, acls, ...sw }) => ({ ...sw, acls: aclFile === undefined ? (acls ?? []) : this.#readAcls(aclFile) })) };
    } catch (error: unknown) {
      if (error instanceof HostError) throw error;
      throw new ConfigError(`State file ${this.#file} is not valid: ${errorMessage(error).slice(0, 200)}`, "network.bad-state", { cause: error });
    }
  }

  #readAcls(name: string): AclRule[] {
    const cached = this.#aclsByFile.get(name);
    if (cached !== undefined) return cached as AclRule[]; // INVARIANT: states are never mutated (readonly by convention)
    const path = join(this.dir, "acls", name);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (error: unknown) {
      throw new HostError(`Cannot read ${path}: ${errorMessage(error)}`, "network.state-io", { cause: error });
    }
    const acls = aclFileSchema.parse(JSON.parse(text));
    this.#remember(name, acls);
    return acls;
  }

  #remember(name: string, acls: readonly AclRule[]): void {
    this.#aclsByFile.set(name, acls);
    this.#fileByAcls.set(acls, name);
  }

  /** The content file of an ACL list, written (durably) unless it exists. Unchanged lists cost a lookup. */
  #aclFileOf(acls: readonly AclRule[]): string {
    const known = this.#fileByAcls.get(acls);
    if (known !== undefined) return known;
    const text = `${JSON.stringify(acls)}\n`;
    const name = `${createHash("sha256").update(text).digest("hex")}.json`;
    const path = join(this.dir, "acls", name);
    if (!existsSync(path)) {
      mkdirSync(join(this.dir, "acls"), { recursive: true, mode: 0o700 });
      writeDurably(path, text);
    }
    this.#remember(name, acls);
    return name;
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
    const stored = { ...state, switches: state.switches.map(({ acls, ...sw }) => (acls.length === 0 ? { ...sw, acls } : { ...sw, aclFile: this.#aclFileOf(acls) })) };
    writeDurably(this.#file, `${JSON.stringify(stored)}\n`);
    this.#cache = { key: fileKey(statSync(this.#file)), state };
    const referenced = new Set(stored.switches.flatMap((sw) => ("aclFile" in sw ? [sw.aclFile] : [])));
    // On the first write of a process (a crash may have left a file behind) and whenever the
    // set of ACL files changed; an attach, which changes no ACL, lists no directory.
    const key = [...referenced].sort().join(",");
    if (key !== this.#referencedKey) this.#collectAcls(referenced);
    this.#referencedKey = key;
  }

  /** Deletes ACL files no switch names any more (after the state naming them was replaced). */
  #collectAcls(referenced: ReadonlySet<string>): void {
    let names: string[];
    try {
      names = readdirSync(join(this.dir, "acls"));
    } catch {
      return;
    }
    for (const name of names.filter((candidate) => candidate.endsWith(".json") && !referenced.has(candidate))) {
      try {
        unlinkSync(join(this.dir, "acls", name));
      } catch {
        // Gone already.
      }
      this.#aclsByFile.delete(name);
    }
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

/** Write-then-rename with an fsync: a crash leaves the old or the new file, never half of one. */
function writeDurably(path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  const fd = openSync(temporary, "w", 0o600);
  try {
    writeFileSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
}
