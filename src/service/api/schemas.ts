/**
 * The zod schemas of every request the API accepts. They are the one source of truth:
 * fastify routes validate with them and /openapi.json is generated from them.
 */
import * as z from "zod";
import { nameProblem, OPERATION_NAMES } from "../../authz/index.js";
import type { RestartPolicy } from "../restart-policy.js";

/** A name of a VM, role, task, scope, user or group (see `nameProblem`). */
export const nameSchema = z.string().superRefine((value, ctx) => {
  const problem = nameProblem(value);
  if (problem !== null) ctx.addIssue({ code: "custom", message: `Name ${problem}` });
});

const pathSchema = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => !p.includes("\0"), "Path must not contain NUL");

/** One disk of a VM definition; permissive until the engine's spec lands (extra keys kept). */
export const diskSchema = z.looseObject({
  path: pathSchema,
  format: z.string().max(32).optional(),
  readonly: z.boolean().optional(),
});

/** One NIC of a VM definition; permissive until the network layer's spec lands. */
export const nicSchema = z.looseObject({
  switch: nameSchema.optional(),
  mac: z
    .string()
    .regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i)
    .optional(),
});

const specFields = {
  memoryMiB: z.int().min(16).max(1048576),
  vcpus: z.int().min(1).max(256),
  kernel: pathSchema,
  initrd: pathSchema,
  append: z.string().max(4096),
  disks: z.array(diskSchema).max(16),
  nics: z.array(nicSchema).max(8),
  /** The scope the VM belongs to; `null`: none (only service-wide assignments apply). */
  scope: nameSchema.nullable(),
  trustLevel: nameSchema,
  /** Partition policy; opaque here until `policy/` defines it. */
  policy: z.looseObject({}),
  autostart: z.boolean(),
  /** Seconds after the service starts before an autostart VM is started (Hyper-V's automatic start delay). */
  autostartDelaySeconds: z.int().min(0).max(3600),
  /** What the service does when the VM's worker crashes (libvirt's on_crash, Hyper-V's automatic recovery). */
  restartPolicy: z.strictObject({
    mode: z.enum(["never", "on-failure"]),
    maxRetries: z.int().min(0).max(100).optional(),
    backoffSeconds: z.number().min(0).max(300).optional(),
  }),
  // Engine options (src/engine/vm-spec.ts); checked again by parseVmSpec on create/update.
  accel: z.enum(["auto", "kvm", "tcg"]),
  machine: z.enum(["microvm", "q35"]),
  onReboot: z.enum(["restart", "exit"]),
  onPanic: z.enum(["exit", "restart"]),
  readyMarker: z.string().min(1).max(128),
  bootTimeoutMs: z.int().min(1000).max(3_600_000),
};
const engineOptional = {
  accel: specFields.accel.optional(),
  machine: specFields.machine.optional(),
  onReboot: specFields.onReboot.optional(),
  onPanic: specFields.onPanic.optional(),
  readyMarker: specFields.readyMarker.optional(),
  bootTimeoutMs: specFields.bootTimeoutMs.optional(),
};

/** POST /v1/vms: a VM definition. Unknown keys are refused (a typo is an error, not ignored). */
export const vmCreateSchema = z.strictObject({
  name: nameSchema,
  /** The VM's id (the engine spec's UUID), to register a VM defined elsewhere as is; default: a new one. */
  uuid: z.uuid().optional(),
  memoryMiB: specFields.memoryMiB.optional(),
  vcpus: specFields.vcpus.optional(),
  kernel: specFields.kernel,
  initrd: specFields.initrd.optional(),
  append: specFields.append.optional(),
  disks: specFields.disks.optional(),
  nics: specFields.nics.optional(),
  scope: specFields.scope.optional(),
  trustLevel: specFields.trustLevel.optional(),
  policy: specFields.policy.optional(),
  autostart: specFields.autostart.optional(),
  autostartDelaySeconds: specFields.autostartDelaySeconds.optional(),
  restartPolicy: specFields.restartPolicy.optional(),
  ...engineOptional,
});
/** A validated create body. */
export type VmCreateBody = z.infer<typeof vmCreateSchema>;

/** PATCH /v1/vms/:name: fields to change (`null` removes an optional one); `ifGeneration` makes it conditional. */
export const vmUpdateSchema = z.strictObject({
  memoryMiB: specFields.memoryMiB.optional(),
  vcpus: specFields.vcpus.optional(),
  kernel: specFields.kernel.optional(),
  initrd: specFields.initrd.nullable().optional(),
  append: specFields.append.nullable().optional(),
  disks: specFields.disks.optional(),
  nics: specFields.nics.optional(),
  scope: specFields.scope.optional(),
  trustLevel: specFields.trustLevel.nullable().optional(),
  policy: specFields.policy.nullable().optional(),
  autostart: specFields.autostart.optional(),
  autostartDelaySeconds: specFields.autostartDelaySeconds.nullable().optional(),
  restartPolicy: specFields.restartPolicy.nullable().optional(),
  ...engineOptional,
  ifGeneration: z.int().min(1).optional(),
});
/** A validated update body. */
export type VmUpdateBody = z.infer<typeof vmUpdateSchema>;

/** The stored, complete spec of a VM (defaults filled in). */
export interface VmSpec {
  readonly name: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly kernel: string;
  readonly initrd?: string;
  readonly append?: string;
  readonly disks: readonly z.infer<typeof diskSchema>[];
  readonly nics: readonly z.infer<typeof nicSchema>[];
  readonly scope: string | null;
  readonly trustLevel?: string;
  readonly policy?: Readonly<Record<string, unknown>>;
  readonly autostart: boolean;
  readonly autostartDelaySeconds?: number;
  readonly restartPolicy?: RestartPolicy;
  readonly accel?: "auto" | "kvm" | "tcg";
  readonly machine?: "microvm" | "q35";
  readonly onReboot?: "restart" | "exit";
  readonly onPanic?: "exit" | "restart";
  readonly readyMarker?: string;
  readonly bootTimeoutMs?: number;
  /**
   * The uid whose access to `kernel`, `initrd` and `disks` was checked when they were last
   * set (src/service/path-access.ts); checked again at every start. Set by the service.
   */
  readonly pathsCheckedFor?: number;
}

export const nameParams = z.strictObject({ name: nameSchema });
export const idParams = z.strictObject({ id: z.coerce.number().int().min(1) });

const operationSchema = z.enum(OPERATION_NAMES as [string, ...string[]]);

export const scopeCreateSchema = z.strictObject({
  name: nameSchema,
  description: z.string().max(1024).optional(),
});
export const taskCreateSchema = z.strictObject({
  name: nameSchema,
  description: z.string().max(1024).optional(),
  operations: z.array(operationSchema).min(1).max(64),
});
export const roleCreateSchema = z.strictObject({
  name: nameSchema,
  description: z.string().max(1024).optional(),
  tasks: z.array(nameSchema).max(64).optional(),
  operations: z.array(operationSchema).max(64).optional(),
});
export const assignmentCreateSchema = z.strictObject({
  role: nameSchema,
  /** `null` or absent: the whole service. */
  scope: nameSchema.nullable().optional(),
  user: nameSchema.optional(),
  group: nameSchema.optional(),
});
export const checkSchema = z.strictObject({
  operation: operationSchema,
  vm: nameSchema.optional(),
  scope: nameSchema.nullable().optional(),
  /** Ask for another user (needs authz.read); absent: the caller. */
  user: nameSchema.optional(),
});
export const auditQuerySchema = z.strictObject({
  since: z.iso.datetime({ offset: true }).optional(),
  vm: nameSchema.optional(),
  afterSeq: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(10000).optional(),
});
export const emptyQuery = z.strictObject({});
