import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acquireInstanceLock } from "./instance-lock.js";
import { ServiceStartError } from "./errors.js";

test("acquireInstanceLock: a second lock on the same file is refused naming the holder's pid, and works after release", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-lock-"));
  try {
    const path = join(dir, "service.lock");
    const first = acquireInstanceLock(path, dir);

    assert.throws(
      () => acquireInstanceLock(path, dir),
      (e: unknown) =>
        e instanceof ServiceStartError &&
        e.code === "service.locked" &&
        e.message.includes(`(pid ${process.pid})`),
    );
    assert.equal(readFileSync(path, "utf8").trim(), String(process.pid));
    first.release();
    acquireInstanceLock(path, dir).release();
  } finally {
    rmSync(dir, { recursive: true });
  }
});
