import { test } from "node:test";
import assert from "node:assert/strict";
import { assertPolicyWithin, policyExcesses } from "./ceiling.js";
import { PolicyError } from "./partition-policy.js";
import { PRESETS } from "./presets.js";
import { resolvePolicy } from "./resolve.js";

test("ceiling: every preset is within itself, and locked-down within default", () => {
  assert.deepEqual(policyExcesses(resolvePolicy("default"), PRESETS.default), []);
  assert.deepEqual(policyExcesses(resolvePolicy("locked-down"), PRESETS["locked-down"]), []);
  // Less is allowed, but the trust level must be the ceiling's.
  assert.deepEqual(
    policyExcesses(resolvePolicy({ preset: "locked-down", trustLevel: "standard" }), PRESETS.default),
    [],
  );
});

test("ceiling: a caller cannot turn the worker's sandbox off", () => {
  assert.throws(
    () => {
      assertPolicyWithin(resolvePolicy({ sandbox: { enabled: false } }), PRESETS.default);
    },
    (error: unknown) => error instanceof PolicyError && error.field === "sandbox.enabled",
  );
});

test("ceiling: grants beyond locked-down are each named", () => {
  const asked = resolvePolicy({
    preset: "default",
    trustLevel: "trusted",
    cpu: { model: "host-passthrough", showHostModel: true, nestedVirtualization: true, features: { enable: ["avx2"], disable: [] } },
    devices: ["console", "disk", "nic", "balloon", "vsock"],
    limits: { maxMemoryMiB: 8192, ioWeight: 500 },
  });

  const fields = policyExcesses(asked, PRESETS["locked-down"]).map((excess) => excess.field);

  assert.deepEqual(fields, [
    "trustLevel",
    "cpu.nestedVirtualization",
    "cpu.showHostModel",
    "cpu.model",
    "cpu.features.enable[0]",
    "devices[3]",
    "devices[4]",
    "network.userNet",
    "limits.maxMemoryMiB",
    "limits.maxVcpus",
    "limits.workerOverheadMiB",
    "limits.pids",
    "limits.cpuPercent",
    "limits.openFiles",
    "limits.ioWeight",
  ]);
});

test("ceiling: a feature the ceiling disables must stay disabled", () => {
  const ceiling = resolvePolicy({ cpu: { features: { enable: [], disable: ["avx512f"] } } });

  assert.deepEqual(
    policyExcesses(resolvePolicy("default"), ceiling).map((excess) => excess.field),
    ["cpu.features.disable"],
  );
  assert.deepEqual(policyExcesses(ceiling, ceiling), []);
});
