/**
 * The audit log: every request and every VM state change, appended to a SQLite table
 * whose rows form a hash chain. Each row's hash is SHA-256 over the previous row's hash
 * and the row's canonical form (its sequence number included), so changing, removing or
 * reordering a row breaks the chain at that row; a separate head row (last sequence
 * number and hash, written in the same transaction) catches a truncated tail.
 */
import { createHash } from "node:crypto";
import type { Database, Statement } from "better-sqlite3";
import { AuditLogError } from "./errors.js";

/** The hash the first row chains to. */
export const GENESIS_HASH = "0".repeat(64);

/** One thing that happened, before it is numbered and chained. */
export interface AuditEntry {
  /** ISO 8601 UTC time with milliseconds. */
  readonly time: string;
  /** A request to the service, or an event (a VM state change). */
  readonly kind: "request" | "event";
  /** User name of the caller, or `system` for events. */
  readonly principal: string;
  readonly uid: number | null;
  /** An operation name (`vm.start`), or for events what changed (`vm.state`). */
  readonly operation: string;
  readonly scope: string | null;
  readonly vm: string | null;
  readonly decision: "allowed" | "denied" | "none";
  /** `ok`, an error code (`vm.not-found`), or for a state change `stopped->running`. */
  readonly result: string;
  /** Free text: the decision's reason, an error message, an exit reason. */
  readonly detail: string | null;
}

/** An entry as stored: numbered from 1 and chained. */
export interface AuditRecord extends AuditEntry {
  readonly seq: number;
  readonly prevHash: string;
  readonly hash: string;
}

/** Filters for {@link AuditLog.query}. */
export interface AuditQuery {
  /** Only entries at or after this ISO time. */
  readonly since?: string;
  readonly vm?: string;
  /** Only entries with a sequence number above this one (paging). */
  readonly afterSeq?: number;
  /** At most this many entries, oldest first; default 1000. */
  readonly limit?: number;
}

/** The result of checking the chain. */
export type ChainVerdict =
  | { readonly ok: true; readonly count: number; readonly headHash: string }
  | { readonly ok: false; readonly count: number; readonly seq: number; readonly problem: string };

/**
 * The exact bytes the hash covers for one entry: a JSON array in a fixed field order
 * (never object key order, which a reader could not reproduce across versions).
 */
export function canonicalEntry(seq: number, entry: AuditEntry): string {
  return JSON.stringify([
    seq,
    entry.time,
    entry.kind,
    entry.principal,
    entry.uid,
    entry.operation,
    entry.scope,
    entry.vm,
    entry.decision,
    entry.result,
    entry.detail,
  ]);
}

/** SHA-256 (hex) of the previous hash, a newline and the canonical entry. */
export function entryHash(prevHash: string, canonical: string): string {
  return createHash("sha256").update(prevHash).update("\n").update(canonical).digest("hex");
}

/**
 * Checks a chain given oldest first: numbering from 1 without gaps, each row's previous
 * hash equal to the hash before it, each hash recomputed from the row. `head`, when given,
 * is the separately stored last row; a chain ending elsewhere was truncated.
 *
 * @example
 * verifyChain(log.records()).ok; // false after any row was edited
 */
export function verifyChain(
  records: Iterable<AuditRecord>,
  head?: { seq: number; hash: string } | null,
): ChainVerdict {
  let prev = GENESIS_HASH;
  let expectedSeq = 1;
  let count = 0;
  for (const r of records) {
    if (r.seq !== expectedSeq) {
      return {
        ok: false,
        count,
        seq: r.seq,
        problem: `expected entry ${expectedSeq} but found ${r.seq}: entries removed or reordered`,
      };
    }
    if (r.prevHash !== prev) {
      return {
        ok: false,
        count,
        seq: r.seq,
        problem: `entry ${r.seq} does not chain to entry ${r.seq - 1}: an entry was removed, replaced or reordered`,
      };
    }
    const hash = entryHash(prev, canonicalEntry(r.seq, r));
    if (hash !== r.hash) {
      return {
        ok: false,
        count,
        seq: r.seq,
        problem: `entry ${r.seq} was changed: its content does not match its hash`,
      };
    }
    prev = r.hash;
    expectedSeq += 1;
    count += 1;
  }
  if (head !== undefined && head !== null && (head.seq !== count || head.hash !== prev)) {
    return {
      ok: false,
      count,
      seq: count + 1,
      problem: `the log ends at entry ${count} but its head records entry ${head.seq}: entries removed from the end`,
    };
  }
  if (head === null && count > 0) {
    return { ok: false, count, seq: 1, problem: "the log has entries but no head record" };
  }
  return { ok: true, count, headHash: prev };
}

interface Row {
  seq: number;
  time: string;
  kind: string;
  principal: string;
  uid: number | null;
  operation: string;
  scope: string | null;
  vm: string | null;
  decision: string;
  result: string;
  detail: string | null;
  prev_hash: string;
  hash: string;
}

function fromRow(row: Row): AuditRecord {
  return {
    seq: row.seq,
    time: row.time,
    kind: row.kind as AuditEntry["kind"],
    principal: row.principal,
    uid: row.uid,
    operation: row.operation,
    scope: row.scope,
    vm: row.vm,
    decision: row.decision as AuditEntry["decision"],
    result: row.result,
    detail: row.detail,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** SQL creating the log's tables; idempotent. */
export const AUDIT_SCHEMA = `
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  kind TEXT NOT NULL,
  principal TEXT NOT NULL,
  uid INTEGER,
  operation TEXT NOT NULL,
  scope TEXT,
  vm TEXT,
  decision TEXT NOT NULL,
  result TEXT NOT NULL,
  detail TEXT,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log(time);
CREATE INDEX IF NOT EXISTS audit_log_vm ON audit_log(vm, seq);
CREATE TABLE IF NOT EXISTS audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL
);
`;

/**
 * The audit log in a better-sqlite3 database. `append` joins the caller's transaction
 * when there is one, so an entry is stored exactly when the change it records is.
 */
export class AuditLog {
  readonly #db: Database;
  readonly #head: Statement<[], { seq: number; hash: string }>;
  readonly #insert: Statement;
  readonly #setHead: Statement;
  readonly #append: (entries: readonly AuditEntry[]) => AuditRecord[];

  /** Opens the log in `db`, creating its tables if needed. */
  constructor(db: Database) {
    this.#db = db;
    db.exec(AUDIT_SCHEMA);
    this.#head = db.prepare("SELECT seq, hash FROM audit_head WHERE id = 1");
    this.#insert = db.prepare(
      `INSERT INTO audit_log (seq, time, kind, principal, uid, operation, scope, vm, decision, result, detail, prev_hash, hash)
       VALUES (@seq, @time, @kind, @principal, @uid, @operation, @scope, @vm, @decision, @result, @detail, @prevHash, @hash)`,
    );
    this.#setHead = db.prepare(
      "INSERT INTO audit_head (id, seq, hash) VALUES (1, @seq, @hash) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    );
    // The head is read inside the transaction, never cached: a rolled-back caller
    // transaction must not leave a stale head in memory.
    this.#append = db.transaction((entries: readonly AuditEntry[]): AuditRecord[] => {
      let { seq, hash } = this.#head.get() ?? { seq: 0, hash: GENESIS_HASH };
      const records: AuditRecord[] = [];
      for (const entry of entries) {
        const prevHash = hash;
        seq += 1;
        hash = entryHash(prevHash, canonicalEntry(seq, entry));
        const record: AuditRecord = { ...entry, seq, prevHash, hash };
        this.#insert.run(record);
        records.push(record);
      }
      this.#setHead.run({ seq, hash });
      return records;
    });
  }

  /**
   * Appends one entry and returns it numbered and chained.
   *
   * @throws {AuditLogError} `audit.write-failed` when SQLite refuses the write
   */
  append(entry: AuditEntry): AuditRecord {
    const [record] = this.appendMany([entry]);
    if (record === undefined) throw new AuditLogError("Audit append returned nothing", "audit.write-failed");
    return record;
  }

  /**
   * Appends entries in order, in one transaction (or the caller's), reading and writing
   * the head once: the cheap way to log a batch.
   *
   * @throws {AuditLogError} `audit.write-failed` when SQLite refuses the write
   */
  appendMany(entries: readonly AuditEntry[]): AuditRecord[] {
    if (entries.length === 0) return [];
    try {
      return this.#append(entries);
    } catch (error: unknown) {
      throw new AuditLogError("Could not append to the audit log", "audit.write-failed", { cause: error });
    }
  }

  /** Entries matching `query`, oldest first. */
  query(query: AuditQuery = {}): AuditRecord[] {
    const where: string[] = [];
    const params: Record<string, string | number> = {};
    if (query.since !== undefined) {
      where.push("time >= @since");
      params.since = query.since;
    }
    if (query.vm !== undefined) {
      where.push("vm = @vm");
      params.vm = query.vm;
    }
    if (query.afterSeq !== undefined) {
      where.push("seq > @afterSeq");
      params.afterSeq = query.afterSeq;
    }
    params.limit = query.limit ?? 1000;
    const sql = `SELECT * FROM audit_log ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq LIMIT @limit`;
    return (this.#db.prepare(sql).all(params) as Row[]).map(fromRow);
  }

  /** Every entry, oldest first, read lazily. */
  *records(): Generator<AuditRecord> {
    for (const row of this.#db
      .prepare("SELECT * FROM audit_log ORDER BY seq")
      .iterate() as IterableIterator<Row>) {
      yield fromRow(row);
    }
  }

  /** Checks the whole chain and its head (see {@link verifyChain}). */
  verify(): ChainVerdict {
    return this.#db.transaction(() => verifyChain(this.records(), this.#head.get() ?? null))();
  }
}
