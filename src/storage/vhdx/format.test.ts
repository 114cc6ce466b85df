import { test } from "node:test";
import assert from "node:assert/strict";
import { DiskFormatError } from "../errors.js";
import { newGuid } from "../guid.js";
import {
  batGeometry,
  chooseHeader,
  findActiveSequence,
  maxSectorsPerEntry,
  MiB,
  parseBat,
  parseHeader,
  serializeHeader,
  serializeLogEntry,
  type VhdxHeader,
} from "./format.js";

const header: VhdxHeader = {
  sequenceNumber: 5n,
  fileWriteGuid: newGuid(),
  dataWriteGuid: newGuid(),
  logGuid: new Uint8Array(16),
  logVersion: 0,
  version: 1,
  logLengthBytes: MiB,
  logOffset: MiB,
};
const fileSize = 8 * MiB;

test("vhdx header: serialize then parse gives the same fields", () => {
  assert.deepEqual(parseHeader(serializeHeader(header), 0, fileSize), header);
});

test("vhdx header: a flipped bit fails the checksum, naming header, field and offset", () => {
  const bytes = serializeHeader(header);
  bytes[100] = 1;

  assert.throws(
    () => parseHeader(bytes, 1, fileSize),
    (error: unknown) => error instanceof DiskFormatError && error.code === "vhdx.bad-header" && error.message.startsWith("header 2 at 0x20004: Checksum"),
  );
});

test("vhdx header: a log past the end of the file is refused", () => {
  const bytes = serializeHeader({ ...header, logOffset: 8 * MiB });

  assert.throws(() => parseHeader(bytes, 0, fileSize), /LogOffset: log 0x800000\+0x100000 ends past the end of the file/);
});

test("vhdx header: the valid header with the higher sequence number is current", () => {
  const older = serializeHeader({ ...header, sequenceNumber: 9n });
  const newer = serializeHeader({ ...header, sequenceNumber: 10n });

  assert.equal(chooseHeader([older, newer], fileSize).index, 1);
});

test("vhdx header: a torn newer header leaves the older one current", () => {
  const older = serializeHeader({ ...header, sequenceNumber: 9n });
  const torn = serializeHeader({ ...header, sequenceNumber: 10n }).fill(0xaa, 2048);

  assert.equal(chooseHeader([older, torn], fileSize).header.sequenceNumber, 9n);
});

test("vhdx BAT geometry: 512-byte sectors and 32 MiB blocks give a chunk ratio of 128", () => {
  // 2^23 sectors * 512 bytes / 32 MiB = 128 payload blocks per sector bitmap block.
  assert.deepEqual(batGeometry(10 * 1024 * MiB, 32 * MiB, 512, false), { chunkRatio: 128, payloadBlocks: 320, bitmapBlocks: 3, totalEntries: 322 });
});

test("vhdx BAT: two entries pointing at the same block are refused", () => {
  const g = batGeometry(64 * MiB, 32 * MiB, 512, false);
  const bat = new Uint8Array(g.totalEntries * 8);
  const v = new DataView(bat.buffer);
  v.setUint32(0, (4 << 20) | 6, true);
  v.setUint32(8, (4 << 20) | 6, true);

  assert.throws(
    () => parseBat(bat, 3 * MiB, g, { blockSizeBytes: 32 * MiB, hasParent: false, fileSizeBytes: 100 * MiB, reserved: [] }),
    (error: unknown) => error instanceof DiskFormatError && error.code === "vhdx.bad-bat" && error.message.includes("overlaps the block of entry 0"),
  );
});

test("vhdx BAT: a block inside the metadata region is refused", () => {
  const g = batGeometry(64 * MiB, 32 * MiB, 512, false);
  const bat = new Uint8Array(g.totalEntries * 8);
  new DataView(bat.buffer).setUint32(0, (2 << 20) | 6, true);

  assert.throws(
    () => parseBat(bat, 3 * MiB, g, { blockSizeBytes: 32 * MiB, hasParent: false, fileSizeBytes: 100 * MiB, reserved: [{ start: 2 * MiB, end: 3 * MiB, name: "metadata region" }] }),
    /payload entry 0 FileOffset: block 0x200000 overlaps the metadata region/,
  );
});

test("vhdx log: an entry written by us is found and carries its sectors", () => {
  const logGuid = newGuid();
  const sector = new Uint8Array(4096).map((_, i) => i & 0xff);
  const log = new Uint8Array(MiB);
  log.set(serializeLogEntry([{ fileOffset: 3 * MiB, data: sector }], { sequenceNumber: 7n, logGuid, logOffset: 0, flushedFileOffset: 8 * MiB, lastFileOffset: 8 * MiB }), 0);

  const [entry, ...rest] = findActiveSequence(log, logGuid);

  assert.equal(rest.length, 0);
  assert.equal(entry?.sequenceNumber, 7n);
  assert.deepEqual(entry.descriptors[0]?.data, sector);
});

test("vhdx log: a torn entry (second half lost) is not replayed", () => {
  const logGuid = newGuid();
  const log = new Uint8Array(MiB);
  const entry = serializeLogEntry([{ fileOffset: 3 * MiB, data: new Uint8Array(4096).fill(1) }], { sequenceNumber: 7n, logGuid, logOffset: 0, flushedFileOffset: 0, lastFileOffset: 0 });
  log.set(entry.subarray(0, entry.length / 2), 0);

  assert.deepEqual(findActiveSequence(log, logGuid), []);
});

test("vhdx log: entries of another log GUID are ignored", () => {
  const log = new Uint8Array(MiB);
  log.set(serializeLogEntry([{ fileOffset: 3 * MiB, data: new Uint8Array(4096) }], { sequenceNumber: 1n, logGuid: newGuid(), logOffset: 0, flushedFileOffset: 0, lastFileOffset: 0 }), 0);

  assert.deepEqual(findActiveSequence(log, newGuid()), []);
});

test("vhdx log: a 1 MiB log holds 254 data sectors per entry", () => {
  // 256 log sectors = 254 data sectors + 2 descriptor sectors (64 + 254 * 32 = 8192 bytes).
  assert.equal(maxSectorsPerEntry(MiB), 254);
});
