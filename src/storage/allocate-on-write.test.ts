/**
 * NodeFile's allocateOnWrite (convert's output): each write's range is allocated before it
 * is written, so ext4 skips its per-page delayed-allocation work, and nothing outside the
 * written ranges is allocated (holes stay holes). Checked with filefrag(8), which shows
 * an extent written into an allocated range as `unwritten` until writeback and one
 * written with delayed allocation as `delalloc`; skipped where the temporary directory
 * is not ext4 or filefrag is missing.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeFile } from "./file.js";

const MiB = 1024 * 1024;
let dir = "";
before(() => {
  dir = mkdtempSync(join(tmpdir(), "palisade-allocate-"));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** filefrag -v output, or undefined when the tool or ext4 is not there. */
function extents(path: string): string | undefined {
  const r = spawnSync("filefrag", ["-v", path], { encoding: "utf8" });
  if (r.status !== 0 || !r.stdout.includes("Filesystem type is: ef53")) return undefined;
  return r.stdout;
}

test("NodeFile allocateOnWrite: the written range is allocated before writeback, the rest stays a hole", async (t) => {
  const path = join(dir, "allocated");
  const file = await NodeFile.open(path, {
    writable: true,
    create: true,
    allocateOnWrite: true,
    durable: false,
  });
  await file.truncate(4 * MiB);
  const data = new Uint8Array(MiB).fill(0x5a);

  await file.write(MiB, data);

  const map = extents(path);
  if (map === undefined) {
    await file.close();
    t.skip("not ext4, or no filefrag");
    return;
  }
  // One extent: file blocks 256-511 (the MiB written), allocated but not yet written back.
  assert.match(map, /^\s*0:\s+256\.\.\s+511:.*unwritten/m);
  assert.doesNotMatch(map, /delalloc/);
  assert.match(map, /1 extent found/);
  assert.deepEqual(file.dataRanges(0, 4 * MiB), [{ offset: MiB, length: MiB }]);
  assert.ok(Buffer.from(await file.read(MiB, MiB)).equals(data), "the written MiB reads back");
  await file.close();
});

test("NodeFile without allocateOnWrite: the same write is a delayed allocation (what the option avoids)", async (t) => {
  const path = join(dir, "delayed");
  const file = await NodeFile.open(path, { writable: true, create: true, durable: false });
  await file.truncate(4 * MiB);

  await file.write(MiB, new Uint8Array(MiB).fill(0x5a));

  const map = extents(path);
  await file.close();
  if (map === undefined) {
    t.skip("not ext4, or no filefrag");
    return;
  }
  assert.match(map, /^\s*0:\s+256\.\.\s+511:.*delalloc/m);
});
