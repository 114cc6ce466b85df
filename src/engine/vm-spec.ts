/**
 * The VM spec: everything a worker needs to run one VM, validated once where it enters
 * (CLI flags, API body, stored row) and a typed, readonly value everywhere after.
 */
import * as z from "zod";
import { ConfigError } from "../util/errors.js";
import { PRESETS, PartitionPolicySchema, PolicyError, resolvePolicy } from "../policy/index.js";

/** Smallest guest RAM Palisade accepts: below this Debian's kernel cannot unpack an initramfs. */
export const MIN_MEMORY_MIB = 32;
/** Hard ceiling per VM; the host's free memory is checked separately at start. */
export const MAX_MEMORY_MIB = 1024 * 1024;
export const MAX_VCPUS = 255;

/** Names end up in paths, process titles and QMP; keep them boring. */
export const VM_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;

export const DISK_FORMATS = ["raw", "qcow2", "vpc", "vhdx"] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];

const absolutePath = (what: string) =>
  z
    .string()
    .min(1, `${what} is empty`)
    .max(4096, `${what} is longer than 4096 characters`)
    .refine((p) => p.startsWith("/"), `${what} must be an absolute path`)
    .refine((p) => !p.includes(","), `${what} must not contain a comma (QEMU option syntax)`)
    // eslint-disable-next-line no-control-regex -- rejecting control characters is the point
    .refine((p) => !/[\x00-\x1f\x7f]/.test(p), `${what} must not contain control characters`);

export const DiskSpecSchema = z.strictObject({
  path: absolutePath("disk path"),
  format: z.enum(DISK_FORMATS),
  readonly: z.boolean().default(false),
});
export type DiskSpec = z.infer<typeof DiskSpecSchema>;

/** `hostfwd=tcp:127.0.0.1:2222-:22`, as QEMU spells it; checked here, not by QEMU. */
export const HOSTFWD_PATTERN = /^(tcp|udp):(\d{1,3}(\.\d{1,3}){3})?:\d{1,5}-(\d{1,3}(\.\d{1,3}){3})?:\d{1,5}$/;

export const UserNicSchema = z.strictObject({
  kind: z.literal("user"),
  hostfwd: z.array(z.string().regex(HOSTFWD_PATTERN, "hostfwd must look like tcp:127.0.0.1:2222-:22")).max(32).default([]),
  mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i).optional(),
});
export const SwitchNicSchema = z.strictObject({
  kind: z.literal("switch"),
  switch: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_-]{0,31}$/, "switch name"),
  mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i).optional(),
  vlan: z.number().int().min(1).max(4094).optional(),
});
export const NicSpecSchema = z.discriminatedUnion("kind", [UserNicSchema, SwitchNicSchema]);
export type NicSpec = z.infer<typeof NicSpecSchema>;

export const ConsoleSpecSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("stdio") }),
  z.strictObject({ kind: z.literal("socket"), path: absolutePath("console socket path") }),
  z.strictObject({ kind: z.literal("none") }),
]);
export type ConsoleSpec = z.infer<typeof ConsoleSpecSchema>;

export const VmSpecSchema = z.strictObject({
  name: z.string().regex(VM_NAME_PATTERN, "name: 1-64 characters of letters, digits, '.', '_' or '-'"),
  /** Stable identity (UUID); the guest sees it (docs/guest-interface.md). */
  uuid: z.uuid(),
  kernel: absolutePath("kernel"),
  initrd: absolutePath("initrd").optional(),
  append: z
    .string()
    .max(2048, "append: the kernel command line is limited to 2048 bytes")
    // eslint-disable-next-line no-control-regex -- a newline would end QEMU's option
    .refine((text) => !/[\x00-\x1f\x7f]/.test(text), "append must not contain control characters")
    .default(""),
  memoryMiB: z.number().int().min(MIN_MEMORY_MIB, `memory must be at least ${MIN_MEMORY_MIB} MiB`).max(MAX_MEMORY_MIB),
  vcpus: z.number().int().min(1, "cpus must be at least 1").max(MAX_VCPUS, `cpus must be at most ${MAX_VCPUS}`),
  disks: z.array(DiskSpecSchema).max(16, "at most 16 disks").default([]),
  nics: z.array(NicSpecSchema).max(8, "at most 8 NICs").default([]),
  accel: z.enum(["auto", "kvm", "tcg"]).default("auto"),
  /** microvm (no PCI, no firmware tables beyond ACPI) unless a device needs PCI. */
  machine: z.enum(["microvm", "q35"]).default("microvm"),
  console: ConsoleSpecSchema.default({ kind: "stdio" }),
  onReboot: z.enum(["restart", "exit"]).default("restart"),
  onPanic: z.enum(["exit", "restart"]).default("exit"),
  /** The guest's readiness line on the console; the boot watchdog waits for it. */
  readyMarker: z.string().min(1).max(128).optional(),
  /** Boot watchdog: no ready marker (or, without one, no console output) by then is a hang. */
  bootTimeoutMs: z.number().int().min(1000).max(3_600_000).default(60_000),
  /** What the guest may see and its worker may use; fixed when the VM starts. */
  policy: PartitionPolicySchema.default(() => structuredClone(PRESETS.default)),
});
/** A validated VM spec. */
export type VmSpec = Readonly<z.infer<typeof VmSpecSchema>>;
export type VmSpecInput = z.input<typeof VmSpecSchema>;

/**
 * Validates an outside value into a VmSpec.
 * @throws {ConfigError} naming the first bad field, e.g. `VM spec: disks.0.format: …`.
 */
export function parseVmSpec(input: unknown): VmSpec {
  const result = VmSpecSchema.safeParse(input);
  if (result.success) {
    // The schema checks each field; resolving also refuses contradictions between them.
    try {
      resolvePolicy(result.data.policy);
    } catch (error: unknown) {
      if (error instanceof PolicyError) throw new ConfigError(`VM spec: policy.${error.field}: ${error.message}`, "config.bad-policy");
      throw error;
    }
    return result.data;
  }
  const issue = result.error.issues[0];
  const field = issue?.path.join(".") ?? "";
  throw new ConfigError(`VM spec: ${field === "" ? "" : `${field}: `}${issue?.message ?? "invalid"}`, "config.bad-spec");
}
