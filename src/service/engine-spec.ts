/**
 * The service's stored VM definition and the engine's VM spec: one maps onto the other,
 * and a definition is accepted only if the engine's `parseVmSpec` accepts what it maps to
 * (the VM id is the spec's UUID), so what the service stores is what a worker can run.
 */
import { hostPolicyCeiling, parseVmSpec, type VmSpec as EngineVmSpec } from "../engine/index.js";
import { policyExcesses } from "../policy/index.js";
import { ConfigError } from "../util/errors.js";
import type { VmSpec } from "./api/schemas.js";
import { ValidationError } from "./errors.js";
import { assertCallerMayOpen, type Caller } from "./path-access.js";

/** A UUID used to validate a definition before the store gives it its id. */
const PLACEHOLDER_UUID = "00000000-0000-4000-8000-000000000000";

/** The engine input for a stored definition (pure; not yet validated). */
export function engineInputOf(id: string, spec: VmSpec): Record<string, unknown> {
  const optional = (key: keyof VmSpec): Record<string, unknown> =>
    spec[key] === undefined ? {} : { [key]: spec[key] };
  return {
    uuid: id,
    name: spec.name,
    kernel: spec.kernel,
    ...optional("initrd"),
    ...optional("append"),
    memoryMiB: spec.memoryMiB,
    vcpus: spec.vcpus,
    // An explicit format: QEMU never guesses one from a guest-writable header.
    disks: spec.disks.map((d) => ({ path: d.path, format: d.format ?? "raw", readonly: d.readonly ?? false })),
    nics: spec.nics.map((n) => ("kind" in n ? n : { kind: "switch", ...n })),
    ...optional("policy"),
    ...optional("accel"),
    ...optional("machine"),
    ...optional("onReboot"),
    ...optional("onPanic"),
    ...optional("readyMarker"),
    ...optional("bootTimeoutMs"),
  };
}

/**
 * The engine spec of VM `id`.
 *
 * @throws {ValidationError} `vm.bad-spec` naming the field the engine refuses
 */
export function engineSpecOf(id: string, spec: VmSpec): EngineVmSpec {
  let parsed: EngineVmSpec;
  try {
    parsed = parseVmSpec(engineInputOf(id, spec));
  } catch (error: unknown) {
    if (error instanceof ConfigError) {
      const field = /^VM spec: ([\w.]+):/.exec(error.message)?.[1];
      throw new ValidationError(`Field body.${field ?? "?"}: ${error.message.replace(/^VM spec: /, "")}`, field === undefined ? null : `body.${field}`, "vm.bad-spec");
    }
    throw error;
  }
  assertWithinHostCeiling(parsed);
  return parsed;
}

/**
 * Refuses a VM whose partition policy grants more than the host's ceiling (`maxPolicy` in
 * the host configuration): checked at create, at every update and again at start, so a
 * lowered ceiling applies to VMs defined before it. The trust level is left to placement,
 * which decides which levels may share this host.
 *
 * @throws {ValidationError} `vm.policy-exceeds-host` naming `body.policy.<field>`
 */
function assertWithinHostCeiling(spec: EngineVmSpec): void {
  const [excess] = policyExcesses(spec.policy, hostPolicyCeiling()).filter((each) => each.field !== "trustLevel");
  if (excess === undefined) return;
  throw new ValidationError(
    `Field body.policy.${excess.field} ${excess.message} (the host's policy ceiling: maxPolicy in the host configuration)`,
    `body.policy.${excess.field}`,
    "vm.policy-exceeds-host",
  );
}

/** Checks a definition the store has not yet given an id. */
export function assertValidDefinition(spec: VmSpec): void {
  engineSpecOf(PLACEHOLDER_UUID, spec);
}

/** Whether the host files of two definitions differ (kernel, initrd, disks). */
export function pathsChanged(before: VmSpec, after: VmSpec): boolean {
  const files = (s: VmSpec): string =>
    JSON.stringify([s.kernel, s.initrd ?? null, s.disks.map((d) => [d.path, d.readonly ?? false])]);
  return files(before) !== files(after);
}

/**
 * Refuses a definition naming a host file `caller` could not open themselves (read; read
 * and write for a writable disk).
 *
 * @throws {ValidationError} `vm.path-denied`
 */
export function assertCallerMayUseFiles(spec: VmSpec, caller: Caller): void {
  assertCallerMayOpen(spec.kernel, caller, "r", "body.kernel");
  if (spec.initrd !== undefined) assertCallerMayOpen(spec.initrd, caller, "r", "body.initrd");
  spec.disks.forEach((disk, index) => {
    assertCallerMayOpen(disk.path, caller, disk.readonly === true ? "r" : "rw", `body.disks.${index}.path`);
  });
}
