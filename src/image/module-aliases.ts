/**
 * Which of an image's modules the guest loads by device (coldplug) and which at every
 * boot, and the `modules.alias` that maps a device to its driver. Pure: the builder
 * passes each module's `.modinfo` (see `modinfo.ts`).
 *
 * Why: `/init` loaded all 18 modules of the image at every boot, drivers for devices the
 * VM does not have included (virtio_pci on a machine without PCI). A VM gets only the
 * devices its policy grants, so it now loads only their drivers, as udev does on a full
 * system: 9 modules on microvm, and `/init`'s module phase went from 150 to 130 ms
 * (the prompt ~29 ms sooner, 10 paired boots, 2026-12-07; docs/design/boot-path.md).
 *
 * Reference: Linux `scripts/mod/file2alias.c` (the `bus:…` alias each device table
 * becomes), kmod's `modules.alias` format (`alias PATTERN MODULE`, fnmatch patterns).
 */

/** A module of the image with its `.modinfo` strings. */
export interface ModuleInfo {
  /** Module name as `modules.dep` names it (`virtio_blk`, `pvpanic_mmio`). */
  readonly name: string;
  readonly modinfo: readonly (readonly [string, string])[];
}

/**
 * Buses whose devices show a `modalias` in sysfs (`/sys/bus/<bus>/devices/*\/modalias`),
 * which the guest's coldplug reads. A module with an alias on one of them is a driver
 * for a device; it is loaded when that device is there. Aliases of other kinds — `fs-`,
 * `char-major-`, `devname:`, `crypto-`, and `cpu:` (the cpu bus's modalias is a feature
 * list too long for busybox `modprobe`, which truncates names) — do not say a device
 * exists: such modules are loaded at every boot.
 */
const COLDPLUG_BUSES: ReadonlySet<string> = new Set([
  "acpi",
  "hid",
  "i2c",
  "input",
  "mdio",
  "of",
  "pci",
  "platform",
  "pnp",
  "scsi",
  "sdio",
  "serio",
  "spi",
  "usb",
  "virtio",
  "vmbus",
  "xen",
]);

/** The bus an alias pattern matches devices of (`acpi*:LNRO0005:*` → `acpi`), if any. */
export function aliasBus(pattern: string): string | undefined {
  const colon = pattern.indexOf(":");
  if (colon <= 0) return undefined;
  const bus = pattern.slice(0, colon).replace(/\*$/, "");
  return COLDPLUG_BUSES.has(bus) ? bus : undefined;
}

function aliasesOf(module: ModuleInfo): string[] {
  return module.modinfo.filter(([key]) => key === "alias").map(([, value]) => value);
}

/** True when the module drives a device that coldplug finds (so it is loaded only with one). */
export function isDeviceDriver(module: ModuleInfo): boolean {
  return aliasesOf(module).some((pattern) => aliasBus(pattern) !== undefined);
}

/**
 * `modules.alias` for the image: one `alias PATTERN MODULE` line per alias of each
 * module, in the order given (as depmod writes it). Patterns with whitespace are left
 * out: the file's fields are separated by blanks, and no device alias has any.
 */
export function formatModulesAlias(modules: readonly ModuleInfo[]): string {
  const lines: string[] = [];
  for (const module of modules) {
    for (const pattern of aliasesOf(module)) {
      if (pattern === "" || /\s/.test(pattern)) continue;
      lines.push(`alias ${pattern} ${module.name}\n`);
    }
  }
  return lines.join("");
}

/**
 * The modules `/init` loads at every boot: those asked for (`wanted`, in that order)
 * that drive no coldplugged device — file systems, `tun`, CPU-specific crypto. Their
 * dependencies are not listed: `modprobe` loads them from `modules.dep`. Modules that
 * are only dependencies of others are never listed.
 */
export function modulesLoadedAtBoot(wanted: readonly string[], modules: readonly ModuleInfo[]): string[] {
  const byName = new Map(modules.map((module) => [module.name, module]));
  return wanted.filter((name) => {
    const module = byName.get(name);
    return module !== undefined && !isDeviceDriver(module);
  });
}
