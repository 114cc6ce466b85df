/**
 * The partition policy: what a VM's guest may see (CPU model and features, device
 * classes) and what its worker may use (memory, vCPUs, processes, CPU, files), its trust
 * level and whether it runs sandboxed. A value of {@link PartitionPolicy} is always valid
 * and free of contradictions: it only comes out of `resolvePolicy()`.
 */
import * as z from "zod";
import { PalisadeError } from "../util/errors.js";

/** An invalid or contradictory policy; `field` names the offending field (`limits.pids`). */
export class PolicyError extends PalisadeError {
  readonly code = "policy.invalid";
  constructor(
    message: string,
    /** Dotted path of the field at fault, e.g. `cpu.features.enable[1]`; "" for the whole policy. */
    readonly field: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * Device classes a guest may be given. Nothing outside this list is ever created for a
 * guest: no default devices, no USB, no host device passthrough.
 */
export const DEVICE_CLASSES = ["console", "disk", "nic", "entropy", "balloon", "pvpanic", "vsock"] as const;
/** One class of guest device the policy can grant. */
export type DeviceClass = (typeof DEVICE_CLASSES)[number];

/**
 * CPU features that give the guest hardware virtualization; granted only through
 * `cpu.nestedVirtualization`, never through `cpu.features.enable`.
 */
export const NESTED_VIRTUALIZATION_FEATURES = ["vmx", "svm"] as const;

/** QEMU CPU model names that mean "the host's model": asked for through `host-passthrough`. */
const HOST_MODEL_ALIASES = new Set(["host", "max"]);

const CPU_FEATURE = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_.-]{0,63}$/,
    "must be a QEMU CPU feature name (lower-case letters, digits, '_', '.', '-')",
  );
const NAMED_CPU_MODEL = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/,
    'must be "host-passthrough", "baseline" or a QEMU CPU model name',
  );
const TRUST_LEVEL = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be a lower-case name such as "trusted", "standard" or "untrusted"');

/** The zod schema of a complete partition policy (every field present, no unknown keys). */
export const PartitionPolicySchema = z
  .strictObject({
    cpu: z.strictObject({
      /** `host-passthrough`: the host's model (KVM); `baseline`: a conservative named model; else a QEMU model name. */
      model: z.union([z.literal("host-passthrough"), z.literal("baseline"), NAMED_CPU_MODEL]),
      features: z.strictObject({
        enable: z.array(CPU_FEATURE).max(64),
        disable: z.array(CPU_FEATURE).max(64),
      }),
      /** Whether the guest may see the host's CPU model (CPUID brand and family). */
      showHostModel: z.boolean(),
      /** Whether the guest may use VT-x/AMD-V itself. */
      nestedVirtualization: z.boolean(),
    }),
    devices: z.array(z.enum(DEVICE_CLASSES)).max(DEVICE_CLASSES.length),
    limits: z.strictObject({
      /** The largest guest RAM a VM under this policy may have. */
      maxMemoryMiB: z
        .int()
        .min(16)
        .max(16 * 1024 * 1024),
      maxVcpus: z.int().min(1).max(288),
      /** Memory the worker may use beyond guest RAM (QEMU itself, TCG code cache, I/O buffers). */
      workerOverheadMiB: z
        .int()
        .min(64)
        .max(64 * 1024),
      /** Tasks (processes and threads) the worker may have. */
      pids: z.int().min(16).max(65536),
      /** CPU time the worker may use, in percent of one host CPU (200 = two CPUs). */
      cpuPercent: z
        .int()
        .min(1)
        .max(100 * 1024),
      /** Open file descriptors of the worker (RLIMIT_NOFILE). */
      openFiles: z
        .int()
        .min(64)
        .max(1024 * 1024),
      /** Relative I/O weight of the worker (cgroup v2 `io.weight` scale, 1–10000), where the host supports it. */
      ioWeight: z.int().min(1).max(10000).optional(),
    }),
    trustLevel: TRUST_LEVEL,
    network: z.strictObject({
      /**
       * QEMU user-mode networking: QEMU itself opens host sockets for the guest, so the
       * worker must share the host's network namespace. Off in `locked-down`.
       */
      userNet: z.boolean(),
    }),
    sandbox: z.strictObject({
      /** Run the worker in its jail (uid, namespaces, seccomp, cgroups); on unless explicitly turned off. */
      enabled: z.boolean(),
    }),
  })
  .superRefine((policy, context) => {
    const issue = (path: (string | number)[], message: string): void => {
      context.addIssue({ code: "custom", path, message });
    };
    const { cpu } = policy;
    if (cpu.model === "host-passthrough" && !cpu.showHostModel) {
      issue(
        ["cpu", "showHostModel"],
        'is false, but cpu.model "host-passthrough" shows the host\'s CPU model',
      );
    }
    if (HOST_MODEL_ALIASES.has(cpu.model)) {
      issue(
        ["cpu", "model"],
        `is "${cpu.model}", the host's own model: use "host-passthrough" with showHostModel true`,
      );
    }
    cpu.features.enable.forEach((feature, index) => {
      if (cpu.features.disable.includes(feature)) {
        issue(["cpu", "features", "enable", index], `is "${feature}", which cpu.features.disable also lists`);
      }
      if (
        (NESTED_VIRTUALIZATION_FEATURES as readonly string[]).includes(feature) &&
        !cpu.nestedVirtualization
      ) {
        issue(
          ["cpu", "features", "enable", index],
          `is "${feature}", nested virtualization: grant it with cpu.nestedVirtualization instead`,
        );
      }
    });
    if (cpu.nestedVirtualization) {
      cpu.features.disable.forEach((feature, index) => {
        if ((NESTED_VIRTUALIZATION_FEATURES as readonly string[]).includes(feature)) {
          issue(
            ["cpu", "features", "disable", index],
            `is "${feature}", which cpu.nestedVirtualization grants`,
          );
        }
      });
    }
    policy.devices.forEach((device, index) => {
      if (policy.devices.indexOf(device) !== index) issue(["devices", index], `is "${device}", listed twice`);
    });
    if (policy.network.userNet && !policy.devices.includes("nic")) {
      issue(["network", "userNet"], 'is true, but the device class "nic" is not granted');
    }
    // QEMU needs ~6–16 tasks of its own plus one thread per vCPU (host-notes: "≥ 6 to start; ~64 + vCPUs").
    if (policy.limits.pids < policy.limits.maxVcpus + 16) {
      issue(
        ["limits", "pids"],
        `is ${policy.limits.pids}, fewer than maxVcpus + 16 = ${policy.limits.maxVcpus + 16} tasks QEMU needs`,
      );
    }
  });

/** A complete, valid partition policy (output of `resolvePolicy()`). */
export type PartitionPolicy = z.infer<typeof PartitionPolicySchema>;

/** Formats a zod issue path as `a.b[2].c`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out;
}
