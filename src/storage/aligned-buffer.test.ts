/**
 * pageAlignedBuffer: large I/O buffers start on a page boundary (reads from the page cache
 * into a buffer 16 bytes past one were ~4x costlier, see its comment).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { pageAlignedBuffer } from "./file.js";

const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");

test("pageAlignedBuffer: page-aligned, the asked length, and each buffer its own memory", () => {
  const buffers = [1, 4096, 65_536, 1 << 20, (1 << 20) + 3].map((length) => ({
    length,
    buffer: pageAlignedBuffer(length),
  }));

  for (const { length, buffer } of buffers) {
    assert.equal(buffer.length, length);
    assert.equal(koffi.address(buffer) % 4096n, 0n, `a ${length}-byte buffer is not page-aligned`);
  }
  for (const [i, { buffer }] of buffers.entries()) buffer.fill(i + 1);
  for (const [i, { length, buffer }] of buffers.entries()) {
    assert.ok(
      buffer.every((byte) => byte === i + 1),
      `the ${length}-byte buffer was overwritten by another`,
    );
  }
});
