/**
 * The partition policy layer: what a guest may see and what its worker may use.
 * See README.md. Imports only `util/`.
 */
export {
  PartitionPolicySchema,
  PolicyError,
  DEVICE_CLASSES,
  NESTED_VIRTUALIZATION_FEATURES,
  type PartitionPolicy,
  type DeviceClass,
} from "./partition-policy.js";
export { PRESETS, PRESET_NAMES, type PresetName } from "./presets.js";
export { resolvePolicy } from "./resolve.js";
export {
  compilePolicy,
  assertDeviceAllowed,
  assertVmFits,
  workerResourceLimits,
  BASELINE_CPU_MODELS,
  TCG_MAX_UNSAFE_FEATURES,
  type PolicyHostFacts,
  type CompiledPolicy,
  type CompiledLimits,
  type WorkerResourceLimits,
} from "./compile.js";
export { assertPolicyWithin, policyExcesses } from "./ceiling.js";
export { checkTrustPlacement, type TrustPlacementVm, type TrustPlacementDecision } from "./trust.js";
