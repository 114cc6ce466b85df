import { test } from "node:test";
import assert from "node:assert/strict";
import { crc32c, crc32cWithZeroField } from "./crc32c.js";

test("crc32c: the check value of '123456789' is 0xE3069283 (RFC 3720 B.4)", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
});

test("crc32c: 32 zero bytes give 0x8A9136AA (RFC 3720 B.4)", () => {
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
});

test("crc32c: 32 bytes of 0xFF give 0x62A8AB43 (RFC 3720 B.4)", () => {
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
});

test("crc32c: continuing over two halves equals one pass", () => {
  const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31) & 0xff);

  const split = crc32c(data.subarray(437), crc32c(data.subarray(0, 437)));

  assert.equal(split, crc32c(data));
});

test("crc32c: a checksum field counts as zero wherever it holds", () => {
  const data = Uint8Array.from({ length: 64 }, (_, i) => i + 1);
  const zeroed = data.slice();
  zeroed.fill(0, 4, 8);

  assert.equal(crc32cWithZeroField(data, 4), crc32c(zeroed));
});

/** CRC-32C one bit at a time, straight from the definition: the reference. */
function bitwiseCrc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

test("crc32c: runs of zeros (skipped 256 bytes at a time) give what the bitwise definition gives", () => {
  // 64 KiB like a VHDX region table: a few non-zero bytes, zero runs of every length
  // around them, one starting at an odd offset and one ending 3 bytes short of the end.
  const data = new Uint8Array(64 * 1024);
  data[0] = 0x72;
  data[17] = 0x01;
  data[1536] = 0xff;
  data[5000] = 0x80;
  data[data.length - 3] = 0x11;

  assert.equal(crc32c(data), bitwiseCrc32c(data));
  assert.equal(crc32c(data.subarray(1537)), bitwiseCrc32c(data.subarray(1537)));
  assert.equal(crc32c(new Uint8Array(4096)), bitwiseCrc32c(new Uint8Array(4096)));
  assert.equal(
    crc32c(data.subarray(5001), crc32c(data.subarray(0, 5001))),
    crc32c(data),
    "continued over a split inside a zero run",
  );
});
