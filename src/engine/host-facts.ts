/**
 * What the host can give a VM, probed once at the edge and passed around as a value
 * (tests use literals): QEMU, KVM (hardware or PVM), the TSC frequency, memory, CPUs.
 */
import { existsSync, readFileSync, accessSync, constants } from "node:fs";
import { availableParallelism } from "node:os";

export interface KvmFacts {
  /** /dev/kvm exists and this process may open it read-write. */
  readonly deviceUsable: boolean;
  /** The loaded KVM flavour is PVM (kvm_pvm): stock guest kernels cannot run on it. */
  readonly pvm: boolean;
  /** The CPU advertises VT-x (vmx) or AMD-V (svm). */
  readonly hardwareVirtualization: boolean;
}

export interface HostFacts {
  /** Absolute path of qemu-system-x86_64, or null when QEMU is not installed. */
  readonly qemuBinary: string | null;
  readonly kvm: KvmFacts;
  /** The host TSC frequency in kHz, when it can be read; TCG guests see the host TSC. */
  readonly tscKhz: number | null;
  readonly cpuVendor: "intel" | "amd" | "other";
  readonly hostCpus: number;
  readonly memoryAvailableMiB: number;
}

const QEMU_CANDIDATES = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"];

/** PALISADE_QEMU overrides the search (a QEMU built elsewhere; tests of a host without QEMU). */
function findQemu(): string | null {
  const override = process.env.PALISADE_QEMU;
  if (override !== undefined && override !== "") return existsSync(override) ? override : null;
  return QEMU_CANDIDATES.find((path) => existsSync(path)) ?? null;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/** Parses `/proc/cpuinfo` for what Palisade needs; pure. */
export function parseCpuinfo(text: string): { flags: Set<string>; vendor: HostFacts["cpuVendor"]; mhz: number | null } {
  const first = text.split("\n\n")[0] ?? "";
  const field = (name: string): string | undefined =>
    new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(first)?.[1]?.trim();
  const vendorId = field("vendor_id") ?? "";
  const vendor = vendorId === "GenuineIntel" ? "intel" : vendorId === "AuthenticAMD" ? "amd" : "other";
  const mhzText = field("cpu MHz");
  const mhz = mhzText === undefined ? null : Number.parseFloat(mhzText);
  return { flags: new Set((field("flags") ?? "").split(/\s+/)), vendor, mhz: mhz !== null && Number.isFinite(mhz) ? mhz : null };
}

/** Reads `MemAvailable` from `/proc/meminfo` text, in MiB; pure. */
export function parseMemAvailableMiB(text: string): number {
  const kib = /^MemAvailable:\s+(\d+) kB$/m.exec(text)?.[1];
  return kib === undefined ? 0 : Math.floor(Number(kib) / 1024);
}

function canOpenReadWrite(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Probes this host. Cheap (a few /proc and /sys reads): no process is spawned. */
export function probeHost(): HostFacts {
  const cpuinfo = parseCpuinfo(readText("/proc/cpuinfo") ?? "");
  // Kernels with the tsc_freq_khz patch expose the exact value; otherwise the boot CPU's
  // MHz matches the TSC on hosts with constant_tsc, which is what TCG guests read.
  const exactKhz = Number.parseInt(readText("/sys/devices/system/cpu/cpu0/tsc_freq_khz") ?? "", 10);
  const tscKhz = Number.isFinite(exactKhz) && exactKhz > 0 ? exactKhz : cpuinfo.mhz === null ? null : Math.round(cpuinfo.mhz * 1000);
  return {
    qemuBinary: findQemu(),
    kvm: {
      deviceUsable: existsSync("/dev/kvm") && canOpenReadWrite("/dev/kvm"),
      pvm: existsSync("/sys/module/kvm_pvm"),
      hardwareVirtualization: cpuinfo.flags.has("vmx") || cpuinfo.flags.has("svm"),
    },
    tscKhz,
    cpuVendor: cpuinfo.vendor,
    hostCpus: availableParallelism(),
    memoryAvailableMiB: parseMemAvailableMiB(readText("/proc/meminfo") ?? ""),
  };
}
