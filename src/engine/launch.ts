/**
 * Starting a VM from a spec: preflight, accelerator choice, the command line, the worker.
 * The one place that joins the pure decisions to the edges.
 */
import { HostError } from "../util/errors.js";
import { VERSION } from "../util/version.js";
import { chooseAccel, type AccelChoice } from "./accel.js";
import type { HostFacts } from "./host-facts.js";
import { preflight } from "./preflight.js";
import { qemuArgv, type ArgvInputs } from "./qemu-argv.js";
import { workerPaths } from "./run-dir.js";
import type { VmSpec } from "./vm-spec.js";
import { Worker } from "./worker.js";

/** QEMU's own seccomp filter: everything it lets us deny, denied. */
export const QEMU_SANDBOX_ARGS = ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"];

export interface PlannedVm {
  readonly accel: AccelChoice;
  readonly argvInputs: ArgvInputs;
  readonly qemuBinary: string;
  readonly argv: readonly string[];
}

/** The CPU model a guest sees until the partition policy decides it: no nested virtualization. */
function cpuArgFor(accel: AccelChoice["accel"], host: HostFacts): string {
  // TCG's "max" offers 5-level paging (la57); Debian's static busybox aborts at start in
  // such a guest (glibc's _dl_get_origin assertion), so the guest gets 4-level paging.
  if (accel === "tcg") return "max,-svm,-vmx,-la57";
  // QEMU on AMD hosts fails to set MSR 0x10a unless arch-capabilities is off (host-notes.md).
  return host.cpuVendor === "amd" ? "host,-arch-capabilities,-svm" : "host,-vmx";
}

/**
 * Decides everything about a VM's worker without starting it (for `--print-cmdline`).
 * @throws {HostError} when QEMU is missing or the accelerator cannot be had.
 */
export function planVm(spec: VmSpec, host: HostFacts, runRoot: string, tapFds: readonly number[] = []): PlannedVm {
  if (host.qemuBinary === null) throw new HostError("QEMU is not installed; install it with: apt-get install qemu-system-x86", "host.no-qemu");
  const accel = chooseAccel(spec.accel, host);
  const argvInputs: ArgvInputs = {
    spec,
    accel: accel.accel,
    cpuArg: cpuArgFor(accel.accel, host),
    tscKhz: host.tscKhz,
    paths: workerPaths(runRoot, spec),
    tapFds,
    entropy: true,
    pvpanic: true,
    seccompArgs: QEMU_SANDBOX_ARGS,
    palisadeVersion: VERSION,
  };
  return { accel, argvInputs, qemuBinary: host.qemuBinary, argv: qemuArgv(argvInputs) };
}

export interface StartOptions {
  readonly runRoot: string;
  readonly detached: boolean;
  /** Called with the accelerator line before QEMU starts. */
  readonly onAccel?: (choice: AccelChoice) => void;
}

/**
 * Checks the spec against the host, then starts its worker.
 * @throws {ConfigError|HostError} for bad input or a host that cannot run it;
 *   {WorkerStartError} when QEMU fails to start.
 */
export async function startVm(spec: VmSpec, host: HostFacts, options: StartOptions): Promise<Worker> {
  const disks = await preflight(spec, host, options.runRoot);
  const plan = planVm(spec, host, options.runRoot);
  options.onAccel?.(plan.accel);
  return Worker.launch({
    spec,
    accel: plan.accel.accel,
    qemuBinary: plan.qemuBinary,
    qemuArgv: plan.argv,
    paths: plan.argvInputs.paths,
    detached: options.detached,
    diskRealPaths: disks,
  });
}
