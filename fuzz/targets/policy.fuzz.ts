/**
 * Fuzz target `policy`: policy documents (JSON or a preset name) through
 * `resolvePolicy()` and `compilePolicy()` for every host kind.
 *
 * Oracle: only `PolicyError` escapes; a resolved policy compiles for every host; the
 * `-cpu` value is a plain comma list (no `=`, no spaces: nothing smuggled into QEMU's
 * command line); vmx/svm stay off unless nested virtualization is granted; the granted
 * devices are a subset of the known classes.
 */
import {
  DEVICE_CLASSES,
  PolicyError,
  PRESETS,
  compilePolicy,
  resolvePolicy,
  type PolicyHostFacts,
} from "../../src/policy/index.js";

const HOSTS: PolicyHostFacts[] = [
  { accel: "tcg", hostCpuVendor: "intel" },
  { accel: "kvm", hostCpuVendor: "intel" },
  { accel: "kvm", hostCpuVendor: "amd" },
  { accel: "kvm", hostCpuVendor: "other" },
];

const encoder = new TextEncoder();

export function seeds(): Uint8Array[] {
  const documents: unknown[] = [
    PRESETS.default,
    PRESETS["locked-down"],
    { preset: "locked-down", limits: { maxMemoryMiB: 512 } },
    { cpu: { model: "host-passthrough", showHostModel: true, nestedVirtualization: true } },
    {
      cpu: { model: "Skylake-Client-v4", features: { enable: ["pcid"], disable: ["avx512f"] } },
      devices: ["console", "disk"],
      network: { userNet: false },
    },
    { trustLevel: "trusted", limits: { ioWeight: 500 } },
  ];
  return [
    ...documents.map((document) => encoder.encode(JSON.stringify(document))),
    encoder.encode("locked-down"),
  ];
}

export function fuzz(data: Uint8Array): void {
  const text = new TextDecoder().decode(data);
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch {
    input = text;
  }
  let policy;
  try {
    policy = resolvePolicy(input);
  } catch (error: unknown) {
    if (error instanceof PolicyError) return;
    throw error;
  }
  for (const host of HOSTS) {
    const compiled = compilePolicy(policy, host);
    if (!/^[A-Za-z0-9_.+,-]+$/.test(compiled.cpuArg))
      throw new Error(`cpuArg ${JSON.stringify(compiled.cpuArg)} is not a plain feature list`);
    const flags = compiled.cpuArg.split(",");
    if (!policy.cpu.nestedVirtualization && !(flags.includes("-vmx") && flags.includes("-svm")))
      throw new Error(`cpuArg ${compiled.cpuArg} leaves nested virtualization on`);
    if (host.accel === "tcg" && flags[0] === "host") throw new Error("TCG given the host CPU model");
    for (const device of compiled.allowedDevices)
      if (!(DEVICE_CLASSES as readonly string[]).includes(device))
        throw new Error(`unknown device class ${device}`);
  }
}
