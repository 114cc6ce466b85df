/**
 * Turns what a user wrote (a preset name, or a document naming a preset and overriding
 * some fields) into a complete, validated {@link PartitionPolicy}. Pure.
 */
import { PartitionPolicySchema, PolicyError, fieldPath, type PartitionPolicy } from "./partition-policy.js";
import { PRESETS, PRESET_NAMES, type PresetName } from "./presets.js";

function isPresetName(name: string): name is PresetName {
  return (PRESET_NAMES as readonly string[]).includes(name);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === "object" &&
    value !== null &&
    !Array.isArray(value) &&
    Object.getPrototypeOf(value) === Object.prototype
  );
}

/** Objects merge key by key; arrays and scalars in `override` replace the base's. */
function deepMerge(base: unknown, override: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(override)) return override;
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    if (key === "__proto__" || key === "constructor" || key === "prototype") {
      throw new PolicyError(`Partition policy field "${key}" is not allowed`, key);
    }
    out[key] = Object.hasOwn(base, key) ? deepMerge(base[key], value) : value;
  }
  return out;
}

function presetByName(name: string, field: string): PartitionPolicy {
  if (!isPresetName(name)) {
    throw new PolicyError(
      `Partition policy ${field === "" ? "preset" : `field "${field}"`}: no preset "${name}" (presets: ${PRESET_NAMES.join(", ")})`,
      field,
    );
  }
  return PRESETS[name];
}

/**
 * Resolves a policy: a preset name (`"locked-down"`), or an object whose optional
 * `preset` names the base (default `"default"`) and whose other fields override it
 * (objects merge, arrays replace). The result is validated in full: unknown fields,
 * out-of-range values and contradictions are refused.
 *
 * @throws {PolicyError} naming the first offending field (`error.field`).
 * @example
 * resolvePolicy({ preset: "locked-down", limits: { maxMemoryMiB: 512 } }).limits.pids // 96
 */
export function resolvePolicy(input: unknown): PartitionPolicy {
  if (typeof input === "string") return structuredClone(presetByName(input, ""));
  if (!isPlainObject(input)) {
    throw new PolicyError(
      `Partition policy must be a preset name or an object, got ${input === null ? "null" : Array.isArray(input) ? "an array" : typeof input}`,
      "",
    );
  }
  const { preset, ...overrides } = input;
  if (preset !== undefined && typeof preset !== "string") {
    throw new PolicyError(
      `Partition policy field "preset" must be a preset name (${PRESET_NAMES.join(", ")})`,
      "preset",
    );
  }
  const base = presetByName(preset ?? "default", "preset");
  const merged = deepMerge(structuredClone(base), overrides);
  const result = PartitionPolicySchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0];
    if (issue === undefined) throw new PolicyError("Partition policy is invalid", "");
    let path = [...issue.path];
    let message = issue.message;
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      path = [...path, key];
      message = "is not a policy field";
    }
    const field = fieldPath(path);
    // Our own messages read as a predicate ("is …"); zod's as a sentence of their own.
    const separator = issue.code === "custom" || issue.code === "unrecognized_keys" ? " " : ": ";
    throw new PolicyError(`Partition policy field "${field}"${separator}${message}`, field);
  }
  return result.data;
}
