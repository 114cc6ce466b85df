/**
 * copyImage: the chunks of every allocation window are copied (the next window's
 * allocation is worked out while the current one is copied), progress is reported window
 * by window in order up to the disk's size, and when a write fails every worker has
 * stopped before copyImage throws (its caller closes the image next).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { BlockImage } from "./block-image.js";
import { MemoryFile, PowerCut } from "./file.js";
import { copyImage } from "./operations.js";
import { MiB } from "./vhdx/format.js";
import { VhdxImage } from "./vhdx/image.js";

// 1 GiB: four 256 MiB allocation windows. 1 MiB blocks keep the in-memory files small.
const sizeBytes = 1024 * MiB;

/** A dynamic VHDX in memory with 64 KiB of data at each of `offsets`. */
async function sourceWithDataAt(offsets: number[]): Promise<VhdxImage> {
  const image = await VhdxImage.create(new MemoryFile(), { sizeBytes, type: "dynamic", blockSizeBytes: MiB });
  for (const [i, offset] of offsets.entries())
    await image.write(offset, new Uint8Array(64 * 1024).fill(i + 1));
  return image;
}

test("copyImage: data in every window is copied, holes stay holes, and progress ends at the disk's size", async () => {
  // One run in each window, the last one in the disk's last MiB.
  const offsets = [0, 300 * MiB, 600 * MiB + 64 * 1024, sizeBytes - MiB];
  const src = await sourceWithDataAt(offsets);
  const dst = await VhdxImage.create(new MemoryFile(), { sizeBytes, type: "dynamic", blockSizeBytes: MiB });
  const progress: number[] = [];

  await copyImage(src, dst, { onProgress: (done) => progress.push(done) });

  assert.deepEqual(progress, [256 * MiB, 512 * MiB, 768 * MiB, 1024 * MiB]);
  // Only the four 1 MiB blocks holding data were allocated.
  assert.deepEqual(
    (await dst.allocation(0, sizeBytes))
      .filter((r) => r.state === "data")
      .map((r) => [r.offset / MiB, r.length / MiB]),
    [
      [0, 1],
      [300, 1],
      [600, 1],
      [1023, 1],
    ],
  );
  assert.deepEqual(
    await dst.read(600 * MiB, 192 * 1024),
    Uint8Array.from({ length: 192 * 1024 }, (_, i) => (i >= 64 * 1024 && i < 128 * 1024 ? 3 : 0)),
  );
  assert.deepEqual(await dst.read(sizeBytes - MiB, 4), Uint8Array.of(4, 4, 4, 4));
});

test("copyImage: after a failed write no worker writes again, and the write's error is what it throws", async () => {
  // 40 separate 64 KiB runs (one per MiB): one write each, more chunks than workers.
  const src = await sourceWithDataAt(Array.from({ length: 40 }, (_, i) => i * MiB));
  let writes = 0;
  // copyImage only writes to its destination (no discard: src has no parent), so a
  // stand-in with `write` is a whole destination here. The 5th write fails; each write
  // takes a millisecond, so other workers are mid-write when it does.
  const failing = {
    write: (): Promise<void> => {
      writes++;
      return writes === 5 ? Promise.reject(new PowerCut()) : new Promise((resolve) => setTimeout(resolve, 1));
    },
  } as unknown as BlockImage;

  await assert.rejects(copyImage(src, failing), PowerCut);
  const writesWhenThrown = writes;
  await new Promise((resolve) => setTimeout(resolve, 50));

  assert.equal(writes, writesWhenThrown, "a worker went on writing after copyImage threw");
  assert.ok(writes <= 8, `${writes} writes: the workers did not stop at the failure`);
});

test("copyImage: a grain with zero first and last bytes but data inside is copied; an all-zero grain is not", async () => {
  const src = await VhdxImage.create(new MemoryFile(), { sizeBytes, type: "dynamic", blockSizeBytes: MiB });
  const grain = new Uint8Array(64 * 1024);
  grain[1000] = 7; // bytes 0 and 65535 stay zero
  await src.write(0, grain);
  await src.write(5 * MiB, new Uint8Array(64 * 1024)); // allocated in src, but zeros
  const dst = await VhdxImage.create(new MemoryFile(), { sizeBytes, type: "dynamic", blockSizeBytes: MiB });

  await copyImage(src, dst);

  assert.deepEqual(
    (await dst.allocation(0, sizeBytes)).filter((r) => r.state === "data").map((r) => [r.offset, r.length]),
    [[0, MiB]],
  );
  assert.equal((await dst.read(1000, 1))[0], 7);
});
