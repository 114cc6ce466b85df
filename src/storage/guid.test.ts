import { test } from "node:test";
import assert from "node:assert/strict";
import { guidFromString, guidToString, newGuid } from "./guid.js";

test("guid: the VHDX BAT region GUID has Microsoft's mixed-endian bytes", () => {
  const bytes = guidFromString("2DC27766-F623-4200-9D64-115E9BFD4A08");

  assert.deepEqual([...bytes.subarray(0, 8)], [0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42]);
  assert.equal(guidToString(bytes), "2DC27766-F623-4200-9D64-115E9BFD4A08");
});

test("guid: new GUIDs are version 4 and differ", () => {
  const a = guidToString(newGuid());
  const b = guidToString(newGuid());

  assert.notEqual(a, b);
  assert.equal(a[14], "4");
});
