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
    paths: {
      runDir: "/run/palisade/vms/web-1",
      qmpSocket: "/run/palisade/vms/web-1/qmp.sock",
      consoleSocket: "/run/palisade/vms/web-1/console.sock",
    },
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
  return argv.flatMap((arg, index) =>
    arg === flag && index + 1 < argv.length ? [argv[index + 1] ?? ""] : [],
  );
}

/** An ELF64 x86-64 header with one PT_NOTE program header pointing at `notes` (placed at 0x100). */
export function pvhElf(notes: Uint8Array, overrides: { machine?: number; phnum?: number } = {}): Uint8Array {
  const bytes = new Uint8Array(0x100 + notes.length);
  const view = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  view.setUint16(18, overrides.machine ?? 62, true);
  view.setBigUint64(32, 64n, true); // e_phoff
  view.setUint16(54, 56, true); // e_phentsize
  view.setUint16(56, overrides.phnum ?? 1, true);
  view.setUint32(64, 4, true); // PT_NOTE
  view.setBigUint64(64 + 8, 0x100n, true); // p_offset
  view.setBigUint64(64 + 32, BigInt(notes.length), true); // p_filesz
  bytes.set(notes, 0x100);
  return bytes;
}

/** One ELF note: name, type, descriptor, each padded to 4 bytes. */
export function elfNote(name: string, type: number, desc: Uint8Array): Uint8Array {
  const nameBytes = new TextEncoder().encode(`${name}\0`);
  const pad = (n: number): number => (n + 3) & ~3;
  const bytes = new Uint8Array(12 + pad(nameBytes.length) + pad(desc.length));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, nameBytes.length, true);
  view.setUint32(4, desc.length, true);
  view.setUint32(8, type, true);
  bytes.set(nameBytes, 12);
  bytes.set(desc, 12 + pad(nameBytes.length));
  return bytes;
}
