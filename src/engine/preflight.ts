/**
 * Checks made before a worker starts, so that each bad input gets its own clear error
 * instead of a QEMU message or a silent guest.
 */
import { accessSync, constants, existsSync, realpathSync, statSync } from "node:fs";
import { ConfigError, HostError } from "../util/errors.js";
import type { HostFacts } from "./host-facts.js";
import { checkKernelFile } from "./kernel-image.js";
import { listLiveWorkers } from "./run-dir.js";
import type { VmSpec } from "./vm-spec.js";

export const QEMU_INSTALL_HINT = "install it with: apt-get install qemu-system-x86";

function checkReadable(path: string, what: string, writable: boolean): void {
  if (!existsSync(path)) throw new ConfigError(`${what} ${path} does not exist`, "config.missing-file");
  if (statSync(path).isDirectory()) throw new ConfigError(`${what} ${path} is a directory`, "config.bad-file");
  try {
    accessSync(path, constants.R_OK | (writable ? constants.W_OK : 0));
  } catch {
    throw new ConfigError(`${what} ${path} is not ${writable ? "readable and writable" : "readable"}`, "config.bad-file");
  }
}

/**
 * Validates a spec against this host and the VMs already running under `runRoot`.
 * Returns the disks' real paths.
 * @throws {ConfigError} for bad user input; {HostError} when the host lacks something.
 */
export async function preflight(
  spec: VmSpec,
  host: HostFacts,
  runRoot: string,
): Promise<{ path: string; readonly: boolean }[]> {
  if (host.qemuBinary === null) throw new HostError(`QEMU (qemu-system-x86_64) is not installed; ${QEMU_INSTALL_HINT}`, "host.no-qemu");
  await checkKernelFile(spec.kernel);
  if (spec.initrd !== undefined) checkReadable(spec.initrd, "Initrd", false);
  if (spec.memoryMiB > host.memoryAvailableMiB) {
    throw new ConfigError(
      `--memory ${spec.memoryMiB} MiB is more than the host can give (${host.memoryAvailableMiB} MiB available)`,
      "config.memory",
    );
  }
  const live = listLiveWorkers(runRoot);
  const sameName = live.find((record) => record.name === spec.name);
  if (sameName !== undefined) {
    throw new ConfigError(`A VM named ${spec.name} is already running (worker pid ${sameName.pid})`, "config.name-taken");
  }
  if (spec.console.kind === "socket" && existsSync(spec.console.path)) {
    throw new ConfigError(`Console socket path ${spec.console.path} is already taken; remove it or choose another`, "config.console-taken");
  }
  const disks = spec.disks.map((disk) => {
    checkReadable(disk.path, "Disk", !disk.readonly);
    return { path: realpathSync(disk.path), readonly: disk.readonly };
  });
  const seen = new Set<string>();
  for (const disk of disks) {
    if (seen.has(disk.path)) throw new ConfigError(`Disk ${disk.path} is given twice`, "config.disk-twice");
    seen.add(disk.path);
    for (const record of live) {
      const held = record.diskRealPaths.find((other) => other.path === disk.path);
      // Several VMs may read one image; nobody may share it with a writer.
      if (held !== undefined && !(held.readonly && disk.readonly)) {
        throw new ConfigError(`Disk ${disk.path} is in use by running VM ${record.name}`, "config.disk-in-use");
      }
    }
  }
  return disks;
}
