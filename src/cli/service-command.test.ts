import { test } from "node:test";
import assert from "node:assert/strict";
import { parseRestartFlag } from "./service-command.js";

test("parseRestartFlag: never, on-failure and on-failure:MAX, with an optional backoff", () => {
  assert.deepEqual(parseRestartFlag("never"), { mode: "never" });
  assert.deepEqual(parseRestartFlag("on-failure"), { mode: "on-failure" });
  assert.deepEqual(parseRestartFlag("on-failure:5", "2.5"), { mode: "on-failure", maxRetries: 5, backoffSeconds: 2.5 });
});

test("parseRestartFlag: anything else is a flag error naming the flag", () => {
  for (const bad of ["always", "never:3", "on-failure:", "on-failure:-1", "on-failure:1000"])
    assert.throws(() => parseRestartFlag(bad), /--restart/);
  assert.throws(() => parseRestartFlag("on-failure", "-1"), /--restart-backoff/);
  assert.throws(() => parseRestartFlag("on-failure", "x"), /--restart-backoff/);
});
