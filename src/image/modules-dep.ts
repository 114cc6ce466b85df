/**
 * Kernel module dependencies in depmod's `modules.dep` format: parsing, writing, and the
 * pure resolution of "these modules" into "load these files, in this order".
 *
 * Format (kmod `depmod.c`): one line per module, `path: dep dep …`, paths relative to
 * `/lib/modules/<version>/`, each line listing every module the first needs, directly or
 * not. Module names are file names without `.ko[.xz|.zst|.gz]`, with `-` read as `_`.
 */
import { ConfigError } from "../util/errors.js";

/** One module as `modules.dep` describes it. */
export interface ModuleDepEntry {
  /** Module name, normalized (`virtio_rng` for `virtio-rng.ko`). */
  readonly name: string;
  /** File path relative to the modules directory (`kernel/drivers/…/virtio-rng.ko`). */
  readonly path: string;
  /** Paths of the modules it needs, as listed. */
  readonly dependencies: readonly string[];
}

/** `modules.dep` parsed: module name -> entry. */
export type ModulesDep = ReadonlyMap<string, ModuleDepEntry>;

/** A module asked for is not in `modules.dep`. */
export class ModuleNotFoundError extends ConfigError {
  constructor(message: string) {
    super(message, "image.module-not-found");
  }
}

const MODULE_SUFFIX = /\.ko(\.(xz|zst|gz))?$/;

/**
 * The module name a file provides: base name without `.ko` and compression suffix,
 * dashes read as underscores (as the kernel and kmod compare names).
 *
 * @example moduleNameOf("kernel/drivers/char/hw_random/virtio-rng.ko.xz") // "virtio_rng"
 */
export function moduleNameOf(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return base.replace(MODULE_SUFFIX, "").replaceAll("-", "_");
}

/** A user-typed module name, normalized as {@link moduleNameOf} does. */
export function normalizeModuleName(name: string): string {
  return moduleNameOf(name.trim());
}

/**
 * Parses `modules.dep`. Blank lines and `#` comments are skipped.
 *
 * @throws {ConfigError} (`image.modules-dep`) on a line without `:` or a path that is
 *   not a module, naming the line number.
 */
export function parseModulesDep(text: string): ModulesDep {
  const modules = new Map<string, ModuleDepEntry>();
  const lines = text.split("\n");
  lines.forEach((rawLine, index) => {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    const path = colon === -1 ? "" : line.slice(0, colon).trim();
    if (!MODULE_SUFFIX.test(path)) {
      throw new ConfigError(
        `modules.dep line ${index + 1}: "${line.slice(0, 80)}" is not "module.ko: dependencies"`,
        "image.modules-dep",
      );
    }
    const dependencies = line
      .slice(colon + 1)
      .split(/\s+/)
      .filter((dep) => dep !== "");
    const name = moduleNameOf(path);
    // The first line for a name wins, as modprobe does.
    if (!modules.has(name)) modules.set(name, { name, path, dependencies });
  });
  return modules;
}

/** Writes entries back in `modules.dep` format, in the order given. */
export function formatModulesDep(entries: Iterable<ModuleDepEntry>): string {
  let text = "";
  for (const entry of entries) {
    text +=
      entry.dependencies.length === 0
        ? `${entry.path}:\n`
        : `${entry.path}: ${entry.dependencies.join(" ")}\n`;
  }
  return text;
}

/**
 * The modules to load for `wanted`, dependencies first, each once. Modules listed in
 * `builtin` (from `modules.builtin`) are part of the kernel: they are skipped, not an
 * error. Order among independent modules follows `wanted`.
 *
 * @throws {ModuleNotFoundError} naming the module (and who needed it) that is neither in
 *   `modules.dep` nor built in.
 * @throws {ConfigError} (`image.modules-dep`) on a dependency cycle.
 */
export function resolveModuleLoadOrder(
  modulesDep: ModulesDep,
  wanted: readonly string[],
  builtin: ReadonlySet<string> = new Set(),
): ModuleDepEntry[] {
  const byPath = new Map<string, ModuleDepEntry>();
  for (const entry of modulesDep.values()) byPath.set(entry.path, entry);
  const order: ModuleDepEntry[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();

  const visit = (entry: ModuleDepEntry, chain: readonly string[]): void => {
    if (done.has(entry.name)) return;
    if (visiting.has(entry.name)) {
      throw new ConfigError(
        `Kernel modules depend on each other in a cycle: ${[...chain, entry.name].join(" -> ")}`,
        "image.modules-dep",
      );
    }
    visiting.add(entry.name);
    // modules.dep lists the farthest dependencies last; load those first.
    for (const depPath of [...entry.dependencies].reverse()) {
      const dep = byPath.get(depPath) ?? modulesDep.get(moduleNameOf(depPath));
      if (dep === undefined) {
        if (builtin.has(moduleNameOf(depPath))) continue;
        throw new ModuleNotFoundError(
          `Kernel module ${moduleNameOf(depPath)} (needed by ${entry.name}) is missing from modules.dep`,
        );
      }
      visit(dep, [...chain, entry.name]);
    }
    visiting.delete(entry.name);
    done.add(entry.name);
    order.push(entry);
  };

  for (const rawName of wanted) {
    const name = normalizeModuleName(rawName);
    const entry = modulesDep.get(name);
    if (entry === undefined) {
      if (builtin.has(name)) continue;
      throw new ModuleNotFoundError(
        `Kernel module ${name} is neither in this kernel's modules.dep nor built in; check the name with "modinfo ${name}" or leave it out of --modules`,
      );
    }
    visit(entry, []);
  }
  return order;
}

/** Module names listed in `modules.builtin` (one path per line). */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "")
      .map(moduleNameOf),
  );
}

/** A module and the names of the modules it needs directly (its `depends=` field). */
export interface DirectDependencies {
  readonly name: string;
  readonly path: string;
  readonly depends: readonly string[];
}

/**
 * Builds `modules.dep` entries (every dependency, direct or not, farthest last, as
 * depmod writes them) from each module's direct dependencies. A dependency that no
 * module provides is left out here and reported when something asks for it.
 */
export function modulesDepFromDirect(modules: readonly DirectDependencies[]): ModuleDepEntry[] {
  const byName = new Map(modules.map((module) => [module.name, module]));
  const closureCache = new Map<string, string[]>();
  // Names of every dependency of `name`, dependencies first (a load order).
  const closure = (name: string, visiting: Set<string>): string[] => {
    const cached = closureCache.get(name);
    if (cached !== undefined) return cached;
    const order: string[] = [];
    visiting.add(name);
    for (const dep of byName.get(name)?.depends ?? []) {
      if (!byName.has(dep) || visiting.has(dep)) continue;
      for (const inner of [...closure(dep, visiting), dep]) if (!order.includes(inner)) order.push(inner);
    }
    visiting.delete(name);
    closureCache.set(name, order);
    return order;
  };
  return modules.map((module) => ({
    name: module.name,
    path: module.path,
    dependencies: closure(module.name, new Set())
      .reverse()
      .map((dep) => byName.get(dep)?.path ?? dep),
  }));
}
