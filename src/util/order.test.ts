import { test } from "node:test";
import assert from "node:assert/strict";
import { byCodeUnits } from "./order.js";

test("byCodeUnits orders like the default sort and says 0 for equal strings", () => {
  const words = ["/usr/lib", "/a/b", "/usr", "Zed", "zed", "é", "/usr/lib64", ""];
  assert.deepEqual([...words].sort(byCodeUnits), [...words].sort());
  assert.equal(byCodeUnits("same", "same"), 0);
  assert.equal(byCodeUnits("a", "b"), -1);
  assert.equal(byCodeUnits("b", "a"), 1);
});
