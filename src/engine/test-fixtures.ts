/** Literal values for unit tests of the engine's pure functions (no host probing). */
import type { HostFacts } from "./host-facts.js";
import type { ArgvInputs } from "./qemu-argv.js";
import { parseVmSpec, type VmSpec, type VmSpecInput } from "./vm-spec.js";

export const PVM_HOST: HostFacts = {
  qemuBinary: "/usr/bin/qemu-system-x86_64",
  kvm: { deviceUsable: true, pvm: true, hardwareVirtualization: false },
  tscKhz: 2_445_404,
  cpuVendor: "amd",
  hostCpus: 2,
  memoryAvailableMiB: 20_000,
};

export const KVM_HOST: HostFacts = {
  ...PVM_HOST,
  kvm: { deviceUsable: true, pvm: false, hardwareVirtualization: true },
  cpuVendor: "intel",
};

export function testSpec(overrides: Partial<VmSpecInput> = {}): VmSpec {
  return parseVmSpec({
    name: "web-1",
    uuid: "6f1c9a3e-2b7d-4c1a-9e8f-0a1b2c3d4e5f",
    kernel: "/images/vmlinuz",
    initrd: "/images/initrd.img",
    memoryMiB: 256,
    vcpus: 1,
    ...overrides,
  });
}

export function testArgvInputs(spec: VmSpec, overrides: Partial<ArgvInputs> = {}): ArgvInputs {
  return {
    spec,
    accel: "tcg",
    cpuArg: "max,-svm,-vmx",
    tscKhz: 2_445_404,
    paths: { runDir: "/run/palisade/vms/web-1", qmpSocket: "/run/palisade/vms/web-1/qmp.sock", consoleSocket: "/run/palisade/vms/web-1/console.sock" },
    tapFds: [],
    entropy: true,
    pvpanic: true,
    seccompArgs: [],
    palisadeVersion: "0.1.0",
    ...overrides,
  };
}

/** The value that follows `flag` in argv (first occurrence). */
export function optionValue(argv: readonly string[], flag: string): string | undefined {
  const index = argv.indexOf(flag);
  return index < 0 ? undefined : argv[index + 1];
}

/** Every value that follows `flag` in argv. */
export function optionValues(argv: readonly string[], flag: string): string[] {
  return argv.flatMap((arg, index) => (arg === flag && index + 1 < argv.length ? [argv[index + 1] ?? ""] : []));
}
