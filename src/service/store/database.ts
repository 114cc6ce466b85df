/**
 * The service's SQLite store: opened in WAL mode, migrated to the current schema in one
 * transaction per step (`PRAGMA user_version` counts the steps applied).
 */
import Database from "better-sqlite3";
import { AUDIT_SCHEMA } from "../../authz/index.js";
import { ServiceStartError } from "../errors.js";

/** Schema steps, in order; never edit a released step, add one. */
export const MIGRATIONS: readonly string[] = [
  // 1: VM definitions, authorization policy, audit log.
  `
  CREATE TABLE vms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    scope TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'stopped',
    state_reason TEXT,
    generation INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE INDEX vms_scope ON vms(scope);
  CREATE TABLE scopes (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '');
  CREATE TABLE tasks (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', operations TEXT NOT NULL);
  CREATE TABLE roles (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', tasks TEXT NOT NULL, operations TEXT NOT NULL);
  CREATE TABLE assignments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    role TEXT NOT NULL,
    scope TEXT,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('user', 'group')),
    member_name TEXT NOT NULL
  );
  CREATE UNIQUE INDEX assignments_unique ON assignments(role, ifnull(scope, ''), member_kind, member_name);
  ${AUDIT_SCHEMA}
  `,
];

/**
 * Opens (creating if needed) and migrates the store.
 *
 * @throws {ServiceStartError} `service.store-too-new` when the file was written by a newer Palisade,
 *   `service.store-failed` when SQLite cannot open it
 */
export function openStore(path: string): Database.Database {
  let db: Database.Database;
  try {
    db = new Database(path);
    db.pragma("journal_mode = WAL");
    // NORMAL in WAL mode: a commit survives a crash of the service (kill -9), and only an
    // OS crash can lose the last transactions, never corrupt the file.
    db.pragma("synchronous = NORMAL");
    db.pragma("foreign_keys = ON");
    db.pragma("busy_timeout = 5000");
    // Checkpoints run in a worker thread (checkpointer.ts), never inside a request's commit.
    db.pragma("wal_autocheckpoint = 0");
  } catch (error: unknown) {
    throw new ServiceStartError(`Cannot open the store ${path}`, "service.store-failed", { cause: error });
  }
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    db.close();
    throw new ServiceStartError(
      `Store ${path} has schema version ${version}, newer than this Palisade knows (${MIGRATIONS.length})`,
      "service.store-too-new",
    );
  }
  for (let step = version; step < MIGRATIONS.length; step++) {
    const sql = MIGRATIONS[step] ?? "";
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${step + 1}`);
    })();
  }
  return db;
}
