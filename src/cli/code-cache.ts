/**
 * Loading the CLI bundle through V8's code cache: the start-up half of `launcher.ts`.
 *
 * Why: `palisade run` stands between the user and the guest's first instruction, and
 * Node compiles every function it runs from source on each start. Loaded as ES modules
 * the CLI spent ~50 ms before QEMU was spawned on resolving, linking and compiling; one
 * CommonJS bundle compiled with the bytecode V8 kept from an earlier run skips nearly all
 * of it (spawn at ~86 ms after Node's start instead of ~127 ms here; docs/design/boot-path.md).
 *
 * The cache is code. It is read only from a real directory (not a symlink) owned by this
 * user or root and writable by no one else, as a regular file with the same owners and
 * modes, opened without following links; it is written only there, and only when this user
 * owns the bundle's directory (whoever can write the cache could write the bundle). Its
 * name carries the bundle's inode, mtime, ctime (µs) and size: V8 itself checks only the
 * source's length, and ctime changes with every write, whatever a copy tool sets mtime to.
 */
import { randomBytes } from "node:crypto";
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, statSync, writeFileSync, type Stats } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { Script } from "node:vm";

/** A cache larger than this is not a cache Palisade wrote. */
const MAX_CACHE_BYTES = 64 * 1024 * 1024;
/** Command groups with subcommands: `disk convert` and `disk info` compile different code. */
const SUBCOMMAND_GROUPS = new Set(["audit", "authz", "disk", "image", "service", "switch", "vm"]);
const WORD = /^[a-z][a-z-]{0,15}$/;

/** The directory of caches beside a bundle. */
export function cacheDirOf(bundlePath: string): string {
  return join(dirname(bundlePath), ".v8-cache");
}

/**
 * The cache file for a command (`run`, `disk-convert`, `vm-list`: each compiles different
 * functions) of this exact bundle file; null for informational invocations (`--help`,
 * `--version`, `--print-…`), whose compiled code would make a poor cache for the real
 * command and whose start-up matters little, and for command lines that do not start
 * with a command word. Only the words right after `palisade` count, never an option's value. Pure.
 */
export function cacheFileFor(
  bundlePath: string,
  bundle: Pick<Stats, "ino" | "mtimeMs" | "ctimeMs" | "size">,
  argv: readonly string[],
): string | null {
  const args = argv.slice(2);
  if (args.some((arg) => arg === "-h" || arg === "--help" || arg === "-V" || arg === "--version" || arg.startsWith("--print-"))) return null;
  const [first = "", second = ""] = args;
  if (!WORD.test(first)) return null;
  const command = SUBCOMMAND_GROUPS.has(first) && WORD.test(second) ? `${first}-${second}` : first;
  const stamp = [bundle.ino, Math.trunc(bundle.mtimeMs * 1000), Math.trunc(bundle.ctimeMs * 1000), bundle.size].join("-");
  return join(cacheDirOf(bundlePath), `${command}-${stamp}.bin`);
}

/** Owned by `euid` or root and writable by neither group nor others. */
function trustedOwner(stat: Stats, euid: number): boolean {
  return (stat.uid === euid || stat.uid === 0) && (stat.mode & 0o022) === 0;
}

/** The cache directory exists as a real directory that only trusted owners can change. */
function trustedDir(dir: string, euid: number): boolean {
  try {
    const stat = lstatSync(dir);
    return stat.isDirectory() && trustedOwner(stat, euid);
  } catch {
    return false;
  }
}

/** Up to `size` bytes from the start of `fd` (fewer if the file is shorter). */
function readWhole(fd: number, size: number): Buffer {
  const bytes = Buffer.allocUnsafe(size);
  let done = 0;
  while (done < size) {
    const got = readSync(fd, bytes, done, size - done, done);
    if (got === 0) break;
    done += got;
  }
  return bytes.subarray(0, done);
}

/** The cache's bytes when the file and its directory can be trusted (see above); else null. */
export function readTrustedCache(file: string, euid: number): Buffer | null {
  if (!trustedDir(dirname(file), euid)) return null;
  let fd: number;
  try {
    // No symlinks; and a FIFO planted there must not block the start.
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile() || !trustedOwner(stat, euid) || stat.size === 0 || stat.size > MAX_CACHE_BYTES) return null;
    const bytes = readWhole(fd, stat.size);
    return bytes.length === stat.size ? bytes : null;
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Whether this user may keep caches beside the bundle: it owns the bundle's directory. */
function mayWriteCaches(bundlePath: string, euid: number): boolean {
  try {
    return statSync(dirname(bundlePath)).uid === euid;
  } catch {
    return false;
  }
}

/** Writes `bytes` as the cache, whole and at once (other CLI processes may be writing it too). */
function writeCache(file: string, bytes: Buffer, euid: number): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  if (!trustedDir(dir, euid)) return;
  const temporary = `${file}.${randomBytes(8).toString("hex")}.tmp`;
  try {
    writeFileSync(temporary, bytes, { mode: 0o644, flag: "wx" });
    renameSync(temporary, file);
  } catch {
    rmSync(temporary, { force: true });
  }
}

interface BundleExports {
  runCli(argv: string[]): Promise<number>;
}

/** What became of the cache for this start: none found, used, or refused by V8. */
export type CacheUse = "none" | "accepted" | "rejected";

export interface LoadedBundle {
  readonly exports: BundleExports;
  readonly cache: CacheUse;
  /**
   * Saves this run's compiled code as the command's cache when it had none it could use
   * and may keep one; call once the command has succeeded (its real path is compiled by
   * then, not an error path). Never throws.
   */
  readonly saveCache: () => void;
}

/**
 * Compiles and runs the CommonJS bundle at `bundlePath`, with the cache when there is a
 * trusted one, and returns the bundle's exports. With `--enable-source-maps` the bundle is
 * loaded by Node's own `require` instead, since Node maps no `vm.Script` frames.
 */
export function loadBundle(bundlePath: string, argv: readonly string[]): LoadedBundle {
  if (process.sourceMapsEnabled) return { exports: createRequire(bundlePath)(bundlePath) as BundleExports, cache: "none", saveCache: () => undefined };
  const euid = process.geteuid?.() ?? -1;
  const fd = openSync(bundlePath, "r");
  let source: string;
  let stat: Stats;
  try {
    stat = fstatSync(fd);
    source = readWhole(fd, stat.size).toString("utf8");
  } finally {
    closeSync(fd);
  }
  const cacheFile = cacheFileFor(bundlePath, stat, argv);
  const cached = cacheFile === null ? null : readTrustedCache(cacheFile, euid);
  // The same wrapper Node puts around a CommonJS file, so the bundle sees what it expects.
  // No importModuleDynamically: a Script built from cached data cannot use one in Node 20,
  // so the bundle is built without import() (scripts/bundle.mjs checks).
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n})`;
  const script = new Script(wrapped, { filename: bundlePath, ...(cached === null ? {} : { cachedData: cached }) });
  const accepted = cached !== null && !script.cachedDataRejected;
  const saveCache =
    cacheFile !== null && !accepted && mayWriteCaches(bundlePath, euid)
      ? (): void => {
          try {
            writeCache(cacheFile, script.createCachedData(), euid);
          } catch {
            // A cache that cannot be written costs the next start its compile time, nothing else.
          }
        }
      : (): void => undefined;
  const module = { exports: {} as BundleExports };
  const run = script.runInThisContext() as (
    exports: unknown,
    require: NodeJS.Require,
    module: { exports: BundleExports },
    filename: string,
    dirname: string,
  ) => void;
  run(module.exports, createRequire(bundlePath), module, bundlePath, dirname(bundlePath));
  return { exports: module.exports, cache: cached === null ? "none" : accepted ? "accepted" : "rejected", saveCache };
}

/** What Node itself exits with when a module's top-level await never settles. */
const EXIT_UNSETTLED = 13;

/**
 * The launcher: loads the bundle, runs its `runCli(argv)`, ends with its exit code, and
 * saves the code cache once the command has succeeded. A command whose work stopped
 * waiting on nothing (its promise never settled) ends with 13, as Node's own unsettled
 * top-level await does, instead of 0 with no output; and leaves no cache.
 */
export function launch(bundlePath: string, argv: string[]): void {
  const cli = loadBundle(bundlePath, argv);
  if (process.env.PALISADE_DEBUG) process.stderr.write(`palisade: code cache ${cli.cache}\n`);
  let settled = false;
  process.once("exit", (code) => {
    if (!settled) {
      process.stderr.write("palisade: internal error: the command stopped before it finished (nothing left to wait for)\n");
      process.exitCode = EXIT_UNSETTLED;
      return;
    }
    if (code === 0) cli.saveCache();
  });
  cli.exports.runCli(argv).then(
    (code) => {
      settled = true;
      process.exitCode = code;
    },
    (error: unknown) => {
      settled = true;
      process.stderr.write(`palisade: ${String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
