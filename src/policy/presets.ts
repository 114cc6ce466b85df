/**
 * Named policies. `default` is what a VM gets when nothing is said: a baseline CPU that
 * hides the host's model, no nested virtualization, the common devices, the worker
 * sandboxed. `locked-down` grants the least a Linux guest needs to boot and work.
 */
import type { PartitionPolicy } from "./partition-policy.js";

/** Names of the built-in presets. */
export const PRESET_NAMES = ["default", "locked-down"] as const;
/** A built-in preset's name. */
export type PresetName = (typeof PRESET_NAMES)[number];

/**
 * The built-in presets. Values are frozen: copy before changing (`resolvePolicy()` does).
 *
 * Why these numbers: a `-m 256` TCG guest peaks at ~202 MB of worker memory, so the
 * worker gets guest RAM plus at least 64 MiB; QEMU needs ≥ 6 tasks to start and one
 * thread per vCPU, so pids ≥ maxVcpus + 16 (host-notes.md).
 */
export const PRESETS: Readonly<Record<PresetName, PartitionPolicy>> = deepFreeze({
  default: {
    cpu: {
      model: "baseline",
      features: { enable: [], disable: [] },
      showHostModel: false,
      nestedVirtualization: false,
    },
    devices: ["console", "disk", "nic", "entropy", "balloon", "pvpanic"],
    limits: {
      maxMemoryMiB: 16 * 1024,
      maxVcpus: 8,
      workerOverheadMiB: 256,
      pids: 256,
      cpuPercent: 800,
      openFiles: 4096,
    },
    trustLevel: "standard",
    // `palisade run --net user` is the easy way to give a guest network; it costs the
    // worker its empty network namespace (docs/design/sandbox.md, "User-mode networking").
    network: { userNet: true },
    sandbox: { enabled: true },
  },
  "locked-down": {
    cpu: {
      model: "baseline",
      features: { enable: [], disable: [] },
      showHostModel: false,
      nestedVirtualization: false,
    },
    devices: ["console", "disk", "nic", "entropy", "pvpanic"],
    limits: {
      maxMemoryMiB: 4 * 1024,
      maxVcpus: 4,
      workerOverheadMiB: 128,
      pids: 96,
      cpuPercent: 200,
      openFiles: 1024,
    },
    trustLevel: "untrusted",
    network: { userNet: false },
    sandbox: { enabled: true },
  },
});

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
