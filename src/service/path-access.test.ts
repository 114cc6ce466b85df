import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assertCallerMayOpen, modeAllows } from "./path-access.js";

test("modeAllows: owner, group and other bits decide, in that order; root may do anything", () => {
  const file = { mode: 0o640, uid: 1000, gid: 50 };
  assert.equal(modeAllows(file, { uid: 1000, gids: [] }, 6), true);
  assert.equal(modeAllows(file, { uid: 1001, gids: [50] }, 4), true);
  assert.equal(modeAllows(file, { uid: 1001, gids: [50] }, 6), false);
  assert.equal(modeAllows(file, { uid: 1001, gids: [51] }, 4), false);
  // The owner class applies even when it grants less than the group class.
  assert.equal(modeAllows({ mode: 0o070, uid: 1000, gid: 50 }, { uid: 1000, gids: [50] }, 4), false);
  assert.equal(modeAllows({ mode: 0o000, uid: 1, gid: 1 }, { uid: 0, gids: [] }, 7), true);
});

test("assertCallerMayOpen: an unreadable file, or a symlink to one, is refused naming the field", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-access-"));
  try {
    chmodSync(dir, 0o755);
    const secret = join(dir, "secret");
    writeFileSync(secret, "x", { mode: 0o600 });
    const open = join(dir, "open");
    writeFileSync(open, "x", { mode: 0o644 });
    const link = join(dir, "link");
    symlinkSync(secret, link);
    const nobody = { uid: 65534, gids: [65534] };
    assert.doesNotThrow(() => {
      assertCallerMayOpen(open, nobody, "r", "body.kernel");
    });
    assert.throws(() => {
      assertCallerMayOpen(open, nobody, "rw", "body.disks.0.path");
    }, /body\.disks\.0\.path.*may not read and write/);
    for (const path of [secret, link]) {
      assert.throws(() => {
        assertCallerMayOpen(path, nobody, "r", "body.kernel");
      }, (error: Error & { code?: string }) => error.code === "vm.path-denied");
    }
    assert.throws(() => {
      assertCallerMayOpen(join(dir, "missing"), nobody, "r", "body.initrd");
    }, /no such file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
