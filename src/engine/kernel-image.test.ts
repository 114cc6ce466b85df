import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import { hasPvhEntryNote, parseBzImageHeader, parseElfLayout } from "./kernel-image.js";
import { elfNote, pvhElf } from "./test-fixtures.js";

function bzImageHeader(): Uint8Array {
  const bytes = new Uint8Array(0x210);
  const view = new DataView(bytes.buffer);
  view.setUint16(0x1fe, 0xaa55, true);
  bytes.set(new TextEncoder().encode("HdrS"), 0x202);
  view.setUint16(0x206, 0x20f, true); // boot protocol 2.15, as Linux 6.x writes
  return bytes;
}

test("kernel-image: a bzImage setup header is accepted", () => {
  assert.deepEqual(parseBzImageHeader(bzImageHeader(), "/k"), { protocolVersion: 0x20f });
});

test("kernel-image: a file without the boot flag is refused naming the field", () => {
  const bytes = bzImageHeader();
  bytes[0x1fe] = 0;

  assert.throws(
    () => parseBzImageHeader(bytes, "/k"),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /Kernel \/k is not a bzImage: boot flag at 0x1fe is 0xaa00/);
      return true;
    },
  );
});

test("kernel-image: no HdrS magic, an old protocol or a short file are refused", () => {
  const noMagic = bzImageHeader();
  noMagic[0x202] = 0x41;
  const old = bzImageHeader();
  new DataView(old.buffer).setUint16(0x206, 0x1ff, true);

  assert.throws(() => parseBzImageHeader(noMagic, "/k"), /no "HdrS" setup header/);
  assert.throws(() => parseBzImageHeader(old, "/k"), /boot protocol 1ff/);
  assert.throws(() => parseBzImageHeader(new Uint8Array(10), "/k"), /only 10 bytes/);
});

test("kernel-image: an ELF vmlinux's PVH entry note is found among its notes", () => {
  const gnu = elfNote("GNU", 3, new Uint8Array(20));
  const pvh = elfNote("Xen", 18, new Uint8Array(8));
  const notes = new Uint8Array([...gnu, ...pvh]);
  const layout = parseElfLayout(pvhElf(notes), "/vmlinux");

  assert.deepEqual(layout.noteSegments, [{ offset: 0x100, size: notes.length }]);
  assert.equal(hasPvhEntryNote(notes), true);
  assert.equal(hasPvhEntryNote(gnu), false, "a GNU build-id note is not an entry point");
  assert.equal(
    hasPvhEntryNote(elfNote("Xen", 6, new Uint8Array(4))),
    false,
    "another Xen note is not the entry point",
  );
});

test("kernel-image: ELF files that are not x86-64 kernels are refused naming the field; broken notes do not crash", () => {
  const notes = elfNote("Xen", 18, new Uint8Array(8));
  assert.throws(() => parseElfLayout(pvhElf(notes, { machine: 183 }), "/k"), /e_machine is 183, expected 62/);
  assert.throws(() => parseElfLayout(pvhElf(notes, { phnum: 0 }), "/k"), /e_phnum is 0/);
  assert.throws(() => parseElfLayout(pvhElf(notes, { phnum: 60 }), "/k"), /program headers .* beyond/);
  assert.throws(() => parseElfLayout(pvhElf(notes).subarray(0, 40), "/k"), /only 40 bytes/);
  const truncated = notes.slice(0, 14);
  assert.equal(hasPvhEntryNote(truncated), false);
  const huge = notes.slice();
  new DataView(huge.buffer).setUint32(0, 0xffffffff, true); // namesz past the end
  assert.equal(hasPvhEntryNote(huge), false);
});
