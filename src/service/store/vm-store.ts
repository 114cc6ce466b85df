/**
 * VM definitions in the store: one row per VM, its spec as JSON, its last known state and
 * a generation that every update bumps (for conditional updates).
 */
import { randomUUID } from "node:crypto";
import type Database from "better-sqlite3";
import type { VmSpec } from "../api/schemas.js";
import { ConflictError, NotFoundError } from "../errors.js";
import type { VmState } from "../lifecycle.js";

/** A stored VM. */
export interface VmRecord {
  readonly id: string;
  readonly name: string;
  readonly scope: string | null;
  readonly spec: VmSpec;
  readonly state: VmState;
  readonly stateReason: string | null;
  readonly generation: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

interface Row {
  id: string;
  name: string;
  scope: string | null;
  spec: string;
  state: string;
  state_reason: string | null;
  generation: number;
  created_at: string;
  updated_at: string;
}

function fromRow(row: Row): VmRecord {
  return {
    id: row.id,
    name: row.name,
    scope: row.scope,
    spec: JSON.parse(row.spec) as VmSpec,
    state: row.state as VmState,
    stateReason: row.state_reason,
    generation: row.generation,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/**
 * CRUD over the `vms` table; every method is synchronous and joins the caller's
 * transaction. Reads come from an in-memory copy, dropped on every write and on a
 * rolled-back transaction (`invalidate()`); this is safe because one service owns the
 * store (the instance lock).
 */
export class VmStore {
  #cache: Map<string, VmRecord> | undefined;
  readonly #byName: Database.Statement<[string], Row>;
  readonly #all: Database.Statement<[], Row>;
  readonly #insert: Database.Statement;
  readonly #update: Database.Statement;
  readonly #setState: Database.Statement;
  readonly #delete: Database.Statement<[string]>;
  readonly #countInScope: Database.Statement<[string], { n: number }>;

  constructor(db: Database.Database) {
    this.#byName = db.prepare("SELECT * FROM vms WHERE name = ?");
    this.#all = db.prepare("SELECT * FROM vms ORDER BY name");
    this.#insert = db.prepare(
      "INSERT INTO vms (id, name, scope, spec, state, generation, created_at, updated_at) VALUES (@id, @name, @scope, @spec, 'stopped', 1, @now, @now)",
    );
    this.#update = db.prepare(
      "UPDATE vms SET spec = @spec, scope = @scope, generation = generation + 1, updated_at = @now WHERE name = @name",
    );
    this.#setState = db.prepare(
      "UPDATE vms SET state = @state, state_reason = @reason, updated_at = @now WHERE name = @name",
    );
    this.#delete = db.prepare("DELETE FROM vms WHERE name = ?");
    this.#countInScope = db.prepare("SELECT count(*) AS n FROM vms WHERE scope = ?");
  }

  #records(): Map<string, VmRecord> {
    if (this.#cache === undefined) {
      const cache = new Map<string, VmRecord>();
      for (const row of this.#all.all()) cache.set(row.name, Object.freeze(fromRow(row)));
      this.#cache = cache;
    }
    return this.#cache;
  }

  /** Forgets the in-memory copy (after a write or a rolled-back transaction). */
  invalidate(): void {
    this.#cache = undefined;
  }

  /** The VM named `name`, or `undefined`. */
  find(name: string): VmRecord | undefined {
    return this.#records().get(name);
  }

  /**
   * The VM named `name`.
   *
   * @throws {NotFoundError} `vm.not-found`
   */
  get(name: string): VmRecord {
    const vm = this.find(name);
    if (vm === undefined) throw new NotFoundError(`VM ${name} does not exist`, "vm.not-found");
    return vm;
  }

  /** Every VM, by name. */
  list(): VmRecord[] {
    return [...this.#records().values()];
  }

  /** How many VMs belong to `scope`. */
  countInScope(scope: string): number {
    return this.#countInScope.get(scope)?.n ?? 0;
  }

  /**
   * Stores a new definition.
   *
   * @throws {ConflictError} `vm.exists` when the name is taken
   */
  create(spec: VmSpec, now: string, id: string = randomUUID()): VmRecord {
    if (this.list().some((vm) => vm.id === id)) {
      throw new ConflictError(`A VM with id ${id} already exists`, "vm.exists");
    }
    this.invalidate();
    if (this.#byName.get(spec.name) !== undefined) {
      throw new ConflictError(`VM ${spec.name} already exists`, "vm.exists");
    }
    this.#insert.run({
      id,
      name: spec.name,
      scope: spec.scope,
      spec: JSON.stringify(spec),
      now,
    });
    return this.get(spec.name);
  }

  /**
   * Replaces a definition's spec.
   *
   * @throws {NotFoundError} `vm.not-found`
   * @throws {ConflictError} `vm.generation-mismatch` when `ifGeneration` is given and stale
   */
  update(name: string, spec: VmSpec, now: string, ifGeneration?: number): VmRecord {
    const current = this.get(name);
    if (ifGeneration !== undefined && ifGeneration !== current.generation) {
      throw new ConflictError(
        `VM ${name} changed since generation ${ifGeneration}`,
        "vm.generation-mismatch",
        {
          generation: current.generation,
        },
      );
    }
    this.invalidate();
    this.#update.run({ name, spec: JSON.stringify(spec), scope: spec.scope, now });
    return this.get(name);
  }

  /** Records the VM's state (and why it changed). */
  setState(name: string, state: VmState, reason: string | null, now: string): void {
    this.invalidate();
    this.#setState.run({ name, state, reason, now });
  }

  /**
   * Deletes a definition.
   *
   * @throws {NotFoundError} `vm.not-found`
   */
  delete(name: string): void {
    this.invalidate();
    if (this.#delete.run(name).changes === 0)
      throw new NotFoundError(`VM ${name} does not exist`, "vm.not-found");
  }
}
