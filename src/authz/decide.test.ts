import { test } from "node:test";
import assert from "node:assert/strict";
import { decide, type Principal } from "./decide.js";
import { OPERATION_NAMES, type Operation } from "./operations.js";
import { checkPolicy, emptyPolicy, type PolicyDocument, type RoleAssignment } from "./policy.js";
import { AuthzPolicyError } from "./errors.js";

// What each built-in role must grant, written out by hand (not derived from the code under test).
const EXPECTED: Record<string, readonly Operation[]> = {
  Administrator: OPERATION_NAMES,
  Operator: [
    "service.read",
    "vm.view-config",
    "vm.start",
    "vm.stop",
    "vm.pause-resume",
    "vm.console-read",
    "vm.console-write",
    "port.connect",
    "port.disconnect",
  ],
  Viewer: ["service.read", "vm.view-config"],
};
// Operations that no scoped assignment may grant.
const SERVICE_WIDE: readonly Operation[] = [
  "service.read",
  "service.reconfigure",
  "switch.create",
  "switch.delete",
  "switch.modify",
  "authz.read",
  "authz.change",
  "audit.read",
];

const alice: Principal = { uid: 1001, user: "alice", groups: ["alice", "staff"] };

function policyWith(assignments: RoleAssignment[]): PolicyDocument {
  return {
    ...emptyPolicy(),
    scopes: [
      { name: "web", description: "web servers" },
      { name: "db", description: "databases" },
    ],
    assignments,
  };
}

for (const role of Object.keys(EXPECTED)) {
  const granted = new Set(EXPECTED[role]);
  const scopedPolicy = policyWith([{ id: 1, role, scope: "web", member: { kind: "user", name: "alice" } }]);
  const globalPolicy = policyWith([{ id: 1, role, scope: null, member: { kind: "group", name: "staff" } }]);
  for (const op of OPERATION_NAMES) {
    const inScope = granted.has(op) && !SERVICE_WIDE.includes(op);
    test(`decide: ${role} assigned in scope web ${inScope ? "may" : "may not"} ${op} on a VM in web`, () => {
      const decision = decide(scopedPolicy, alice, op, { scope: "web", vm: "w1" });
      assert.equal(decision.allowed, inScope, decision.reason);
    });
    test(`decide: ${role} assigned in scope web may not ${op} on a VM in db`, () => {
      const decision = decide(scopedPolicy, alice, op, { scope: "db", vm: "d1" });
      assert.equal(decision.allowed, false, decision.reason);
      assert.match(decision.reason, new RegExp(`lacks operation ${op.replace(".", "\\.")}`));
    });
    test(`decide: ${role} assigned service-wide to a group ${granted.has(op) ? "may" : "may not"} ${op} anywhere`, () => {
      const inWeb = decide(globalPolicy, alice, op, { scope: "web", vm: "w1" });
      const inNone = decide(globalPolicy, alice, op, {});
      assert.equal(inWeb.allowed, granted.has(op), inWeb.reason);
      assert.equal(inNone.allowed, granted.has(op), inNone.reason);
    });
  }
}

test("decide: with no assignment every operation is denied (deny by default)", () => {
  const denied = OPERATION_NAMES.filter((op) => decide(emptyPolicy(), alice, op, { scope: "web" }).allowed);

  assert.deepEqual(denied, []);
});

test("decide: host root is Administrator without any assignment", () => {
  const root: Principal = { uid: 0, user: "root", groups: ["root"] };

  const decision = decide(emptyPolicy(), root, "authz.change", {});

  assert.equal(decision.allowed, true);
  assert.equal(decision.reason, "host root is Administrator");
});

test("decide: a user named root with another uid is not Administrator", () => {
  const impostor: Principal = { uid: 1005, user: "root", groups: [] };

  assert.equal(decide(emptyPolicy(), impostor, "vm.start", {}).allowed, false);
});

test("decide: the denial names the missing operation, the user and the scope", () => {
  const policy = policyWith([
    { id: 1, role: "Viewer", scope: "web", member: { kind: "user", name: "alice" } },
  ]);

  const decision = decide(policy, alice, "vm.start", { scope: "web", vm: "w1" });

  assert.equal(decision.allowed, false);
  assert.match(
    decision.reason,
    /user alice lacks operation vm\.start \(Start virtual machine\) on VM w1 in scope web/,
  );
});

test("decide: the grant names the role and the member it came through", () => {
  const policy = policyWith([
    { id: 1, role: "Operator", scope: "web", member: { kind: "group", name: "staff" } },
  ]);

  const decision = decide(policy, alice, "vm.start", { scope: "web", vm: "w1" });

  assert.equal(decision.allowed, true);
  assert.equal(decision.role, "Operator");
  assert.match(decision.reason, /role Operator assigned to group staff within scope web/);
});

test("decide: a custom role built from a custom task grants exactly its operations", () => {
  const base = policyWith([
    { id: 1, role: "ConsoleReader", scope: "db", member: { kind: "user", name: "alice" } },
  ]);
  const policy: PolicyDocument = {
    ...base,
    tasks: [
      ...base.tasks,
      { name: "peek", description: "", operations: ["vm.console-read"], builtin: false },
    ],
    roles: [
      ...base.roles,
      { name: "ConsoleReader", description: "", tasks: ["peek"], operations: [], builtin: false },
    ],
  };

  assert.equal(decide(policy, alice, "vm.console-read", { scope: "db" }).allowed, true);
  assert.equal(decide(policy, alice, "vm.console-write", { scope: "db" }).allowed, false);
});

test("decide: a changed policy document is compiled afresh", () => {
  const before = policyWith([]);
  const after = policyWith([
    { id: 1, role: "Operator", scope: null, member: { kind: "user", name: "alice" } },
  ]);

  assert.equal(decide(before, alice, "vm.stop", {}).allowed, false);
  assert.equal(decide(after, alice, "vm.stop", {}).allowed, true);
});

test("checkPolicy: an assignment to an unknown scope is refused with its code", () => {
  const policy = {
    ...emptyPolicy(),
    assignments: [{ id: 7, role: "Viewer", scope: "nope", member: { kind: "user" as const, name: "a" } }],
  };

  assert.throws(
    () => {
      checkPolicy(policy);
    },
    (e: unknown) => e instanceof AuthzPolicyError && e.code === "authz.unknown-scope",
  );
});

test("checkPolicy: a role naming an unknown task is refused with its code", () => {
  const base = emptyPolicy();
  const policy = {
    ...base,
    roles: [...base.roles, { name: "X", description: "", tasks: ["ghost"], operations: [], builtin: false }],
  };

  assert.throws(
    () => {
      checkPolicy(policy);
    },
    (e: unknown) => e instanceof AuthzPolicyError && e.code === "authz.unknown-task",
  );
});
