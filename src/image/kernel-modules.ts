/**
 * Finds the kernel modules an image needs in a kernel's module tree: reads its
 * `modules.dep` (or, when a package ships none, works the same entries out from the
 * wanted modules' `depends=`), resolves the load order, and reads the module files,
 * decompressed (busybox `insmod` and kernels without in-kernel decompression need plain
 * `.ko`).
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { HostError } from "../util/errors.js";
import { runCommand, stderrSummary } from "./host-command.js";
import { modinfoDepends, readModinfo } from "./modinfo.js";
import {
  type DirectDependencies,
  type ModuleDepEntry,
  type ModulesDep,
  ModuleNotFoundError,
  moduleNameOf,
  modulesDepFromDirect,
  parseModulesBuiltin,
  parseModulesDep,
  resolveModuleLoadOrder,
} from "./modules-dep.js";

/** The modules chosen for an image. */
export interface ModuleSelection {
  /** In load order. */
  readonly loadOrder: readonly ModuleDepEntry[];
  /** Plain `.ko` bytes by entry path. */
  readonly bytes: ReadonlyMap<string, Uint8Array>;
  /** Default modules this kernel does not have (only when the list was not given explicitly). */
  readonly skipped: readonly string[];
}

/** Reads a module file, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz`. */
export async function readModuleFile(path: string): Promise<Uint8Array> {
  if (path.endsWith(".ko")) return readFile(path);
  if (path.endsWith(".ko.gz")) return gunzipSync(await readFile(path));
  const tool = path.endsWith(".ko.xz") ? "xz" : path.endsWith(".ko.zst") ? "zstd" : undefined;
  if (tool === undefined)
    throw new HostError(
      `${path} is not a kernel module file (.ko, .ko.xz, .ko.zst, .ko.gz)`,
      "image.module-file",
    );
  const result = await runCommand(tool, ["-dc", path], { timeoutMs: 60_000 });
  if (result.code !== 0)
    throw new HostError(`${tool} -dc ${path} failed: ${stderrSummary(result.stderr)}`, "image.module-file");
  return result.stdout;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch {
    return undefined;
  }
}

/** `modules.dep` entries for `wanted` and what they need, from each module's `depends=`. */
async function modulesDepFromModinfo(modulesDir: string, wanted: readonly string[]): Promise<ModulesDep> {
  const paths = new Map<string, string>();
  for (const name of await readdir(modulesDir, { recursive: true })) {
    if (/\.ko(\.(xz|zst|gz))?$/.test(name) && !paths.has(moduleNameOf(name)))
      paths.set(moduleNameOf(name), name);
  }
  const direct: DirectDependencies[] = [];
  const queue = [...wanted];
  const seen = new Set<string>();
  for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
    const path = paths.get(name);
    if (seen.has(name) || path === undefined) continue;
    seen.add(name);
    const depends = modinfoDepends(readModinfo(await readModuleFile(join(modulesDir, path))));
    direct.push({ name, path, depends });
    queue.push(...depends);
  }
  return new Map(modulesDepFromDirect(direct).map((entry) => [entry.name, entry]));
}

/**
 * Picks the modules to load from a kernel's module tree.
 *
 * @param explicit the list came from the user (`--modules`): a module the kernel lacks
 *   is then an error; for the default list it is skipped and reported in `skipped`.
 * @throws {ModuleNotFoundError} (`image.module-not-found`) naming the module.
 */
export async function selectModules(
  modulesDir: string | undefined,
  release: string,
  wanted: readonly string[],
  explicit: boolean,
): Promise<ModuleSelection> {
  if (wanted.length === 0) return { loadOrder: [], bytes: new Map(), skipped: [] };
  if (modulesDir === undefined) {
    if (explicit) {
      throw new ModuleNotFoundError(
        `--modules: kernel ${release} has no modules on this host (no /lib/modules/${release}); use a kernel package, or a kernel with the drivers built in and no --modules`,
      );
    }
    return { loadOrder: [], bytes: new Map(), skipped: [...wanted] };
  }
  const builtin = parseModulesBuiltin((await readOptional(join(modulesDir, "modules.builtin"))) ?? "");
  const depText = await readOptional(join(modulesDir, "modules.dep"));
  const modulesDep =
    depText !== undefined ? parseModulesDep(depText) : await modulesDepFromModinfo(modulesDir, wanted);
  const skipped = explicit ? [] : wanted.filter((name) => !modulesDep.has(name) && !builtin.has(name));
  const loadOrder = resolveModuleLoadOrder(
    modulesDep,
    wanted.filter((name) => !skipped.includes(name)),
    builtin,
  );
  const bytes = new Map<string, Uint8Array>();
  for (const entry of loadOrder) {
    const path = join(modulesDir, entry.path);
    if (!(await stat(path).catch(() => undefined))?.isFile()) {
      throw new ModuleNotFoundError(
        `Kernel module ${entry.name} is listed in modules.dep as ${entry.path}, but ${path} is missing`,
      );
    }
    bytes.set(entry.path, await readModuleFile(path));
  }
  return { loadOrder, bytes, skipped };
}

/** The path a module gets in the guest: under `/lib/modules/<release>/`, as a plain `.ko`. */
export function guestModulePath(release: string, entryPath: string): string {
  return `/lib/modules/${release}/${entryPath.replace(/\.ko\.(xz|zst|gz)$/, ".ko")}`;
}
