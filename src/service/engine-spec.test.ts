import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePolicy } from "../policy/index.js";
import { engineSpecOf, pathsChanged } from "./engine-spec.js";
import type { VmSpec } from "./api/schemas.js";

const base: VmSpec = {
  name: "web-1",
  memoryMiB: 256,
  vcpus: 2,
  kernel: "/k",
  disks: [{ path: "/d.qcow2", format: "qcow2" }, { path: "/d.raw" }],
  nics: [{ switch: "lan" }],
  scope: "web",
  autostart: false,
  readyMarker: "READY",
};

test("engineSpecOf: the VM id is the UUID, disks get an explicit format, NICs a kind", () => {
  const id = "6f1c1a52-3c86-4d3c-9d70-0e1d1d9a2b11";
  const spec = engineSpecOf(id, base);
  assert.equal(spec.uuid, id);
  assert.equal(spec.name, "web-1");
  assert.deepEqual(spec.disks, [
    { path: "/d.qcow2", format: "qcow2", readonly: false },
    { path: "/d.raw", format: "raw", readonly: false },
  ]);
  assert.deepEqual(spec.nics, [{ kind: "switch", switch: "lan" }]);
  assert.equal(spec.readyMarker, "READY");
});

test("engineSpecOf: what the engine refuses is a 400 naming the field", () => {
  assert.throws(
    () => engineSpecOf("6f1c1a52-3c86-4d3c-9d70-0e1d1d9a2b11", { ...base, kernel: "relative" }),
    (error: Error & { code?: string; extra?: { field?: string } }) =>
      error.code === "vm.bad-spec" && error.extra?.field === "body.kernel",
  );
});

test("engineSpecOf: a policy beyond the host's ceiling is a 400 naming the field; within it, accepted", () => {
  const id = "6f1c1a52-3c86-4d3c-9d70-0e1d1d9a2b11";
  const refused = (policy: unknown, field: string): void => {
    assert.throws(
      () => engineSpecOf(id, { ...base, policy: resolvePolicy(policy) }),
      (error: Error & { code?: string; extra?: { field?: string } }) =>
        error.code === "vm.policy-exceeds-host" && error.extra?.field === `body.policy.${field}`,
    );
  };
  refused({ sandbox: { enabled: false } }, "sandbox.enabled");
  refused({ cpu: { nestedVirtualization: true } }, "cpu.nestedVirtualization");
  refused({ limits: { maxMemoryMiB: 64 * 1024 } }, "limits.maxMemoryMiB");
  assert.equal(engineSpecOf(id, { ...base, policy: resolvePolicy({ preset: "locked-down" }) }).policy.trustLevel, "untrusted");

  const dir = mkdtempSync(join(tmpdir(), "palisade-ceiling-"));
  const saved = process.env.PALISADE_HOST_CONFIG;
  try {
    process.env.PALISADE_HOST_CONFIG = join(dir, "host.json");
    writeFileSync(process.env.PALISADE_HOST_CONFIG, JSON.stringify({ maxPolicy: { sandbox: { enabled: false } } }));
    assert.equal(engineSpecOf(id, { ...base, policy: resolvePolicy({ sandbox: { enabled: false } }) }).policy.sandbox.enabled, false);
    writeFileSync(process.env.PALISADE_HOST_CONFIG, JSON.stringify({ maxPolicy: "locked-down" }));
    refused({ preset: "default" }, "devices[4]");
  } finally {
    if (saved === undefined) delete process.env.PALISADE_HOST_CONFIG;
    else process.env.PALISADE_HOST_CONFIG = saved;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pathsChanged: only host files count", () => {
  assert.equal(pathsChanged(base, { ...base, memoryMiB: 512 }), false);
  assert.equal(pathsChanged(base, { ...base, initrd: "/i" }), true);
  assert.equal(pathsChanged(base, { ...base, disks: [{ path: "/d.qcow2", readonly: true }, { path: "/d.raw" }] }), true);
});
