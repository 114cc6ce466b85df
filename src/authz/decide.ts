/**
 * The one question of authorization: may principal P perform operation O on object X?
 * Pure: the answer depends only on its arguments; the caller supplies the principal's
 * identity as the kernel and the host's user database gave it.
 */
import { OPERATIONS, SERVICE_WIDE_OPERATIONS, type Operation } from "./operations.js";
import { roleOperations, type PolicyDocument } from "./policy.js";

/** The caller, as the host knows it (uid from SO_PEERCRED, names from /etc/passwd and /etc/group). */
export interface Principal {
  readonly uid: number;
  readonly user: string;
  /** Names of every group the user belongs to, primary group included. */
  readonly groups: readonly string[];
}

/** What an operation acts on: the whole service, or something inside an optional scope. */
export interface AuthzObject {
  /** The scope of the VM (or disk, port) acted on; `null` or absent: no scope. */
  readonly scope?: string | null;
  /** The VM's name, for the reason text only. */
  readonly vm?: string;
}

/** The answer, with a sentence saying why. */
export interface Decision {
  readonly allowed: boolean;
  readonly reason: string;
  readonly operation: Operation;
  /** The role that granted the operation, when allowed through an assignment. */
  readonly role?: string;
}

interface Grant {
  readonly role: string;
  readonly member: string;
}

/** Grants of one assignment level, by member name (user and group names are separate namespaces). */
interface Grants {
  readonly users: Map<string, Map<Operation, Grant>>;
  readonly groups: Map<string, Map<Operation, Grant>>;
}

interface CompiledPolicy {
  /** Service-wide assignments. */
  readonly global: Grants;
  /** Assignments within each scope. */
  readonly scoped: ReadonlyMap<string, Grants>;
}

const compiledCache = new WeakMap<PolicyDocument, CompiledPolicy>();

function emptyGrants(): Grants {
  return { users: new Map(), groups: new Map() };
}

function compile(policy: PolicyDocument): CompiledPolicy {
  const cached = compiledCache.get(policy);
  if (cached !== undefined) return cached;
  const roleOps = new Map<string, ReadonlySet<Operation>>();
  for (const r of policy.roles) roleOps.set(r.name, roleOperations(policy, r));
  const global = emptyGrants();
  const scoped = new Map<string, Grants>();
  for (const a of policy.assignments) {
    const ops = roleOps.get(a.role);
    if (ops === undefined) continue; // an assignment to a missing role grants nothing
    let level = global;
    if (a.scope !== null) {
      level = scoped.get(a.scope) ?? emptyGrants();
      scoped.set(a.scope, level);
    }
    const byName = a.member.kind === "user" ? level.users : level.groups;
    const byOp = byName.get(a.member.name) ?? new Map<Operation, Grant>();
    byName.set(a.member.name, byOp);
    for (const op of ops) {
      // Within a scope, service-wide operations are never granted.
      if (a.scope !== null && SERVICE_WIDE_OPERATIONS.has(op)) continue;
      if (!byOp.has(op)) byOp.set(op, { role: a.role, member: `${a.member.kind} ${a.member.name}` });
    }
  }
  const result: CompiledPolicy = { global, scoped };
  compiledCache.set(policy, result);
  return result;
}

function find(level: Grants | undefined, principal: Principal, operation: Operation): Grant | undefined {
  if (level === undefined) return undefined;
  const own = level.users.get(principal.user)?.get(operation);
  if (own !== undefined) return own;
  if (level.groups.size === 0) return undefined;
  for (const group of principal.groups) {
    const grant = level.groups.get(group)?.get(operation);
    if (grant !== undefined) return grant;
  }
  return undefined;
}

function describeObject(object: AuthzObject): string {
  const scope = object.scope ?? null;
  const vm = object.vm === undefined ? "" : ` VM ${object.vm}`;
  if (scope === null) return vm === "" ? "the service" : `${vm.trimStart()} (no scope)`;
  return `${vm === "" ? "" : `${vm.trimStart()} in `}scope ${scope}`;
}

/**
 * Decides whether `principal` may perform `operation` on `object`. Deny by default; host
 * root (uid 0) is Administrator. A service-wide assignment grants its role's operations
 * everywhere; a scoped assignment grants them on objects in that scope only, and never
 * grants service-wide operations (`SERVICE_WIDE_OPERATIONS`).
 *
 * Cost: one WeakMap lookup plus a few Map lookups per group of the principal; the policy
 * is compiled once per PolicyDocument object, so replace the document, never mutate it.
 *
 * @example
 * const policy = { ...emptyPolicy(), scopes: [{ name: "web", description: "" }],
 *   assignments: [{ id: 1, role: "Operator", scope: "web", member: { kind: "group", name: "ops" } }] };
 * decide(policy, { uid: 1000, user: "ann", groups: ["ops"] }, "vm.start", { scope: "web", vm: "w1" }).allowed; // true
 */
export function decide(
  policy: PolicyDocument,
  principal: Principal,
  operation: Operation,
  object: AuthzObject,
): Decision {
  if (principal.uid === 0) {
    return { allowed: true, operation, role: "Administrator", reason: "host root is Administrator" };
  }
  const compiled = compile(policy);
  const global = find(compiled.global, principal, operation);
  if (global !== undefined) {
    return {
      allowed: true,
      operation,
      role: global.role,
      reason: `role ${global.role} assigned to ${global.member} for the whole service grants ${operation}`,
    };
  }
  const scope = object.scope ?? null;
  const serviceWide = SERVICE_WIDE_OPERATIONS.has(operation);
  if (scope !== null && !serviceWide) {
    const grant = find(compiled.scoped.get(scope), principal, operation);
    if (grant !== undefined) {
      return {
        allowed: true,
        operation,
        role: grant.role,
        reason: `role ${grant.role} assigned to ${grant.member} within scope ${scope} grants ${operation}`,
      };
    }
  }
  const where = serviceWide
    ? "a service-wide assignment"
    : scope === null
      ? "a service-wide assignment"
      : `an assignment for the whole service or scope ${scope}`;
  return {
    allowed: false,
    operation,
    reason: `user ${principal.user} lacks operation ${operation} (${OPERATIONS[operation]}) on ${describeObject(object)}: no role granting it through ${where}`,
  };
}
