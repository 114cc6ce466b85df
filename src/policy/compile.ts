/**
 * Compiles a partition policy, for one host, into the values the worker is built from:
 * QEMU's `-cpu` value, the set of device classes, limits, trust level, networking and
 * sandbox switches. Pure: the host is described by {@link PolicyHostFacts}.
 */
import { PolicyError, type DeviceClass, type PartitionPolicy } from "./partition-policy.js";

/** What compilation needs to know about the host, probed at the edge. */
export interface PolicyHostFacts {
  /** The accelerator the VM will run under. */
  readonly accel: "kvm" | "tcg";
  readonly hostCpuVendor: "intel" | "amd" | "other";
}

/** The limits of a policy, as compiled (same fields as `PartitionPolicy["limits"]`). */
export type CompiledLimits = Readonly<PartitionPolicy["limits"]>;

/** A policy compiled for one host: what the engine and the sandbox consume. */
export interface CompiledPolicy {
  /** QEMU's `-cpu` value, e.g. `max,-vmx,-svm,-la57` (TCG) or `host,-vmx,-svm` (KVM, host model shown). */
  readonly cpuArg: string;
  readonly allowedDevices: ReadonlySet<DeviceClass>;
  readonly limits: CompiledLimits;
  readonly trustLevel: string;
  /** QEMU user-mode networking may be used (the worker then shares the host's network namespace). */
  readonly userNetAllowed: boolean;
  readonly sandboxEnabled: boolean;
}

/**
 * Named models used for `baseline` under KVM: old enough to run on any host of that
 * vendor still in service (x86-64-v2: SSE4.2, POPCNT, CMPXCHG16B), and naming no host.
 */
export const BASELINE_CPU_MODELS: Readonly<Record<PolicyHostFacts["hostCpuVendor"], string>> = {
  intel: "Nehalem",
  amd: "Opteron_G4",
  other: "qemu64",
};

/**
 * Features of TCG's `max` that break guests, removed unless the policy names them.
 * `la57` (5-level paging): with it, Debian 12's cloud kernel under QEMU 7.2 TCG runs no
 * static glibc program (busybox aborts in `_dl_get_origin`), so no guest user space starts
 * (measured on q35 and microvm; without it the same image boots).
 */
export const TCG_MAX_UNSAFE_FEATURES: readonly string[] = ["la57"];

/**
 * The CPU model part of `-cpu`. Under TCG there is no host CPU to show: both
 * `host-passthrough` and `baseline` become `max` (every feature TCG emulates, with
 * QEMU's own model name). Under KVM `host-passthrough` is `host` (the resolved policy
 * guarantees showHostModel is then true) and `baseline` a named model per vendor.
 */
function cpuModel(policy: PartitionPolicy, host: PolicyHostFacts): string {
  const { model } = policy.cpu;
  if (model !== "host-passthrough" && model !== "baseline") return model;
  if (host.accel === "tcg") return "max";
  return model === "host-passthrough" ? "host" : BASELINE_CPU_MODELS[host.hostCpuVendor];
}

/**
 * The feature flags part of `-cpu`: the policy's enables and disables, then vmx and svm
 * off unless nested virtualization is granted. On AMD hosts under KVM, `host` also drops
 * `arch-capabilities`, which QEMU otherwise fails to set (MSR 0x10a, host-notes.md).
 */
function cpuFeatures(policy: PartitionPolicy, base: string, host: PolicyHostFacts): string[] {
  const flags = [
    ...policy.cpu.features.enable.map((feature) => `+${feature}`),
    ...policy.cpu.features.disable.map((feature) => `-${feature}`),
  ];
  if (!policy.cpu.nestedVirtualization) {
    for (const feature of ["vmx", "svm"])
      if (!policy.cpu.features.disable.includes(feature)) flags.push(`-${feature}`);
  }
  if (
    base === "host" &&
    host.hostCpuVendor === "amd" &&
    !policy.cpu.features.disable.includes("arch-capabilities")
  ) {
    flags.push("-arch-capabilities");
  }
  if (base === "max" && host.accel === "tcg") {
    for (const feature of TCG_MAX_UNSAFE_FEATURES) {
      if (!policy.cpu.features.enable.includes(feature) && !policy.cpu.features.disable.includes(feature))
        flags.push(`-${feature}`);
    }
  }
  return flags;
}

/**
 * Compiles `policy` for a host. Pure and total: a resolved policy always compiles.
 *
 * @example
 * compilePolicy(resolvePolicy("default"), { accel: "tcg", hostCpuVendor: "intel" }).cpuArg // "max,-vmx,-svm,-la57"
 */
export function compilePolicy(policy: PartitionPolicy, host: PolicyHostFacts): CompiledPolicy {
  const base = cpuModel(policy, host);
  return {
    cpuArg: [base, ...cpuFeatures(policy, base, host)].join(","),
    allowedDevices: new Set(policy.devices),
    limits: Object.freeze({ ...policy.limits }),
    trustLevel: policy.trustLevel,
    userNetAllowed: policy.network.userNet,
    sandboxEnabled: policy.sandbox.enabled,
  };
}

/**
 * Refuses a device the policy does not grant.
 *
 * @param what names the device for the message, e.g. `disk "data" (/vms/a/data.raw)`.
 * @throws {PolicyError} when `deviceClass` is not in `compiled.allowedDevices`.
 */
export function assertDeviceAllowed(compiled: CompiledPolicy, deviceClass: DeviceClass, what: string): void {
  if (!compiled.allowedDevices.has(deviceClass)) {
    const granted = [...compiled.allowedDevices].join(", ") || "none";
    throw new PolicyError(
      `Partition policy does not grant ${deviceClass} devices, needed by ${what} (granted: ${granted})`,
      "devices",
    );
  }
}

/**
 * Refuses a VM bigger than its policy allows.
 *
 * @throws {PolicyError} naming `limits.maxMemoryMiB` or `limits.maxVcpus`.
 */
export function assertVmFits(
  compiled: CompiledPolicy,
  vm: { readonly memoryMiB: number; readonly vcpus: number },
): void {
  if (vm.memoryMiB > compiled.limits.maxMemoryMiB) {
    throw new PolicyError(
      `VM memory ${vm.memoryMiB} MiB exceeds the policy's limits.maxMemoryMiB (${compiled.limits.maxMemoryMiB} MiB)`,
      "limits.maxMemoryMiB",
    );
  }
  if (vm.vcpus > compiled.limits.maxVcpus) {
    throw new PolicyError(
      `VM vCPU count ${vm.vcpus} exceeds the policy's limits.maxVcpus (${compiled.limits.maxVcpus})`,
      "limits.maxVcpus",
    );
  }
}

/** Resource limits for one worker, in the shape of the sandbox's `JailSpec["limits"]`. */
export interface WorkerResourceLimits {
  /** Guest RAM plus the policy's worker overhead. */
  readonly memoryBytes: bigint;
  readonly pids: number;
  /** CPU in percent of one host CPU, capped at 100 × vCPUs (a worker cannot use more usefully). */
  readonly cpuPercent: number;
  readonly openFiles: number;
  /** Relative I/O weight (cgroup v2 `io.weight` scale), when the policy sets one. */
  readonly ioWeight?: number;
}

/**
 * The worker limits for a VM of `memoryMiB` and `vcpus` under `compiled`.
 *
 * @throws {PolicyError} when the VM does not fit the policy (see {@link assertVmFits}).
 */
export function workerResourceLimits(
  compiled: CompiledPolicy,
  vm: { readonly memoryMiB: number; readonly vcpus: number },
): WorkerResourceLimits {
  assertVmFits(compiled, vm);
  const MiB = 1024n * 1024n;
  return {
    memoryBytes: (BigInt(vm.memoryMiB) + BigInt(compiled.limits.workerOverheadMiB)) * MiB,
    pids: compiled.limits.pids,
    // One emulation thread per vCPU plus QEMU's main and I/O threads (up to 100 % more).
    cpuPercent: Math.min(compiled.limits.cpuPercent, 100 * (vm.vcpus + 1)),
    openFiles: compiled.limits.openFiles,
    ...(compiled.limits.ioWeight === undefined ? {} : { ioWeight: compiled.limits.ioWeight }),
  };
}
