import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../util/errors.js";
import { checkFormatFlags, formatFromName, formatInfo, formatMap, parseChoice, parseSizeFlag } from "./disk-command.js";

test("disk-command: the format follows the file name, raw otherwise", () => {
  assert.deepEqual(["a.VHDX", "b.vhd", "c.img"].map(formatFromName), ["vhdx", "vhd", "raw"]);
});

test("disk-command: a --format outside the list is a ConfigError naming the flag", () => {
  assert.throws(() => parseChoice("qcow2", ["raw", "vhd", "vhdx"], "--format"), (error: unknown) => error instanceof ConfigError && error.message.startsWith('--format: "qcow2"'));
});

test("disk-command: sizes are binary units in bytes", () => {
  assert.equal(parseSizeFlag("20G", "--size"), 20 * 2 ** 30);
});

test("disk-command: a zero size is refused", () => {
  assert.throws(() => parseSizeFlag("0", "--size"), ConfigError);
});

test("disk-command: info text shows the type, the size in bytes and the parent chain", () => {
  const text = formatInfo({
    path: "c.vhdx",
    format: "vhdx",
    type: "differencing",
    virtualSizeBytes: 2 ** 30,
    blockSizeBytes: 2 ** 21,
    logicalSectorBytes: 512,
    physicalSectorBytes: 4096,
    fileSizeBytes: 4 * 2 ** 20,
    allocatedBytes: 0,
    parentChain: ["b.vhdx", "a.vhdx"],
  });

  assert.match(text, /^type: differencing$/m);
  assert.match(text, /^virtual size: 1 GiB \(1073741824 bytes\)$/m);
  assert.match(text, /^parent chain: b\.vhdx -> a\.vhdx$/m);
});

test("disk-command: map text gives offset, length, state and file offset in hex", () => {
  assert.equal(formatMap([{ offset: 0, length: 4096, state: "data", fileOffset: 0x300000 }]), "0x000000000000 0x000000001000 data @0x300000");
});

test("disk-command: geometry flags a format lacks are refused, naming the flag", () => {
  assert.throws(() => { checkFormatFlags("vhd", { logicalSector: "4096" }); }, (error: unknown) => error instanceof ConfigError && error.message.startsWith("--logical-sector: not a setting of vhd"));
  assert.throws(() => { checkFormatFlags("raw", { blockSize: "1M" }); }, /--block-size: not a setting of raw/);
  assert.doesNotThrow(() => { checkFormatFlags("vhd", { blockSize: "1M" }); });
  assert.doesNotThrow(() => { checkFormatFlags("vhdx", { blockSize: "1M", logicalSector: "4096", physicalSector: "512" }); });
});
