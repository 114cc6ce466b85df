import { test } from "node:test";
import assert from "node:assert/strict";
import { bitmapRuns, blockSpans, bytesAllEqual } from "./blocks.js";
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

test("blocks: bitmap runs step over whole 0x00 and 0xff bytes and give the same runs as bit by bit", () => {
  // Sectors 0-15 present (0xff 0xff), 16-19 absent and 20-23 present (0x0f, MSB first),
  // 24-39 absent (0x00 0x00), 40-43 present and 44-47 absent (0xf0).
  const bitmap = Uint8Array.of(0xff, 0xff, 0x0f, 0x00, 0x00, 0xf0);

  const runs = bitmapRuns(bitmap, { firstSector: 0, within: 0, length: 48 * 512, sectorBytes: 512, bitOrder: "msb-first" });
  // The block's sector 0 is bitmap bit 4 and the range starts at sector 2 (bit 6): bits
  // 6-7 go bit by bit, then byte 1 whole, then byte 2 ends the range after 3 sectors.
  const shifted = bitmapRuns(Uint8Array.of(0xff, 0xff, 0xe0), { firstSector: 4, within: 2 * 512, length: 13 * 512, sectorBytes: 512, bitOrder: "lsb-first" });

  assert.deepEqual(
    runs.map((r) => [r.start / 512, r.length / 512, r.present]),
    [
      [0, 16, true],
      [16, 4, false],
      [20, 4, true],
      [24, 16, false],
      [40, 4, true],
      [44, 4, false],
    ],
  );
  assert.deepEqual(
    shifted.map((r) => [r.start / 512, r.length / 512, r.present]),
    [
      [2, 10, true],
      [12, 3, false],
    ],
  );
});

test("blocks: a range of whole bitmap bytes all set, or all clear, is one run", () => {
  // 3 bytes: 24 sectors of 512 bytes; the block's sector 0 is bitmap bit 8 (byte 1).
  const bitmap = Uint8Array.of(0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01);
  const o = { firstSector: 8, sectorBytes: 512, bitOrder: "msb-first" } as const;

  assert.deepEqual(bitmapRuns(bitmap, { ...o, within: 0, length: 24 * 512 }), [{ start: 0, length: 24 * 512, present: true }]);
  assert.deepEqual(bitmapRuns(bitmap, { ...o, within: 24 * 512, length: 24 * 512 }), [{ start: 24 * 512, length: 24 * 512, present: false }]);
  // The last byte has one bit set (sector 55, LSB in MSB-first order): not one run.
  assert.deepEqual(
    bitmapRuns(bitmap, { ...o, within: 24 * 512, length: 32 * 512 }).map((r) => [r.start / 512, r.length / 512, r.present]),
    [
      [24, 31, false],
      [55, 1, true],
    ],
  );
});

test("blocks: bytesAllEqual compares a range with one value and refuses a range past the end", () => {
  const bytes = Uint8Array.of(1, 0xff, 0xff, 0xff, 2);

  assert.equal(bytesAllEqual(bytes, 1, 4, 0xff), true);
  assert.equal(bytesAllEqual(bytes, 0, 4, 0xff), false);
  assert.equal(bytesAllEqual(bytes.subarray(1), 0, 3, 0xff), true, "a view's own offset is honoured");
  assert.equal(bytesAllEqual(bytes, 3, 6, 0xff), false, "past the end: not all equal");
  assert.equal(bytesAllEqual(new Uint8Array(10_000), 0, 10_000, 0), true, "longer than any range asked before");
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
