import { test } from "node:test";
import assert from "node:assert/strict";
import { statusOfOutcome } from "./engine-runtime.js";

test("statusOfOutcome: poweroff and requested stops are stopped; panics, hangs and unexplained exits crashed", () => {
  assert.deepEqual(statusOfOutcome({ kind: "poweroff" }), { state: "stopped", exitReason: "guest powered off" });
  assert.equal(statusOfOutcome({ kind: "stopped", how: "graceful" }).state, "stopped");
  assert.equal(statusOfOutcome({ kind: "stopped", how: "killed" }).state, "stopped");
  assert.equal(statusOfOutcome({ kind: "guest-panic" }).state, "crashed");
  assert.equal(statusOfOutcome({ kind: "hang", timeoutMs: 1000, waitedFor: "x" }).state, "crashed");
  const unexplained = statusOfOutcome({ kind: "worker-exit", exitCode: null, signal: null, stderr: "" });
  assert.equal(unexplained.state, "crashed");
  assert.match(unexplained.exitReason ?? "", /without a shutdown event: killed or crashed/);
  assert.match(statusOfOutcome({ kind: "worker-exit", exitCode: null, signal: "SIGKILL", stderr: "" }).exitReason ?? "", /killed by SIGKILL/);
});

test("statusOfOutcome: an exit without a shutdown event is named by the jail's exit code when there is one", () => {
  const killed = statusOfOutcome({ kind: "worker-exit", exitCode: null, signal: null, stderr: "" }, 137);
  assert.deepEqual(killed, { state: "crashed", exitReason: "worker (QEMU) killed by signal SIGKILL (9)" });
  assert.equal(statusOfOutcome({ kind: "worker-exit", exitCode: null, signal: null, stderr: "" }, 0).state, "stopped");
  // A known outcome is not overridden by the code.
  assert.equal(statusOfOutcome({ kind: "poweroff" }, 137).state, "stopped");
});
