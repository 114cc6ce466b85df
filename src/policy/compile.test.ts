import { test } from "node:test";
import assert from "node:assert/strict";
import { compilePolicy, assertDeviceAllowed, workerResourceLimits, type PolicyHostFacts } from "./compile.js";
import { resolvePolicy } from "./resolve.js";
import { PolicyError } from "./partition-policy.js";

const tcg: PolicyHostFacts = { accel: "tcg", hostCpuVendor: "intel" };
const kvmIntel: PolicyHostFacts = { accel: "kvm", hostCpuVendor: "intel" };
const kvmAmd: PolicyHostFacts = { accel: "kvm", hostCpuVendor: "amd" };
const hostModel = { cpu: { model: "host-passthrough", showHostModel: true } };

test("compilePolicy: under TCG the default CPU is max without vmx, svm and la57 (5-level paging breaks guests under TCG)", () => {
  assert.equal(compilePolicy(resolvePolicy("default"), tcg).cpuArg, "max,-vmx,-svm,-la57");
});

test("compilePolicy: under TCG host-passthrough is max too (TCG has no host model to show)", () => {
  assert.equal(compilePolicy(resolvePolicy(hostModel), tcg).cpuArg, "max,-vmx,-svm,-la57");
});

test("compilePolicy: a policy that enables la57 itself keeps it under TCG", () => {
  const policy = resolvePolicy({ cpu: { features: { enable: ["la57"], disable: [] } } });

  assert.equal(compilePolicy(policy, tcg).cpuArg, "max,+la57,-vmx,-svm");
});

test("compilePolicy: under KVM baseline is a named model per vendor, never host", () => {
  assert.equal(compilePolicy(resolvePolicy("default"), kvmIntel).cpuArg, "Nehalem,-vmx,-svm");
  assert.equal(compilePolicy(resolvePolicy("default"), kvmAmd).cpuArg, "Opteron_G4,-vmx,-svm");
  assert.equal(
    compilePolicy(resolvePolicy("default"), { accel: "kvm", hostCpuVendor: "other" }).cpuArg,
    "qemu64,-vmx,-svm",
  );
});

test("compilePolicy: under KVM host-passthrough is host, and on AMD drops arch-capabilities", () => {
  assert.equal(compilePolicy(resolvePolicy(hostModel), kvmIntel).cpuArg, "host,-vmx,-svm");
  assert.equal(compilePolicy(resolvePolicy(hostModel), kvmAmd).cpuArg, "host,-vmx,-svm,-arch-capabilities");
});

test("compilePolicy: nested virtualization keeps vmx and svm", () => {
  const policy = resolvePolicy({ cpu: { ...hostModel.cpu, nestedVirtualization: true } });

  assert.equal(compilePolicy(policy, kvmIntel).cpuArg, "host");
});

test("compilePolicy: a named model keeps its name; features are added and removed in order", () => {
  const policy = resolvePolicy({
    cpu: { model: "Skylake-Client-v4", features: { enable: ["pcid"], disable: ["avx512f", "vmx"] } },
  });

  assert.equal(compilePolicy(policy, kvmIntel).cpuArg, "Skylake-Client-v4,+pcid,-avx512f,-vmx,-svm");
});

test("compilePolicy: devices, limits, trust level, networking and sandbox carry over", () => {
  const compiled = compilePolicy(resolvePolicy("locked-down"), tcg);

  assert.deepEqual([...compiled.allowedDevices], ["console", "disk", "nic", "entropy", "pvpanic"]);
  assert.equal(compiled.limits.pids, 96);
  assert.equal(compiled.trustLevel, "untrusted");
  assert.equal(compiled.userNetAllowed, false);
  assert.equal(compiled.sandboxEnabled, true);
  assert.ok(Object.isFrozen(compiled.limits));
});

test("assertDeviceAllowed: a granted class passes", () => {
  assert.doesNotThrow(() => {
    assertDeviceAllowed(compilePolicy(resolvePolicy("default"), tcg), "balloon", "balloon");
  });
});

test("assertDeviceAllowed: a class the policy does not grant is refused, naming the device", () => {
  const compiled = compilePolicy(resolvePolicy("locked-down"), tcg);

  assert.throws(
    () => {
      assertDeviceAllowed(compiled, "vsock", 'vsock "guest-agent"');
    },
    (error: unknown) =>
      error instanceof PolicyError &&
      error.field === "devices" &&
      error.message.includes('vsock "guest-agent"'),
  );
});

test("workerResourceLimits: memory is guest RAM plus the policy overhead, in bytes", () => {
  // locked-down: 128 MiB overhead; 256 + 128 = 384 MiB.
  const limits = workerResourceLimits(compilePolicy(resolvePolicy("locked-down"), tcg), {
    memoryMiB: 256,
    vcpus: 1,
  });

  assert.equal(limits.memoryBytes, 384n * 1024n * 1024n);
  assert.equal(limits.cpuPercent, 200);
  assert.equal(limits.openFiles, 1024);
});

test("workerResourceLimits: a VM larger than the policy allows is refused", () => {
  const compiled = compilePolicy(resolvePolicy("locked-down"), tcg);

  assert.throws(() => workerResourceLimits(compiled, { memoryMiB: 8192, vcpus: 1 }), /limits\.maxMemoryMiB/);
  assert.throws(() => workerResourceLimits(compiled, { memoryMiB: 256, vcpus: 5 }), /limits\.maxVcpus/);
});

test("workerResourceLimits: the policy's I/O weight reaches the worker's limits (absent when unset)", () => {
  const weighted = compilePolicy(resolvePolicy({ limits: { ioWeight: 50 } }), tcg);
  const plain = compilePolicy(resolvePolicy("default"), tcg);

  assert.equal(workerResourceLimits(weighted, { memoryMiB: 256, vcpus: 1 }).ioWeight, 50);
  assert.equal("ioWeight" in workerResourceLimits(plain, { memoryMiB: 256, vcpus: 1 }), false);
});
