/**
 * Fault injection: run a workload on a file that loses power after N writes, for every N,
 * and check that the image opens after the crash, with every flushed write intact.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { BlockImage } from "./block-image.js";
import { FaultFile, MemoryFile, PowerCut, type StorageFile } from "./file.js";
import { VhdImage } from "./vhd/image.js";
import { VhdxImage } from "./vhdx/image.js";
import { MiB } from "./vhdx/format.js";

interface Step {
  /** Default `write`: `length` bytes of `value`. `discard` reads back as zeros; `resize` sets the size to `offset + length`. */
  readonly kind?: "write" | "discard" | "resize";
  readonly offset: number;
  readonly length: number;
  readonly value: number;
}

// Writes that allocate blocks, fill a block, touch two blocks at once and rewrite an
// allocated block; each followed by a flush.
const STEPS: readonly Step[] = [
  { offset: 0, length: 4096, value: 1 },
  { offset: 3 * MiB + 512, length: 1024, value: 2 },
  { offset: MiB - 2048, length: 8192, value: 3 },
  { offset: 0, length: 512, value: 4 },
  { offset: 5 * MiB, length: MiB, value: 5 },
];

// Then metadata changes other than allocation: a whole block discarded (VHDX: zero state
// through the log; VHD: BAT entry cleared), part of a block discarded (zeros written),
// the disk grown (VHD: its BAT moved to the end of the file), a write in the new part.
const METADATA_STEPS: readonly Step[] = [
  ...STEPS,
  { kind: "discard", offset: 5 * MiB, length: MiB, value: 0 },
  { kind: "discard", offset: 0, length: 1024, value: 0 },
  { kind: "resize", offset: 0, length: 12 * MiB, value: 0 },
  { offset: 10 * MiB, length: 4096, value: 6 },
];

type Opener = (file: StorageFile, readonly: boolean) => Promise<BlockImage>;

async function runWorkload(image: BlockImage, steps: readonly Step[], flushed: Step[]): Promise<void> {
  for (const step of steps) {
    if (step.kind === "discard") await image.discard(step.offset, step.length);
    else if (step.kind === "resize") await (image as BlockImage & { resize(size: number): Promise<void> }).resize(step.offset + step.length);
    else await image.write(step.offset, new Uint8Array(step.length).fill(step.value));
    await image.flush();
    flushed.push(step);
  }
  await image.close();
}

function expected(steps: readonly Step[], size: number): Uint8Array {
  const model = new Uint8Array(size);
  for (const s of steps) if (s.kind !== "resize") model.fill(s.value, s.offset, s.offset + s.length);
  return model;
}

async function crashAtEveryWrite(base: Uint8Array, open: Opener, size: number, steps: readonly Step[] = STEPS): Promise<number> {
  let cut = 0;
  for (;;) {
    for (const torn of [false, true]) {
      const file = new FaultFile(base, { cutAfter: cut, torn });
      const flushed: Step[] = [];
      const image = await open(file, false);
      try {
        await runWorkload(image, steps, flushed);
      } catch (error: unknown) {
        if (!(error instanceof PowerCut)) throw error;
      }
      if (!file.wasCut) return cut;
      for (const keepUnflushed of [true, false]) {
        const after = new MemoryFile(file.crashImage(keepUnflushed), { writable: false });
        const label = `cut after write ${cut}${torn ? " (torn)" : ""}, ${keepUnflushed ? "unflushed writes kept" : "unflushed writes lost"}`;
        const reopened = await open(after, true).catch((error: unknown) => assert.fail(`${label}: image does not open: ${String(error)}`));
        const grownTo = Math.max(size, ...flushed.map((s) => (s.kind === "resize" ? s.offset + s.length : 0)));
        assert.ok(reopened.sizeBytes >= grownTo, `${label}: size ${reopened.sizeBytes}, a flushed resize made it ${grownTo}`);
        const data = await reopened.read(0, reopened.sizeBytes);
        const model = expected(flushed, reopened.sizeBytes);
        for (const step of flushed) {
          if (step.kind === "resize") continue;
          // A later step may have overwritten part of it without a flush: accept the newer value there.
          const later = steps.slice(steps.indexOf(step) + 1);
          for (let i = step.offset; i < step.offset + step.length; i++) {
            if (data[i] !== model[i] && !later.some((s) => i >= s.offset && i < s.offset + s.length && data[i] === s.value)) {
              assert.fail(`${label}: byte 0x${i.toString(16)} is ${data[i]}, flushed value ${model[i]}`);
            }
          }
        }
        assert.deepEqual(after.writes, [], `${label}: a read-only open wrote`);
        await reopened.close();
        // Opening for writing repairs (replays and clears the log); then a read-only open finds nothing to replay.
        const repairFile = new MemoryFile(after.bytes());
        await (await open(repairFile, false)).close();
        const clean = await open(new MemoryFile(repairFile.bytes(), { writable: false }), true);
        if (clean instanceof VhdxImage) assert.equal(clean.replayedLog, false, `${label}: log not empty after repair`);
        assert.deepEqual(await clean.read(0, clean.sizeBytes), data, `${label}: repair changed the data`);
        await clean.close();
      }
    }
    cut++;
  }
}

test("crash: a dynamic VHDX cut at every write opens with every flushed write", async () => {
  const size = 8 * MiB;
  const seed = new MemoryFile();
  await (await VhdxImage.create(seed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB })).close();

  const points = await crashAtEveryWrite(seed.bytes(), (file, readonly) => VhdxImage.open(file, { readonly }), size);

  assert.ok(points > 20, `only ${points} cut points`);
});

test("crash: a differencing VHDX cut at every write opens with every flushed write", async () => {
  const size = 8 * MiB;
  const parentFile = new MemoryFile();
  const parent = await VhdxImage.create(parentFile, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB });
  await parent.close();
  const parentBytes = parentFile.bytes();
  const openParent = async (): Promise<VhdxImage> => VhdxImage.open(new MemoryFile(parentBytes, { writable: false }), { readonly: true });
  const seed = new MemoryFile();
  await (await VhdxImage.create(seed, { sizeBytes: size, type: "differencing", parent: { image: await openParent(), relativePath: "p.vhdx", absolutePath: "/p.vhdx" } })).close();

  const points = await crashAtEveryWrite(seed.bytes(), (file, readonly) => VhdxImage.open(file, { readonly, openParent }), size);

  assert.ok(points > 20, `only ${points} cut points`);
});

test("crash: a dynamic VHD cut at every write opens with every flushed write", async () => {
  const size = 8 * MiB;
  const seed = new MemoryFile();
  await (await VhdImage.create(seed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB })).close();

  const points = await crashAtEveryWrite(seed.bytes(), (file, readonly) => VhdImage.open(file, { readonly }), size);

  assert.ok(points > 10, `only ${points} cut points`);
});

test("crash: a dynamic VHDX cut at every write of discards and a resize opens with every flushed change", async () => {
  const size = 8 * MiB;
  const seed = new MemoryFile();
  await (await VhdxImage.create(seed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB })).close();

  const points = await crashAtEveryWrite(seed.bytes(), (file, readonly) => VhdxImage.open(file, { readonly }), size, METADATA_STEPS);

  assert.ok(points > 30, `only ${points} cut points`);
});

test("crash: a dynamic VHD cut at every write of discards and a resize (BAT moved) opens with every flushed change", async () => {
  const size = 8 * MiB;
  const seed = new MemoryFile();
  await (await VhdImage.create(seed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB })).close();

  const points = await crashAtEveryWrite(seed.bytes(), (file, readonly) => VhdImage.open(file, { readonly }), size, METADATA_STEPS);

  assert.ok(points > 15, `only ${points} cut points`);
});

test("crash: a merge cut at every write leaves the child reading the same disk over its parent", async () => {
  const size = 8 * MiB;
  const parentSeed = new MemoryFile();
  const parent = await VhdxImage.create(parentSeed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB });
  await parent.write(0, new Uint8Array(3 * MiB).fill(1));
  await parent.close();
  const parentBytes = parentSeed.bytes();
  const childFile = new MemoryFile();
  const child = await VhdxImage.create(childFile, {
    sizeBytes: 0,
    type: "differencing",
    blockSizeBytes: MiB,
    parent: { image: await VhdxImage.open(new MemoryFile(parentBytes, { writable: false }), { readonly: true }), relativePath: "p.vhdx", absolutePath: "/p.vhdx" },
  });
  await child.write(MiB + 512, new Uint8Array(4096).fill(2));
  await child.write(5 * MiB, new Uint8Array(MiB).fill(3));
  await child.discard(2 * MiB, MiB);
  await child.close();
  const childBytes = childFile.bytes();
  const openChild = async (parentImage: Uint8Array): Promise<VhdxImage> =>
    VhdxImage.open(new MemoryFile(childBytes, { writable: false }), { readonly: true, openParent: () => VhdxImage.open(new MemoryFile(parentImage, { writable: false }), { readonly: true }) });
  const before = await (await openChild(parentBytes)).read(0, size);

  let cut = 0;
  for (;;) {
    const file = new FaultFile(parentBytes, { cutAfter: cut });
    try {
      const target = await VhdxImage.open(file, { readonly: false, keepDataWriteGuid: true });
      const { copyImage } = await import("./operations.js");
      await copyImage(await openChild(parentBytes), target, { onlyThisLayer: true });
      await target.close();
    } catch (error: unknown) {
      if (!(error instanceof PowerCut)) throw error;
    }
    if (!file.wasCut) break;
    for (const keepUnflushed of [true, false]) {
      const after = await openChild(file.crashImage(keepUnflushed));
      assert.deepEqual(await after.read(0, size), before, `cut after write ${cut}: the child reads differently`);
    }
    cut++;
  }
  assert.ok(cut > 10, `only ${cut} cut points`);
});

test("crash: a log replay (disk check --repair, or any read-write open) cut at every write leaves an image that opens with the same data", async () => {
  const size = 8 * MiB;
  const seed = new MemoryFile();
  await (await VhdxImage.create(seed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB })).close();
  // A writer that flushed and never closed: its last log entry is still pending.
  const dirtyFile = new MemoryFile(seed.bytes());
  const writer = await VhdxImage.open(dirtyFile, { readonly: false });
  await writer.write(MiB + 512, new Uint8Array(8192).fill(5));
  await writer.write(6 * MiB, new Uint8Array(4096).fill(6));
  await writer.flush();
  const dirty = dirtyFile.bytes();
  const probe = await VhdxImage.open(new MemoryFile(dirty, { writable: false }), { readonly: true });
  assert.equal(probe.replayedLog, true, "the fixture has no pending log");
  const want = await probe.read(0, size);
  await probe.close();

  let cut = 0;
  for (;;) {
    const file = new FaultFile(dirty, { cutAfter: cut, torn: cut % 2 === 1 });
    try {
      await (await VhdxImage.open(file, { readonly: false })).close();
    } catch (error: unknown) {
      if (!(error instanceof PowerCut)) throw error;
    }
    if (!file.wasCut) break;
    for (const keepUnflushed of [true, false]) {
      const after = await VhdxImage.open(new MemoryFile(file.crashImage(keepUnflushed), { writable: false }), { readonly: true });
      assert.deepEqual(await after.read(0, size), want, `repair cut after write ${cut}: the data changed`);
      await after.close();
    }
    cut++;
  }
  // The replayed descriptor's write, then the two header writes that clear the LogGuid.
  assert.ok(cut >= 3, `only ${cut} cut points`);
});
