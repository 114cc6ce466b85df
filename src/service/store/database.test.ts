import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS, openStore } from "./database.js";
import { ServiceStartError } from "../errors.js";

test("openStore: a new store is migrated to the latest version in WAL mode", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-store-"));
  try {
    const db = openStore(join(dir, "p.db"));

    assert.equal(db.pragma("user_version", { simple: true }), MIGRATIONS.length);
    assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
    db.close();
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("openStore: a store from a newer Palisade is refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-store-"));
  try {
    const raw = new Database(join(dir, "p.db"));
    raw.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    raw.close();

    assert.throws(
      () => openStore(join(dir, "p.db")),
      (e: unknown) => e instanceof ServiceStartError && e.code === "service.store-too-new",
    );
  } finally {
    rmSync(dir, { recursive: true });
  }
});
