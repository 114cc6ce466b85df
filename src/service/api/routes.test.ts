import { test } from "node:test";
import assert from "node:assert/strict";
import * as z from "zod";
import { specAfterUpdate, specFromCreate } from "./routes.js";
import { vmCreateSchema, vmUpdateSchema } from "./schemas.js";
import { validationError } from "../server.js";

test("specFromCreate: defaults fill memory, vCPUs, disks, NICs, scope and autostart", () => {
  const spec = specFromCreate(vmCreateSchema.parse({ name: "a", kernel: "/k" }));

  assert.deepEqual(spec, {
    name: "a",
    memoryMiB: 512,
    vcpus: 1,
    kernel: "/k",
    disks: [],
    nics: [],
    scope: null,
    autostart: false,
  });
});

test("specAfterUpdate: null removes an optional field, null scope leaves the scope, ifGeneration is not stored", () => {
  const before = specFromCreate(
    vmCreateSchema.parse({ name: "a", kernel: "/k", append: "quiet", scope: "web" }),
  );

  const after = specAfterUpdate(
    before,
    vmUpdateSchema.parse({ append: null, scope: null, vcpus: 4, ifGeneration: 3 }),
  );

  assert.equal(after.append, undefined);
  assert.equal(after.scope, null);
  assert.equal(after.vcpus, 4);
  assert.equal("ifGeneration" in after, false);
});

test("validationError: an unknown key names the key, a bad value names its path", () => {
  const unknown = vmCreateSchema.safeParse({ name: "a", kernel: "/k", colour: "red" });
  const nested = vmCreateSchema.safeParse({ name: "a", kernel: "/k", disks: [{ path: "" }] });
  assert.ok(!unknown.success && !nested.success);

  assert.equal(validationError("body", unknown.error).extra.field, "body.colour");
  assert.equal(validationError("body", nested.error).extra.field, "body.disks.0.path");
});

test("vmCreateSchema: names with a slash, a control character or 65 characters are refused", () => {
  const bad = ["a/b", "a\u0001", "x".repeat(65)].map(
    (name) => vmCreateSchema.safeParse({ name, kernel: "/k" }).success,
  );

  assert.deepEqual(bad, [false, false, false]);
  assert.equal(z.string().safeParse("x").success, true);
});
