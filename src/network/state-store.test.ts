import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { switchNames } from "./addresses.js";
import type { AclRule, Switch } from "./model.js";
import { StateStore } from "./state-store.js";

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "palisade-state-test-"));
  dirs.push(dir);
  return dir;
}

function lab(acls: AclRule[]): Switch {
  return {
    name: "lab",
    ...switchNames("lab"),
    type: "private",
    dhcp: false,
    defaultDeny: false,
    stateful: false,
    flowLog: true,
    createdAt: "2026-01-01T00:00:00Z",
    ports: [],
    acls,
    nextAclId: acls.length + 1,
    mirrors: [],
  };
}

const deny = (id: number): AclRule => ({ id, direction: "in", action: "deny", protocol: "tcp", priority: 10 });

test("state-store: ACL rules live in a content-named file, read back by a fresh store", async () => {
  const dir = tempDir();
  const acls = [deny(1), deny(2)];

  await new StateStore(dir).update(async () => Promise.resolve({ state: { version: 1 as const, switches: [lab(acls)] }, result: undefined }));

  assert.equal(readdirSync(join(dir, "acls")).length, 1);
  assert.doesNotMatch(readFileSync(join(dir, "switches.json"), "utf8"), /"priority"/, "the rules are not in switches.json");
  assert.deepEqual(new StateStore(dir).read().switches[0]?.acls, acls);
});

test("state-store: a replaced ACL list's file and a crash's orphan are deleted", async () => {
  const dir = tempDir();
  const store = new StateStore(dir);
  await store.update(async () => Promise.resolve({ state: { version: 1 as const, switches: [lab([deny(1)])] }, result: undefined }));
  const first = readdirSync(join(dir, "acls"));
  writeFileSync(join(dir, "acls", `${"0".repeat(64)}.json`), "[]\n"); // as if a crash came before the state was written

  await new StateStore(dir).update(async (state) => Promise.resolve({ state: { ...state, switches: [lab([deny(1), deny(2)])] }, result: undefined }));

  const now = readdirSync(join(dir, "acls"));
  assert.equal(now.length, 1);
  assert.notDeepEqual(now, first);
});

test("state-store: a state file of an older Palisade, rules inline, is read", () => {
  const dir = tempDir();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "switches.json"), JSON.stringify({ version: 1, switches: [lab([deny(7)])] }));

  assert.deepEqual(new StateStore(dir).read().switches[0]?.acls, [deny(7)]);
});
