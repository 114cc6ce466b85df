/**
 * The authorization policy as a value: tasks group operations, roles group tasks (and
 * operations), scopes name groups of VMs, and assignments bind a user or a group to a
 * role within the whole service or within one scope (Hyper-V's Authorization Manager
 * store, reduced to what Palisade needs).
 */
import { AuthzPolicyError } from "./errors.js";
import { isOperation, OPERATION_NAMES, type Operation } from "./operations.js";

/** A named group of operations. */
export interface TaskDefinition {
  readonly name: string;
  readonly description: string;
  readonly operations: readonly Operation[];
  /** Built-in tasks cannot be changed or deleted. */
  readonly builtin: boolean;
}

/** A named set of tasks and single operations granted together. */
export interface RoleDefinition {
  readonly name: string;
  readonly description: string;
  readonly tasks: readonly string[];
  readonly operations: readonly Operation[];
  /** Built-in roles cannot be changed or deleted. */
  readonly builtin: boolean;
}

/** A named group of VMs; a VM belongs to at most one scope. */
export interface ScopeDefinition {
  readonly name: string;
  readonly description: string;
}

/** Who an assignment is for: one host user or every member of one host group. */
export interface Member {
  readonly kind: "user" | "group";
  readonly name: string;
}

/** A role granted to a member, within the whole service (`scope: null`) or one scope. */
export interface RoleAssignment {
  readonly id: number;
  readonly role: string;
  readonly scope: string | null;
  readonly member: Member;
}

/** The whole policy; treat as immutable (decide() caches by identity). */
export interface PolicyDocument {
  readonly tasks: readonly TaskDefinition[];
  readonly roles: readonly RoleDefinition[];
  readonly scopes: readonly ScopeDefinition[];
  readonly assignments: readonly RoleAssignment[];
}

function task(name: string, description: string, operations: Operation[]): TaskDefinition {
  return Object.freeze({ name, description, operations: Object.freeze(operations), builtin: true });
}

/** The tasks every store has. */
export const BUILTIN_TASKS: readonly TaskDefinition[] = Object.freeze([
  task("read-service", "Read the service configuration", ["service.read"]),
  task("manage-service", "Read and reconfigure the service", ["service.read", "service.reconfigure"]),
  task("view-vms", "View virtual machine configurations", ["vm.view-config"]),
  task("operate-vms", "Start, stop, pause and resume virtual machines", [
    "vm.start",
    "vm.stop",
    "vm.pause-resume",
  ]),
  task("read-console", "Read virtual machine console output", ["vm.console-read"]),
  task("use-console", "Read console output and send console input", ["vm.console-read", "vm.console-write"]),
  task("manage-vms", "Create, delete, reconfigure and move virtual machines between scopes", [
    "vm.create",
    "vm.delete",
    "vm.reconfigure",
    "vm.change-scope",
  ]),
  task("manage-disks", "Create, modify, delete and attach virtual disks", [
    "disk.create",
    "disk.modify",
    "disk.delete",
    "disk.attach",
  ]),
  task("manage-switches", "Create, delete and modify virtual switches and ports", [
    "switch.create",
    "switch.delete",
    "switch.modify",
    "port.create",
    "port.delete",
    "port.modify",
  ]),
  task("connect-ports", "Connect and disconnect virtual switch ports", ["port.connect", "port.disconnect"]),
  task("manage-authorization", "Read and change the authorization policy", ["authz.read", "authz.change"]),
  task("read-audit", "Read the audit log", ["audit.read"]),
]);

function role(
  name: string,
  description: string,
  tasks: string[],
  operations: Operation[] = [],
): RoleDefinition {
  return Object.freeze({
    name,
    description,
    tasks: Object.freeze(tasks),
    operations: Object.freeze(operations),
    builtin: true,
  });
}

/** The roles every store has: Administrator (everything), Operator, Viewer. */
export const BUILTIN_ROLES: readonly RoleDefinition[] = Object.freeze([
  role("Administrator", "Every operation", [], [...OPERATION_NAMES]),
  role("Operator", "Run VMs and use their consoles; connect ports", [
    "read-service",
    "view-vms",
    "operate-vms",
    "use-console",
    "connect-ports",
  ]),
  role("Viewer", "See the service and VM configurations", ["read-service", "view-vms"]),
]);

/** The policy of a new store: built-in tasks and roles, no scopes, no assignments. */
export function emptyPolicy(): PolicyDocument {
  return Object.freeze({ tasks: BUILTIN_TASKS, roles: BUILTIN_ROLES, scopes: [], assignments: [] });
}

/**
 * The operations a role grants, with the tasks expanded.
 *
 * @throws {AuthzPolicyError} `authz.unknown-task` when the role names a task the policy lacks
 */
export function roleOperations(policy: PolicyDocument, roleDef: RoleDefinition): ReadonlySet<Operation> {
  const ops = new Set<Operation>(roleDef.operations);
  for (const taskName of roleDef.tasks) {
    const found = policy.tasks.find((t) => t.name === taskName);
    if (found === undefined) {
      throw new AuthzPolicyError(`Role ${roleDef.name} names unknown task ${taskName}`, "authz.unknown-task");
    }
    for (const op of found.operations) ops.add(op);
  }
  return ops;
}

/**
 * Checks that every reference in the policy resolves: tasks name operations, roles name
 * tasks, assignments name roles and scopes; names are unique.
 *
 * @throws {AuthzPolicyError} naming the first broken reference
 */
export function checkPolicy(policy: PolicyDocument): void {
  const unique = (kind: string, names: string[]): void => {
    const seen = new Set<string>();
    for (const name of names) {
      if (seen.has(name)) throw new AuthzPolicyError(`Duplicate ${kind} ${name}`, "authz.duplicate");
      seen.add(name);
    }
  };
  unique(
    "task",
    policy.tasks.map((t) => t.name),
  );
  unique(
    "role",
    policy.roles.map((r) => r.name),
  );
  unique(
    "scope",
    policy.scopes.map((s) => s.name),
  );
  for (const t of policy.tasks) {
    for (const op of t.operations as readonly string[]) {
      if (!isOperation(op))
        throw new AuthzPolicyError(`Task ${t.name} names unknown operation ${op}`, "authz.unknown-operation");
    }
  }
  for (const r of policy.roles) {
    for (const op of r.operations as readonly string[]) {
      if (!isOperation(op))
        throw new AuthzPolicyError(`Role ${r.name} names unknown operation ${op}`, "authz.unknown-operation");
    }
    roleOperations(policy, r);
  }
  const roles = new Set(policy.roles.map((r) => r.name));
  const scopes = new Set(policy.scopes.map((s) => s.name));
  for (const a of policy.assignments) {
    if (!roles.has(a.role))
      throw new AuthzPolicyError(`Assignment ${a.id} names unknown role ${a.role}`, "authz.unknown-role");
    if (a.scope !== null && !scopes.has(a.scope)) {
      throw new AuthzPolicyError(`Assignment ${a.id} names unknown scope ${a.scope}`, "authz.unknown-scope");
    }
  }
}
