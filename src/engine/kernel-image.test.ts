import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import { parseBzImageHeader } from "./kernel-image.js";

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

  assert.throws(() => parseBzImageHeader(bytes, "/k"), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /Kernel \/k is not a bzImage: boot flag at 0x1fe is 0xaa00/);
    return true;
  });
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
