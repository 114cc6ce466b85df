import { test } from "node:test";
import assert from "node:assert/strict";
import { serverTiming } from "./server.js";

test("serverTiming: the handler's total first, then each measured part, in ms with two decimals", () => {
  const header = serverTiming(performance.now() - 5, new Map([["runtime", 3.14159]]));
  assert.match(header, /^total;dur=\d+\.\d\d, runtime;dur=3\.14$/);
  assert.ok(Number(/total;dur=([\d.]+)/.exec(header)?.[1]) >= 5);
});
