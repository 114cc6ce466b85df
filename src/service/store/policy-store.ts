/**
 * The authorization policy in the store: built-in tasks and roles come from code, custom
 * ones, scopes and assignments from tables. `current()` is the immutable document
 * `decide()` takes; it is rebuilt after a change and cached until the next one.
 */
import type Database from "better-sqlite3";
import {
  BUILTIN_ROLES,
  BUILTIN_TASKS,
  type Member,
  type Operation,
  type PolicyDocument,
  type RoleAssignment,
  type RoleDefinition,
  type ScopeDefinition,
  type TaskDefinition,
} from "../../authz/index.js";
import { ConflictError, NotFoundError } from "../errors.js";

interface AssignmentRow {
  id: number;
  role: string;
  scope: string | null;
  member_kind: "user" | "group";
  member_name: string;
}

/** Reads and changes the policy tables; synchronous, joins the caller's transaction. */
export class PolicyStore {
  readonly #db: Database.Database;
  #current: PolicyDocument | undefined;

  constructor(db: Database.Database) {
    this.#db = db;
  }

  /** The policy as of the last committed change. */
  current(): PolicyDocument {
    this.#current ??= this.#load();
    return this.#current;
  }

  /** Forgets the cached document (after a change, or after a rolled-back transaction). */
  invalidate(): void {
    this.#current = undefined;
  }

  #load(): PolicyDocument {
    const tasks: TaskDefinition[] = [
      ...BUILTIN_TASKS,
      ...(
        this.#db.prepare("SELECT * FROM tasks ORDER BY name").all() as {
          name: string;
          description: string;
          operations: string;
        }[]
      ).map((r) =>
        Object.freeze({
          name: r.name,
          description: r.description,
          operations: JSON.parse(r.operations) as Operation[],
          builtin: false,
        }),
      ),
    ];
    const roles: RoleDefinition[] = [
      ...BUILTIN_ROLES,
      ...(
        this.#db.prepare("SELECT * FROM roles ORDER BY name").all() as {
          name: string;
          description: string;
          tasks: string;
          operations: string;
        }[]
      ).map((r) =>
        Object.freeze({
          name: r.name,
          description: r.description,
          tasks: JSON.parse(r.tasks) as string[],
          operations: JSON.parse(r.operations) as Operation[],
          builtin: false,
        }),
      ),
    ];
    const scopes = this.#db
      .prepare("SELECT name, description FROM scopes ORDER BY name")
      .all() as ScopeDefinition[];
    const assignments = (
      this.#db.prepare("SELECT * FROM assignments ORDER BY id").all() as AssignmentRow[]
    ).map((r): RoleAssignment => ({
      id: r.id,
      role: r.role,
      scope: r.scope,
      member: { kind: r.member_kind, name: r.member_name },
    }));
    return Object.freeze({
      tasks: Object.freeze(tasks),
      roles: Object.freeze(roles),
      scopes: Object.freeze(scopes),
      assignments: Object.freeze(assignments),
    });
  }

  #change(run: () => void): void {
    this.invalidate();
    run();
    this.invalidate();
  }

  /**
   * The scope named `name`.
   *
   * @throws {NotFoundError} `authz.unknown-scope`
   */
  scope(name: string): ScopeDefinition {
    const found = this.current().scopes.find((s) => s.name === name);
    if (found === undefined) throw new NotFoundError(`Scope ${name} does not exist`, "authz.unknown-scope");
    return found;
  }

  /** @throws {NotFoundError} `authz.unknown-role` */
  role(name: string): RoleDefinition {
    const found = this.current().roles.find((r) => r.name === name);
    if (found === undefined) throw new NotFoundError(`Role ${name} does not exist`, "authz.unknown-role");
    return found;
  }

  /** @throws {NotFoundError} `authz.unknown-task` */
  task(name: string): TaskDefinition {
    const found = this.current().tasks.find((t) => t.name === name);
    if (found === undefined) throw new NotFoundError(`Task ${name} does not exist`, "authz.unknown-task");
    return found;
  }

  /** @throws {ConflictError} `authz.scope-exists` */
  createScope(name: string, description: string): ScopeDefinition {
    if (this.current().scopes.some((s) => s.name === name))
      throw new ConflictError(`Scope ${name} already exists`, "authz.scope-exists");
    this.#change(() =>
      this.#db.prepare("INSERT INTO scopes (name, description) VALUES (?, ?)").run(name, description),
    );
    return this.scope(name);
  }

  /**
   * Deletes a scope that no VM and no assignment uses.
   *
   * @throws {NotFoundError} `authz.unknown-scope`
   * @throws {ConflictError} `authz.scope-in-use`
   */
  deleteScope(name: string, vmsInScope: number): void {
    this.scope(name);
    const assigned = this.current().assignments.filter((a) => a.scope === name).length;
    if (vmsInScope > 0 || assigned > 0) {
      throw new ConflictError(
        `Scope ${name} is in use by ${vmsInScope} VM(s) and ${assigned} assignment(s)`,
        "authz.scope-in-use",
        {
          vms: vmsInScope,
          assignments: assigned,
        },
      );
    }
    this.#change(() => this.#db.prepare("DELETE FROM scopes WHERE name = ?").run(name));
  }

  /** @throws {ConflictError} `authz.task-exists` */
  createTask(name: string, description: string, operations: readonly Operation[]): TaskDefinition {
    if (this.current().tasks.some((t) => t.name === name))
      throw new ConflictError(`Task ${name} already exists`, "authz.task-exists");
    this.#change(() =>
      this.#db
        .prepare("INSERT INTO tasks (name, description, operations) VALUES (?, ?, ?)")
        .run(name, description, JSON.stringify([...new Set(operations)])),
    );
    return this.task(name);
  }

  /**
   * @throws {NotFoundError} `authz.unknown-task`
   * @throws {ConflictError} `authz.builtin` or `authz.task-in-use`
   */
  deleteTask(name: string): void {
    const t = this.task(name);
    if (t.builtin) throw new ConflictError(`Task ${name} is built in`, "authz.builtin");
    const users = this.current()
      .roles.filter((r) => r.tasks.includes(name))
      .map((r) => r.name);
    if (users.length > 0)
      throw new ConflictError(`Task ${name} is used by role(s) ${users.join(", ")}`, "authz.task-in-use", {
        roles: users,
      });
    this.#change(() => this.#db.prepare("DELETE FROM tasks WHERE name = ?").run(name));
  }

  /**
   * @throws {ConflictError} `authz.role-exists`
   * @throws {NotFoundError} `authz.unknown-task` for a task it names
   */
  createRole(
    name: string,
    description: string,
    tasks: readonly string[],
    operations: readonly Operation[],
  ): RoleDefinition {
    if (this.current().roles.some((r) => r.name === name))
      throw new ConflictError(`Role ${name} already exists`, "authz.role-exists");
    for (const t of tasks) this.task(t);
    this.#change(() =>
      this.#db
        .prepare("INSERT INTO roles (name, description, tasks, operations) VALUES (?, ?, ?, ?)")
        .run(
          name,
          description,
          JSON.stringify([...new Set(tasks)]),
          JSON.stringify([...new Set(operations)]),
        ),
    );
    return this.role(name);
  }

  /**
   * @throws {NotFoundError} `authz.unknown-role`
   * @throws {ConflictError} `authz.builtin` or `authz.role-in-use`
   */
  deleteRole(name: string): void {
    const r = this.role(name);
    if (r.builtin) throw new ConflictError(`Role ${name} is built in`, "authz.builtin");
    const n = this.current().assignments.filter((a) => a.role === name).length;
    if (n > 0)
      throw new ConflictError(`Role ${name} is used by ${n} assignment(s)`, "authz.role-in-use", {
        assignments: n,
      });
    this.#change(() => this.#db.prepare("DELETE FROM roles WHERE name = ?").run(name));
  }

  /**
   * Assigns a role to a member within the service (`scope` null) or a scope.
   *
   * @throws {NotFoundError} `authz.unknown-role`, `authz.unknown-scope`
   * @throws {ConflictError} `authz.assignment-exists`
   */
  assign(role: string, scope: string | null, member: Member): RoleAssignment {
    this.role(role);
    if (scope !== null) this.scope(scope);
    const existing = this.current().assignments.find(
      (a) =>
        a.role === role &&
        a.scope === scope &&
        a.member.kind === member.kind &&
        a.member.name === member.name,
    );
    if (existing !== undefined) {
      throw new ConflictError(
        `${member.kind} ${member.name} already holds role ${role} there`,
        "authz.assignment-exists",
        { id: existing.id },
      );
    }
    let id = 0;
    this.#change(() => {
      id = Number(
        this.#db
          .prepare("INSERT INTO assignments (role, scope, member_kind, member_name) VALUES (?, ?, ?, ?)")
          .run(role, scope, member.kind, member.name).lastInsertRowid,
      );
    });
    return { id, role, scope, member };
  }

  /**
   * Removes an assignment.
   *
   * @throws {NotFoundError} `authz.unknown-assignment`
   */
  unassign(id: number): RoleAssignment {
    const found = this.current().assignments.find((a) => a.id === id);
    if (found === undefined)
      throw new NotFoundError(`Assignment ${id} does not exist`, "authz.unknown-assignment");
    this.#change(() => this.#db.prepare("DELETE FROM assignments WHERE id = ?").run(id));
    return found;
  }
}
