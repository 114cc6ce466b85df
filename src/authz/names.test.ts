import { test } from "node:test";
import assert from "node:assert/strict";
import { nameProblem } from "./names.js";

test("nameProblem: an ordinary name is accepted", () => {
  assert.equal(nameProblem("web-1.prod_A"), null);
});

test("nameProblem: path separators, control characters, dot names and long names are refused", () => {
  assert.match(nameProblem("a/b") ?? "", /path separator/);
  assert.match(nameProblem("a\\b") ?? "", /path separator/);
  assert.match(nameProblem("a\u0000b") ?? "", /control/);
  assert.match(nameProblem("a\u001bb") ?? "", /control/);
  assert.match(nameProblem("..") ?? "", /\.\./);
  assert.match(nameProblem("x".repeat(65)) ?? "", /at most 64/);
  assert.equal(nameProblem("x".repeat(64)), null);
});
