import { test } from "node:test";
import assert from "node:assert/strict";
import { bitmapRuns, blockSpans } from "./blocks.js";
import { MemoryFile } from "./file.js";
import { RawImage } from "./raw.js";
import { VhdImage } from "./vhd/image.js";
import { MiB } from "./vhdx/format.js";
import { VhdxImage } from "./vhdx/image.js";

test("blocks: a range is cut at block boundaries, each part knowing its block, offset within it and bytes before it", () => {
  assert.deepEqual(
    [...blockSpans(1000, 5000, 2048)].map((s) => [s.pos, s.block, s.within, s.take, s.done]),
    [
      [1000, 0, 1000, 1048, 0],
      [2048, 1, 0, 2048, 1048],
      [4096, 2, 0, 1904, 3096],
    ],
  );
  assert.deepEqual([...blockSpans(0, 0, 512)], []);
});

test("blocks: sector bitmap runs follow the bit order (VHD most significant bit first, VHDX least)", () => {
  const bitmap = Uint8Array.of(0b1000_0001);
  const o = { firstSector: 0, within: 0, length: 8 * 512, sectorBytes: 512 };

  assert.deepEqual(
    bitmapRuns(bitmap, { ...o, bitOrder: "msb-first" }).map((r) => [r.start, r.length, r.present]),
    [
      [0, 512, true],
      [512, 6 * 512, false],
      [7 * 512, 512, true],
    ],
  );
  assert.deepEqual(bitmapRuns(Uint8Array.of(0b0000_0010), { ...o, length: 2 * 512, bitOrder: "lsb-first" }).map((r) => r.present), [false, true]);
  assert.deepEqual(bitmapRuns(undefined, { ...o, bitOrder: "lsb-first" }), [{ start: 0, length: 8 * 512, present: false }]);
});

test("blocks: readInto gives what read gives, on raw, VHD and VHDX, within a block, across blocks and over holes", async () => {
  const size = 4 * MiB;
  const images = [
    await RawImage.create(new MemoryFile(), size),
    await VhdImage.create(new MemoryFile(), { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB }),
    await VhdxImage.create(new MemoryFile(), { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB }),
  ];
  for (const image of images) {
    await image.write(MiB - 700, new Uint8Array(5000).fill(9));
    await image.write(3 * MiB, new Uint8Array(512).fill(4));
    for (const [offset, length] of [
      [MiB - 1024, 4096],
      [MiB, 4096],
      [2 * MiB, 4096],
      [3 * MiB - 100, 1000],
      [0, size],
    ] as const) {
      const into = new Uint8Array(length).fill(0xee);
      await image.readInto(offset, into);
      assert.deepEqual(into, await image.read(offset, length), `${image.format} at ${offset}+${length}`);
    }
    await image.close();
  }
});
