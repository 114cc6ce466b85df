/**
 * Loading the CLI bundle through V8's code cache: the start-up half of `launcher.ts`.
 *
 * Why: `palisade run` stands between the user and the guest's first instruction, and
 * Node compiles every function it runs from source on each start. Loaded as ES modules
 * the CLI spent ~50 ms before QEMU was spawned on resolving, linking and compiling; one
 * CommonJS bundle compiled with the bytecode V8 kept from an earlier run skips nearly all
 * of it (spawn at ~86 ms after Node's start instead of ~127 ms here; docs/design/boot-path.md).
 *
 * The cache is code: it is read only when owned by this user (or root) and writable by
 * no one else, and written only next to a bundle this user owns (whoever can write the
 * cache could write the bundle). Its name carries the bundle's inode, mtime (µs) and size,
 * because V8 itself checks only the source's length.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readSync, renameSync, statSync, writeFileSync, type Stats } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { Script, constants as vmConstants } from "node:vm";

/** A cache larger than this is not a cache Palisade wrote. */
const MAX_CACHE_BYTES = 64 * 1024 * 1024;
/** Commands without subcommands: their second word is an argument, not part of the key. */
const SINGLE_WORD_COMMANDS = new Set(["run", "start"]);
const WORD = /^[a-z][a-z-]{0,15}$/;

/** The directory of caches beside a bundle. */
export function cacheDirOf(bundlePath: string): string {
  return join(dirname(bundlePath), ".v8-cache");
}

/**
 * The cache file for a command (`run`, `disk-convert`, `vm-list`: each compiles different
 * functions) of this exact bundle file; null for informational invocations (`--help`,
 * `--version`, `--print-…`), whose compiled code would make a poor cache for the real
 * command and whose start-up matters little. Pure.
 */
export function cacheFileFor(bundlePath: string, bundle: Pick<Stats, "ino" | "mtimeMs" | "size">, argv: readonly string[]): string | null {
  const args = argv.slice(2);
  if (args.some((arg) => arg === "-h" || arg === "--help" || arg === "-V" || arg === "--version" || arg.startsWith("--print-"))) return null;
  const words = args.filter((arg) => !arg.startsWith("-")).slice(0, 2);
  const [first = "", second = ""] = words;
  if (!WORD.test(first)) return null;
  const command = SINGLE_WORD_COMMANDS.has(first) || !WORD.test(second) ? first : `${first}-${second}`;
  return join(cacheDirOf(bundlePath), `${command}-${bundle.ino}-${Math.trunc(bundle.mtimeMs * 1000)}-${bundle.size}.bin`);
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

/** The cache's bytes when the file exists and can be trusted (see above); else null. */
export function readTrustedCache(file: string, euid: number): Buffer | null {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return null;
  }
  try {
    const stat = fstatSync(fd);
    const ownerOk = stat.uid === euid || stat.uid === 0;
    if (!stat.isFile() || !ownerOk || (stat.mode & 0o022) !== 0 || stat.size === 0 || stat.size > MAX_CACHE_BYTES) return null;
    const bytes = readWhole(fd, stat.size);
    return bytes.length === stat.size ? bytes : null;
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Writes `bytes` as the cache, atomically (another CLI process may be writing it too). */
function writeCache(file: string, bytes: Buffer, euid: number): void {
  const dir = dirname(file);
  if (statSync(dirname(dir)).uid !== euid) return;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, bytes, { mode: 0o644 });
  renameSync(temporary, file);
}

interface BundleExports {
  runCli(argv: string[]): Promise<number>;
}

/** What became of the cache for this start: none found, used, or refused by V8. */
export type CacheUse = "none" | "accepted" | "rejected";

/**
 * Compiles and runs the CommonJS bundle at `bundlePath` (with the cache when there is a
 * trusted one), arranges for the cache to be written at exit when worthwhile, and returns
 * the bundle's exports.
 */
export function loadBundle(bundlePath: string, argv: readonly string[]): { exports: BundleExports; cache: CacheUse } {
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
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n})`;
  const script = new Script(wrapped, {
    filename: bundlePath,
    // `import()` inside the bundle (or a package it requires) resolves as in any module.
    importModuleDynamically: vmConstants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
    ...(cached === null ? {} : { cachedData: cached }),
  });
  const accepted = cached !== null && !script.cachedDataRejected ? cached.length : null;
  // Written once, by the first run of the command that succeeds: by then it has compiled
  // the command's real path, not an error path.
  if (cacheFile !== null && accepted === null)
    process.once("exit", (code) => {
      if (code !== 0) return;
      try {
        writeCache(cacheFile, script.createCachedData(), euid);
      } catch {
        // A cache that cannot be written costs the next start its compile time, nothing else.
      }
    });
  const module = { exports: {} as BundleExports };
  const run = script.runInThisContext() as (
    exports: unknown,
    require: NodeJS.Require,
    module: { exports: BundleExports },
    filename: string,
    dirname: string,
  ) => void;
  run(module.exports, createRequire(bundlePath), module, bundlePath, dirname(bundlePath));
  return { exports: module.exports, cache: cached === null ? "none" : accepted === null ? "rejected" : "accepted" };
}
