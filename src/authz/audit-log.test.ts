import { test } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import { AuditLog, GENESIS_HASH, type AuditEntry, type ChainVerdict } from "./audit-log.js";

/** The verdict's failure details; fails the test when the chain verified. */
function failure(verdict: ChainVerdict): { seq: number; problem: string } {
  if (verdict.ok) assert.fail("the chain verified but should not have");
  return verdict;
}

function entry(n: number, vm: string | null = "web-1"): AuditEntry {
  return {
    time: `2026-01-01T00:00:0${n}.000Z`,
    kind: "request",
    principal: "alice",
    uid: 1001,
    operation: "vm.start",
    scope: "web",
    vm,
    decision: "allowed",
    result: "ok",
    detail: `request ${n}`,
  };
}

/** An in-memory log holding five entries. */
function logOfFive(): { db: Database.Database; log: AuditLog } {
  const db = new Database(":memory:");
  const log = new AuditLog(db);
  for (let n = 1; n <= 5; n++) log.append(entry(n, n === 3 ? "db-1" : "web-1"));
  return { db, log };
}

test("audit log: an untouched chain verifies", () => {
  const { log } = logOfFive();

  const verdict = log.verify();

  assert.deepEqual({ ok: verdict.ok, count: verdict.count }, { ok: true, count: 5 });
});

test("audit log: entries are numbered from 1 and chained from the genesis hash", () => {
  const { log } = logOfFive();

  const [first, second] = log.query();

  assert.equal(first?.seq, 1);
  assert.equal(first.prevHash, GENESIS_HASH);
  assert.equal(second?.prevHash, first.hash);
});

test("audit log: a changed row is detected at that row", () => {
  const { db, log } = logOfFive();
  db.prepare("UPDATE audit_log SET decision = 'denied' WHERE seq = 3").run();

  const verdict = failure(log.verify());

  assert.equal(verdict.seq, 3);
  assert.match(verdict.problem, /entry 3 was changed/);
});

test("audit log: a changed row whose hash was recomputed still breaks the next row", () => {
  const { db, log } = logOfFive();
  const row = log.query().find((r) => r.seq === 3);
  assert.ok(row);
  // The attacker rewrites row 3 consistently but cannot rewrite every later row's chain without detection of the head.
  db.prepare("UPDATE audit_log SET result = 'error', hash = ? WHERE seq = 3").run("f".repeat(64));

  const verdict = failure(log.verify());

  assert.equal(verdict.seq, 3);
});

test("audit log: a removed row is detected", () => {
  const { db, log } = logOfFive();
  db.prepare("DELETE FROM audit_log WHERE seq = 2").run();

  const verdict = failure(log.verify());

  assert.match(verdict.problem, /expected entry 2 but found 3/);
});

test("audit log: a removed row renumbered to hide the gap is detected", () => {
  const { db, log } = logOfFive();
  db.prepare("DELETE FROM audit_log WHERE seq = 2").run();
  db.prepare("UPDATE audit_log SET seq = seq - 1 WHERE seq > 2").run();

  const verdict = failure(log.verify());

  assert.equal(verdict.seq, 2);
});

test("audit log: two rows swapped are detected", () => {
  const { db, log } = logOfFive();
  db.exec(
    "UPDATE audit_log SET seq = -2 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -2;",
  );

  const verdict = failure(log.verify());

  assert.equal(verdict.seq, 2);
});

test("audit log: the last rows removed are detected through the head", () => {
  const { db, log } = logOfFive();
  db.prepare("DELETE FROM audit_log WHERE seq >= 4").run();

  const verdict = failure(log.verify());

  assert.match(verdict.problem, /removed from the end/);
});

test("audit log: an append inside a rolled-back transaction leaves no trace and the chain intact", () => {
  const { db, log } = logOfFive();
  const failing = db.transaction(() => {
    log.append(entry(6));
    throw new Error("the change being audited failed");
  });

  assert.throws(failing, /failed/);
  log.append(entry(7));

  assert.deepEqual(log.verify().ok, true);
  assert.equal(log.query().at(-1)?.seq, 6);
});

test("audit log: query filters by VM and time", () => {
  const { log } = logOfFive();

  assert.deepEqual(
    log.query({ vm: "db-1" }).map((r) => r.seq),
    [3],
  );
  assert.deepEqual(
    log.query({ since: "2026-01-01T00:00:04.000Z" }).map((r) => r.seq),
    [4, 5],
  );
});

test("audit log: a batch appended at once chains exactly like single appends", () => {
  const single = new AuditLog(new Database(":memory:"));
  const batched = new AuditLog(new Database(":memory:"));
  for (let n = 1; n <= 4; n++) single.append(entry(n));

  batched.appendMany([entry(1), entry(2), entry(3), entry(4)]);

  assert.deepEqual(
    batched.query().map((r) => r.hash),
    single.query().map((r) => r.hash),
  );
  assert.equal(batched.verify().ok, true);
});
