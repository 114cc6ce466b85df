import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ConsoleRing } from "./console-ring.js";

test("ConsoleRing keeps exactly the last capacity bytes of what was pushed", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 400 }), (capacity, chunks) => {
      const ring = new ConsoleRing(capacity);
      for (const c of chunks) ring.push(Buffer.from(c));
      const all = Buffer.concat(chunks.map((c) => Buffer.from(c)));
      assert.deepEqual(ring.contents(), all.subarray(Math.max(0, all.length - capacity)));
      assert.equal(ring.size, Math.min(all.length, capacity));
    }),
  );
});
