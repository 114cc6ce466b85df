/**
 * What `palisade image build` can be asked for, and the pure parsing of its flags into a
 * checked {@link BuildRequest}. File existence is checked later, when building.
 */
import { posix, resolve } from "node:path";
import { ConfigError } from "../util/errors.js";
import { checkPackageName } from "./apt-record.js";
import { normalizeModuleName } from "./modules-dep.js";

/** Debian's kernel for virtual machines: small, virtio drivers as modules. */
export const DEFAULT_KERNEL_PACKAGE = "linux-image-cloud-amd64";

/**
 * Modules loaded by default, in this order (each after its dependencies):
 * virtio transports for `-M microvm` (virtio_mmio) and q35 (virtio_pci), the virtio
 * devices Palisade gives guests, the ACPI power button with evdev (so QEMU's
 * `system_powerdown` reaches busybox `acpid`), and pvpanic (ISA/ACPI and PCI) so a guest
 * panic is reported to QEMU as `GUEST_PANICKED`.
 */
export const DEFAULT_MODULES: readonly string[] = [
  "virtio_mmio",
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "virtio_console",
  "virtio_rng",
  "evdev",
  "button",
  "pvpanic_mmio",
  "pvpanic_pci",
  // /sys/firmware/qemu_fw_cfg: how the guest reads Palisade's version and its VM id (docs/guest-interface.md).
  "qemu_fw_cfg",
];

/** Where the kernel comes from. */
export type KernelSource =
  { readonly kind: "package"; readonly name: string } | { readonly kind: "file"; readonly path: string };

/** A host file or directory copied into the guest. */
export interface AddedPath {
  /** Absolute host path. */
  readonly hostPath: string;
  /** Absolute, normalized guest path. */
  readonly guestPath: string;
}

/** A checked build request (flags or API), before any file is looked at. */
export interface BuildRequest {
  readonly kernel: KernelSource;
  /** Module names, normalized, in the order asked. */
  readonly modules: readonly string[];
  readonly add: readonly AddedPath[];
  /** Absolute host paths of binaries copied to the same path in the guest, with their libraries. */
  readonly addBinaries: readonly string[];
}

/** The flags of `palisade image build` as commander hands them over. */
export interface ImageBuildFlags {
  readonly kernel?: string | undefined;
  readonly kernelPackage?: string | undefined;
  readonly modules?: string | undefined;
  readonly add?: readonly string[] | undefined;
  readonly addBinary?: readonly string[] | undefined;
}

/** Guest paths the image's contract owns: `/init` and what it mounts over. */
const RESERVED_GUEST_PATHS = ["/init", "/proc", "/sys", "/dev", "/run", "/etc/palisade"];

const MODULE_NAME = /^[A-Za-z0-9_-]+$/;

/** Whether a guest path belongs to the image's `/init` (it, or under what it mounts or owns). */
export function isReservedGuestPath(guestPath: string): string | undefined {
  return RESERVED_GUEST_PATHS.find((path) => guestPath === path || guestPath.startsWith(`${path}/`));
}

/**
 * Parses `--modules a,b,c`. The word `default` stands for {@link DEFAULT_MODULES}, so
 * `--modules default,xfs` adds to them; an empty value means no modules.
 *
 * @throws {ConfigError} (`image.bad-modules`) naming the bad entry.
 */
export function parseModuleList(value: string): string[] {
  const names: string[] = [];
  for (const raw of value.split(",")) {
    const item = raw.trim();
    if (item === "") continue;
    const expanded = item === "default" ? DEFAULT_MODULES : [item];
    for (const name of expanded) {
      if (!MODULE_NAME.test(name)) {
        throw new ConfigError(
          `--modules: "${name}" is not a kernel module name (letters, digits, "_" and "-"; e.g. --modules default,xfs)`,
          "image.bad-modules",
        );
      }
      const normalized = normalizeModuleName(name);
      if (!names.includes(normalized)) names.push(normalized);
    }
  }
  return names;
}

/**
 * Parses one `--add HOST:GUEST`. The split is at the last `:` followed by `/`, so a host
 * path may contain colons; the guest path must be absolute and stay out of the paths the
 * image's `/init` owns.
 *
 * @param cwd directory a relative host path is taken from.
 * @throws {ConfigError} (`image.bad-add`) quoting the value and saying what is expected.
 */
export function parseAddSpec(value: string, cwd: string): AddedPath {
  const split = value.lastIndexOf(":/");
  const hostPart = split === -1 ? "" : value.slice(0, split);
  const guestPart = split === -1 ? "" : value.slice(split + 1);
  if (hostPart === "" || guestPart === "") {
    throw new ConfigError(
      `--add "${value}": expected HOST:GUEST with an absolute guest path, e.g. --add ./job.fio:/root/job.fio`,
      "image.bad-add",
    );
  }
  const guestPath = posix.normalize(guestPart).replace(/\/+$/, "");
  if (guestPath === "" || guestPath.includes("\0")) {
    throw new ConfigError(
      `--add "${value}": the guest path cannot be the root directory; name a file or directory inside it`,
      "image.bad-add",
    );
  }
  const reserved = isReservedGuestPath(guestPath);
  if (reserved !== undefined) {
    throw new ConfigError(
      `--add "${value}": ${reserved} belongs to the image's /init (docs/design/guest-image.md); choose another guest path`,
      "image.bad-add",
    );
  }
  return { hostPath: resolve(cwd, hostPart), guestPath };
}

/**
 * Turns the flags of `palisade image build` into a build request.
 *
 * @throws {ConfigError} on conflicting or malformed flags, naming the flag.
 */
export function parseImageBuildFlags(flags: ImageBuildFlags, cwd: string): BuildRequest {
  if (flags.kernel !== undefined && flags.kernelPackage !== undefined) {
    throw new ConfigError(
      "--kernel and --kernel-package both name a kernel; give one of them",
      "image.bad-kernel-source",
    );
  }
  let kernel: KernelSource = { kind: "package", name: DEFAULT_KERNEL_PACKAGE };
  if (flags.kernel !== undefined) {
    if (flags.kernel === "")
      throw new ConfigError("--kernel: the kernel file path is empty", "image.bad-kernel-source");
    kernel = { kind: "file", path: resolve(cwd, flags.kernel) };
  } else if (flags.kernelPackage !== undefined) {
    kernel = { kind: "package", name: checkPackageName(flags.kernelPackage, "--kernel-package") };
  }
  const addBinaries = (flags.addBinary ?? []).map((path) => {
    if (path === "") throw new ConfigError("--add-binary: the binary path is empty", "image.bad-add");
    return resolve(cwd, path);
  });
  return {
    kernel,
    modules: flags.modules === undefined ? [...DEFAULT_MODULES] : parseModuleList(flags.modules),
    add: (flags.add ?? []).map((value) => parseAddSpec(value, cwd)),
    addBinaries,
  };
}
