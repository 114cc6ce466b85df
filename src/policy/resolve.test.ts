import { test } from "node:test";
import assert from "node:assert/strict";
import { resolvePolicy } from "./resolve.js";
import { PolicyError } from "./partition-policy.js";
import { PRESETS } from "./presets.js";

function refusal(input: unknown): PolicyError {
  try {
    resolvePolicy(input);
  } catch (error: unknown) {
    if (error instanceof PolicyError) return error;
    throw error;
  }
  assert.fail("policy was accepted");
}

test("resolvePolicy: a preset name gives that preset, as a copy the caller may change", () => {
  const policy = resolvePolicy("locked-down");

  policy.limits.pids = 1;

  assert.equal(resolvePolicy("locked-down").limits.pids, PRESETS["locked-down"].limits.pids);
  assert.equal(policy.trustLevel, "untrusted");
});

test("resolvePolicy: presets are secure by default (host model hidden, no nesting, sandboxed)", () => {
  const fallback = resolvePolicy({});
  const locked = resolvePolicy("locked-down");

  assert.deepEqual(fallback, PRESETS.default);
  assert.equal(fallback.cpu.showHostModel, false);
  assert.equal(fallback.cpu.nestedVirtualization, false);
  assert.equal(fallback.sandbox.enabled, true);
  assert.equal(locked.network.userNet, false);
  assert.equal(locked.devices.includes("vsock"), false);
  assert.equal(locked.devices.includes("balloon"), false);
});

test("resolvePolicy: overrides merge into the named preset; arrays replace", () => {
  const policy = resolvePolicy({
    preset: "locked-down",
    limits: { maxMemoryMiB: 512 },
    devices: ["console", "disk"],
  });

  assert.equal(policy.limits.maxMemoryMiB, 512);
  assert.equal(policy.limits.pids, PRESETS["locked-down"].limits.pids);
  assert.deepEqual(policy.devices, ["console", "disk"]);
});

test("resolvePolicy: an unknown preset is refused, listing the presets", () => {
  const error = refusal("paranoid");

  assert.equal(error.code, "policy.invalid");
  assert.match(error.message, /no preset "paranoid" \(presets: default, locked-down\)/);
});

test("resolvePolicy: an unknown field is refused with its path", () => {
  const error = refusal({ devices: ["console"], cpu: { turbo: true } });

  assert.equal(error.field, "cpu.turbo");
  assert.match(error.message, /field "cpu\.turbo" is not a policy field/);
});

test("resolvePolicy: a device class outside the allow-list (USB) is refused with its index", () => {
  const error = refusal({ devices: ["console", "usb"] });

  assert.equal(error.field, "devices[1]");
});

test("resolvePolicy: a device listed twice is refused", () => {
  assert.equal(refusal({ devices: ["disk", "disk"] }).field, "devices[1]");
});

test("resolvePolicy: an out-of-range limit is refused naming the limit", () => {
  const error = refusal({ limits: { workerOverheadMiB: 8 } });

  assert.equal(error.field, "limits.workerOverheadMiB");
  assert.match(error.message, /^Partition policy field "limits\.workerOverheadMiB": /);
});

test("resolvePolicy: a fractional vCPU limit is refused", () => {
  assert.equal(refusal({ limits: { maxVcpus: 1.5 } }).field, "limits.maxVcpus");
});

test("resolvePolicy: host-passthrough while hiding the host model is a contradiction", () => {
  const error = refusal({ cpu: { model: "host-passthrough", showHostModel: false } });

  assert.equal(error.field, "cpu.showHostModel");
});

test("resolvePolicy: host-passthrough with showHostModel true is accepted", () => {
  assert.equal(
    resolvePolicy({ cpu: { model: "host-passthrough", showHostModel: true } }).cpu.model,
    "host-passthrough",
  );
});

test("resolvePolicy: the named models host and max are refused in favour of host-passthrough", () => {
  assert.equal(refusal({ cpu: { model: "max" } }).field, "cpu.model");
});

test("resolvePolicy: a feature both enabled and disabled is a contradiction", () => {
  const error = refusal({ cpu: { features: { enable: ["avx2", "pcid"], disable: ["pcid"] } } });

  assert.equal(error.field, "cpu.features.enable[1]");
});

test("resolvePolicy: enabling vmx as a feature without nestedVirtualization is refused", () => {
  assert.equal(
    refusal({ cpu: { features: { enable: ["vmx"], disable: [] } } }).field,
    "cpu.features.enable[0]",
  );
});

test("resolvePolicy: disabling svm while granting nested virtualization is a contradiction", () => {
  assert.equal(
    refusal({ cpu: { nestedVirtualization: true, features: { enable: [], disable: ["svm"] } } }).field,
    "cpu.features.disable[0]",
  );
});

test("resolvePolicy: a feature name that could smuggle QEMU options is refused", () => {
  assert.equal(
    refusal({ cpu: { features: { enable: ["avx,host-cache-info=on"], disable: [] } } }).field,
    "cpu.features.enable[0]",
  );
});

test("resolvePolicy: user-mode networking without the nic device class is a contradiction", () => {
  assert.equal(
    refusal({ devices: ["console", "disk"], network: { userNet: true } }).field,
    "network.userNet",
  );
});

test("resolvePolicy: a pids limit below maxVcpus + 16 is refused (QEMU could not start its vCPU threads)", () => {
  const error = refusal({ limits: { maxVcpus: 8, pids: 20 } });

  assert.equal(error.field, "limits.pids");
  assert.match(error.message, /maxVcpus \+ 16 = 24/);
});

test("resolvePolicy: a bad trust level name is refused", () => {
  assert.equal(refusal({ trustLevel: "Top Secret" }).field, "trustLevel");
});

test("resolvePolicy: input that is neither a name nor an object is refused", () => {
  assert.match(refusal([1, 2]).message, /got an array/);
  assert.equal(refusal({ preset: 7 }).field, "preset");
});

test("resolvePolicy: a __proto__ key in parsed JSON is refused, not merged", () => {
  const input: unknown = JSON.parse('{"__proto__": {"sandbox": {"enabled": false}}}');

  assert.equal(refusal(input).field, "__proto__");
});
