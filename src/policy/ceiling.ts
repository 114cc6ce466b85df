/**
 * A policy's grants against a ceiling: the most its parent (the host's administrator, a
 * scope) lets a VM have. What a caller asks for in a VM spec is checked against the
 * ceiling before the VM is created or reconfigured, so a user allowed to create VMs cannot
 * turn the worker's sandbox off, grant nested virtualization, the host's CPU model, user-mode
 * networking, more devices or larger limits, or pick another trust level. Pure.
 */
import { PolicyError, type PartitionPolicy } from "./partition-policy.js";

/** cgroup v2's default `io.weight`: what a policy without `limits.ioWeight` gets. */
const DEFAULT_IO_WEIGHT = 100;

const NUMERIC_LIMITS = [
  "maxMemoryMiB",
  "maxVcpus",
  "workerOverheadMiB",
  "pids",
  "cpuPercent",
  "openFiles",
] as const satisfies readonly (keyof PartitionPolicy["limits"])[];

/**
 * The fields where `policy` grants more than `ceiling`, each as `{field, message}`; empty
 * when it stays within. Less is always allowed (fewer devices, smaller limits, a feature
 * disabled), except the trust level, which must be the ceiling's: a VM choosing another
 * level would change which VMs may share its host.
 */
export function policyExcesses(
  policy: PartitionPolicy,
  ceiling: PartitionPolicy,
): { readonly field: string; readonly message: string }[] {
  const excesses: { field: string; message: string }[] = [];
  const exceed = (field: string, message: string): void => {
    excesses.push({ field, message });
  };
  if (!policy.sandbox.enabled && ceiling.sandbox.enabled)
    exceed("sandbox.enabled", "is false, but the worker must run sandboxed here");
  if (policy.trustLevel !== ceiling.trustLevel)
    exceed("trustLevel", `is "${policy.trustLevel}", but VMs here have trust level "${ceiling.trustLevel}"`);
  if (policy.cpu.nestedVirtualization && !ceiling.cpu.nestedVirtualization)
    exceed("cpu.nestedVirtualization", "is true, but nested virtualization is not granted here");
  if (policy.cpu.showHostModel && !ceiling.cpu.showHostModel)
    exceed("cpu.showHostModel", "is true, but the host's CPU model is not shown to guests here");
  if (policy.cpu.model !== ceiling.cpu.model && policy.cpu.model !== "baseline")
    exceed("cpu.model", `is "${policy.cpu.model}", but only "baseline" or "${ceiling.cpu.model}" is granted here`);
  policy.cpu.features.enable.forEach((feature, index) => {
    if (!ceiling.cpu.features.enable.includes(feature))
      exceed(`cpu.features.enable[${index}]`, `is "${feature}", a CPU feature not granted here`);
  });
  ceiling.cpu.features.disable.forEach((feature) => {
    if (!policy.cpu.features.disable.includes(feature))
      exceed("cpu.features.disable", `lacks "${feature}", which must stay disabled here`);
  });
  policy.devices.forEach((device, index) => {
    if (!ceiling.devices.includes(device))
      exceed(`devices[${index}]`, `is "${device}", a device class not granted here`);
  });
  if (policy.network.userNet && !ceiling.network.userNet)
    exceed("network.userNet", "is true, but user-mode networking is not granted here");
  for (const limit of NUMERIC_LIMITS) {
    if (policy.limits[limit] > ceiling.limits[limit])
      exceed(`limits.${limit}`, `is ${policy.limits[limit]}, above the ${ceiling.limits[limit]} granted here`);
  }
  const ioWeight = policy.limits.ioWeight ?? DEFAULT_IO_WEIGHT;
  const ioCeiling = ceiling.limits.ioWeight ?? DEFAULT_IO_WEIGHT;
  if (ioWeight > ioCeiling) exceed("limits.ioWeight", `is ${ioWeight}, above the ${ioCeiling} granted here`);
  return excesses;
}

/**
 * Refuses a policy that grants more than `ceiling` (see {@link policyExcesses}).
 *
 * @throws {PolicyError} naming the first field that exceeds the ceiling.
 * @example
 * assertPolicyWithin(resolvePolicy({ sandbox: { enabled: false } }), PRESETS.default)
 * // PolicyError: Partition policy field "sandbox.enabled" is false, but the worker must run sandboxed here
 */
export function assertPolicyWithin(policy: PartitionPolicy, ceiling: PartitionPolicy): void {
  const [first] = policyExcesses(policy, ceiling);
  if (first !== undefined)
    throw new PolicyError(`Partition policy field "${first.field}" ${first.message}`, first.field);
}
