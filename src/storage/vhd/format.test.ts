import { test } from "node:test";
import assert from "node:assert/strict";
import { DiskFormatError } from "../errors.js";
import { chsGeometry, parseFooter, serializeFooter, DISK_TYPE_DYNAMIC, type VhdFooter } from "./format.js";

const footer: VhdFooter = {
  features: 2,
  dataOffset: 512n,
  timestamp: 12345,
  creatorApplication: "win ",
  creatorVersion: 0xa0000,
  creatorHostOs: 0x5769326b,
  originalSizeBytes: 64 << 20,
  currentSizeBytes: 64 << 20,
  ...chsGeometry(64 << 20),
  diskType: DISK_TYPE_DYNAMIC,
  uniqueId: new Uint8Array(16).fill(7),
  savedState: 0,
};

test("vhd footer: serialize then parse gives the same fields", () => {
  const parsed = parseFooter(serializeFooter(footer), 0x4000);

  assert.deepEqual(parsed, footer);
});

test("vhd footer: a flipped byte fails the checksum, naming the field and offset", () => {
  const bytes = serializeFooter(footer);
  bytes[50] = (bytes[50] ?? 0) ^ 1;

  assert.throws(() => parseFooter(bytes, 0x4000), (error: unknown) => error instanceof DiskFormatError && error.code === "vhd.bad-footer" && error.message.includes("footer at 0x4040: Checksum"));
});

test("vhd footer: a size that is not a multiple of 512 is refused", () => {
  const bytes = serializeFooter({ ...footer, currentSizeBytes: 1000 });

  assert.throws(() => parseFooter(bytes, 0), /CurrentSize: 0x3e8/);
});

test("vhd geometry: 64 MiB uses 17 sectors per track as the spec's algorithm does", () => {
  // 131072 sectors / 17 = 7710 cylinder-heads; heads = ceil(7710 / 1024) = 8 > 4.
  assert.deepEqual(chsGeometry(64 << 20), { cylinders: 963, heads: 8, sectorsPerTrack: 17 });
});

test("vhd geometry: sizes above 127 GiB are capped at 65535/16/255", () => {
  assert.deepEqual(chsGeometry(2000 * 2 ** 30), { cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
});
