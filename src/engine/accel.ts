/**
 * Accelerator choice: KVM where the host has working hardware virtualization, QEMU's TCG
 * otherwise, with the reason in one line. Pure: host facts come in as a value.
 */
import { HostError } from "../util/errors.js";
import type { HostFacts } from "./host-facts.js";

export type Accel = "kvm" | "tcg";

export interface AccelChoice {
  readonly accel: Accel;
  /** One line a user reads: which accelerator and why. */
  readonly reason: string;
}

/** Why KVM cannot run stock guests here, or null when it can. */
export function kvmUnavailableReason(host: HostFacts): string | null {
  if (host.kvm.pvm) {
    return "/dev/kvm is PVM (kvm_pvm module, no VT-x/AMD-V): stock guest kernels cannot run on it";
  }
  if (!host.kvm.deviceUsable) {
    return "/dev/kvm is missing or not readable and writable by this user (load kvm_intel or kvm_amd, or join the kvm group)";
  }
  if (!host.kvm.hardwareVirtualization) {
    return "the CPU advertises no VT-x or AMD-V (vmx/svm flags)";
  }
  return null;
}

/**
 * Picks the accelerator for a requested mode.
 * @throws {HostError} when `kvm` is asked for and the host cannot give it; the message says why.
 */
export function chooseAccel(requested: "auto" | Accel, host: HostFacts): AccelChoice {
  const kvmProblem = kvmUnavailableReason(host);
  switch (requested) {
    case "kvm":
      if (kvmProblem !== null) throw new HostError(`--accel kvm is unavailable: ${kvmProblem}`, "host.no-kvm");
      return { accel: "kvm", reason: "accelerator kvm: requested, hardware virtualization available" };
    case "tcg":
      return { accel: "tcg", reason: "accelerator tcg: requested (software emulation)" };
    case "auto":
      return kvmProblem === null
        ? { accel: "kvm", reason: "accelerator kvm: hardware virtualization available" }
        : { accel: "tcg", reason: `accelerator tcg (software emulation): ${kvmProblem}` };
  }
}
