/**
 * The QEMU command line for a validated spec: a pure function (no I/O, no defaults read
 * from the host), so every option is unit-tested.
 */
import { BugError } from "../util/errors.js";
import type { Accel } from "./accel.js";
import type { DiskSpec, NicSpec, VmSpec } from "./vm-spec.js";

/** Where a worker's control sockets live (inside its run directory). */
export interface WorkerPaths {
  readonly runDir: string;
  readonly qmpSocket: string;
  /** The serial console's socket; `console: socket:PATH` puts it at the user's path. */
  readonly consoleSocket: string;
}

/** Everything decided before the command line is written. */
export interface ArgvInputs {
  readonly spec: VmSpec;
  readonly accel: Accel;
  /** QEMU's `-cpu` value, from the partition policy. */
  readonly cpuArg: string;
  /** Host TSC frequency for TCG guests (see timingArgs); null when unknown. */
  readonly tscKhz: number | null;
  readonly paths: WorkerPaths;
  /** File descriptor numbers, in the worker, of the TAPs of the spec's switch NICs, in order. */
  readonly tapFds: readonly number[];
  /** Device classes the policy grants beyond disks, NICs and the console. */
  readonly entropy: boolean;
  readonly pvpanic: boolean;
  /** QEMU's own seccomp switches (`-sandbox …`), from the sandbox layer; empty to omit. */
  readonly seccompArgs: readonly string[];
  /** Palisade's version, shown to the guest (docs/guest-interface.md). */
  readonly palisadeVersion: string;
}

/** TCG translation cache, MiB: well inside the smallest worker overhead a policy grants (128 MiB). */
export const TCG_TB_CACHE_MIB = 64;

/** Debian's kernels are built with HZ=250; `lpj` only skips calibration, so a close value is enough. */
const GUEST_HZ = 250;

/**
 * Kernel arguments that make TCG boots under microvm reliable. microvm's hardware-reduced
 * ACPI gives Linux no PIT tick, HPET or PM timer, so the TSC frequency can only come from
 * a fast PIT calibration that fails at random under TCG; the guest then waits forever in
 * calibrate_delay(). Telling it the frequency (the guest reads the host TSC under TCG)
 * removes the race (host-notes.md: 0 hangs observed with it, 30–70% without).
 */
export function timingArgs(accel: Accel, tscKhz: number | null): string[] {
  if (accel !== "tcg" || tscKhz === null || tscKhz <= 0) return [];
  return [
    `tsc_early_khz=${tscKhz}`,
    `lpj=${Math.round((tscKhz * 1000) / GUEST_HZ)}`,
    // TCG's TSC follows the host's monotonic clock, but the guest's clocksource watchdog
    // compares it with jiffies, which run late whenever the host is busy, declares it
    // unstable and falls back to 4 ms jiffies: every guest timestamp (ping, iperf, logs)
    // then has 4 ms resolution. The TSC is the good clock here; trust it.
    "tsc=reliable",
  ];
}

/**
 * `noreplace-smp` for 1-vCPU TCG guests. A kernel that boots with one CPU rewrites every
 * `lock` prefix of its text to a no-op prefix (~9,200 sites in Debian's 6.1 cloud kernel),
 * one `text_poke` each: two CR3 switches per site, and TCG flushes its whole software TLB
 * on each. That was ~0.11 s of a ~0.25 s `alternative_instructions()`; boots reached the
 * ready marker ~0.15–0.17 s sooner with the parameter (10 of 10 paired boots, 2026-12-07).
 * It costs nothing at run time under TCG: QEMU translates a 1-vCPU guest's locked
 * instructions as plain ones. Under KVM the kept prefixes would cost real cycles and the
 * patching is cheap, so KVM guests keep the kernel's default; with 2+ vCPUs the kernel
 * does not patch.
 */
function upPatchingArgs(spec: VmSpec, accel: Accel): string[] {
  return accel === "tcg" && spec.vcpus === 1 ? ["noreplace-smp"] : [];
}

/** The guest kernel command line: Palisade's arguments first, the user's last (they win). */
export function kernelCommandLine(spec: VmSpec, accel: Accel, tscKhz: number | null): string {
  const user = spec.append.trim();
  const userKeys = new Set(user.split(/\s+/).map((arg) => arg.split("=")[0]));
  const ours = [
    "console=ttyS0",
    // A panic reboots at once: pvpanic reports it first, and a kernel without pvpanic
    // shows up as a reset the lifecycle can see, never as a guest stuck forever.
    "panic=-1",
    // microvm has no keyboard controller and its ACPI reset was not always honoured under
    // TCG (a reboot then hung after "Restarting system"): reboot by triple fault, which
    // QEMU always turns into a guest reset.
    ...(spec.machine === "microvm" ? ["reboot=t"] : []),
    ...timingArgs(accel, tscKhz),
    ...upPatchingArgs(spec, accel),
  ].filter((arg) => !userKeys.has(arg.split("=")[0]));
  return [...ours, user].filter((part) => part !== "").join(" ");
}

function deviceSuffix(machine: VmSpec["machine"]): string {
  return machine === "microvm" ? "device" : "pci";
}

function diskArgs(disk: DiskSpec, index: number, machine: VmSpec["machine"]): string[] {
  const fileNode = JSON.stringify({
    driver: "file",
    filename: disk.path,
    "node-name": `disk${index}-file`,
    "read-only": disk.readonly,
    locking: "on",
  });
  const formatNode = JSON.stringify({
    driver: disk.format,
    file: `disk${index}-file`,
    "node-name": `disk${index}`,
    "read-only": disk.readonly,
  });
  return [
    "-blockdev", fileNode,
    "-blockdev", formatNode,
    "-device", `virtio-blk-${deviceSuffix(machine)},drive=disk${index},id=vd${index},serial=palisade-disk${index}`,
  ];
}

function nicArgs(nic: NicSpec, index: number, tapFd: number | undefined, machine: VmSpec["machine"]): string[] {
  const mac = nic.mac === undefined ? "" : `,mac=${nic.mac}`;
  const device = ["-device", `virtio-net-${deviceSuffix(machine)},netdev=net${index},id=nic${index}${mac}`];
  switch (nic.kind) {
    case "user": {
      const forwards = nic.hostfwd.map((rule) => `,hostfwd=${rule}`).join("");
      return ["-netdev", `user,id=net${index}${forwards}`, ...device];
    }
    case "switch":
      if (tapFd === undefined) throw new BugError(`NIC ${index} on switch ${nic.switch} has no TAP file descriptor`);
      return ["-netdev", `tap,id=net${index},fd=${tapFd}`, ...device];
  }
}

/** The QEMU command line (without the binary) for a VM. */
export function qemuArgv(inputs: ArgvInputs): string[] {
  const { spec, paths } = inputs;
  const suffix = deviceSuffix(spec.machine);
  let nextTap = 0;
  const nics = spec.nics.flatMap((nic, index) =>
    nicArgs(nic, index, nic.kind === "switch" ? inputs.tapFds[nextTap++] : undefined, spec.machine),
  );
  return [
    "-name", `guest=${spec.name},debug-threads=on`,
    "-uuid", spec.uuid,
    "-nodefaults", "-no-user-config", "-display", "none",
    "-M", spec.machine === "microvm" ? "microvm,x-option-roms=off" : "q35",
    // TCG's translation cache defaults to 1 GiB and fills as the guest runs new code (a
    // reboot doubles it): bounded, so the worker stays inside its policy's memory limit.
    "-accel", inputs.accel === "tcg" ? `tcg,thread=multi,tb-size=${TCG_TB_CACHE_MIB}` : "kvm",
    "-cpu", inputs.cpuArg,
    "-m", `${spec.memoryMiB}M`,
    "-smp", String(spec.vcpus),
    "-kernel", spec.kernel,
    ...(spec.initrd === undefined ? [] : ["-initrd", spec.initrd]),
    "-append", kernelCommandLine(spec, inputs.accel, inputs.tscKhz),
    "-qmp", `unix:${paths.qmpSocket},server=on,wait=off`,
    "-chardev", `socket,id=console,path=${paths.consoleSocket},server=on,wait=off`,
    "-serial", "chardev:console",
    // Lifecycle is decided by whoever holds QMP (the lifecycle module), not by QEMU:
    // a reset or panic becomes an event, and shutdown never pauses.
    "-action", `reboot=${spec.onReboot === "exit" ? "shutdown" : "reset"},shutdown=poweroff,panic=${spec.onPanic === "exit" ? "shutdown" : "pause"}`,
    ...(inputs.pvpanic ? ["-device", "pvpanic"] : []),
    ...(inputs.entropy
      ? ["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", `virtio-rng-${suffix},rng=rng0`]
      : []),
    ...spec.disks.flatMap((disk, index) => diskArgs(disk, index, spec.machine)),
    ...nics,
    // How the guest learns it runs on Palisade (docs/guest-interface.md).
    "-fw_cfg", `name=opt/org.palisade/version,string=${inputs.palisadeVersion}`,
    "-fw_cfg", `name=opt/org.palisade/vm-id,string=${spec.uuid}`,
    ...(spec.machine === "q35"
      ? ["-smbios", `type=1,manufacturer=Palisade,product=Palisade VM,version=${inputs.palisadeVersion},serial=${spec.uuid},uuid=${spec.uuid}`]
      : []),
    ...inputs.seccompArgs,
  ];
}
