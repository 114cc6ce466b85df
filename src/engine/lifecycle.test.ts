import assert from "node:assert/strict";
import { test } from "node:test";
import { INITIAL_LIFECYCLE, step, type LifecycleInput, type LifecyclePolicy, type LifecycleState } from "./lifecycle.js";

const POLICY: LifecyclePolicy = { onPanic: "exit", maxResets: 2, resetWindowMs: 10_000 };

function run(inputs: LifecycleInput[], policy = POLICY, times: number[] = []): { state: LifecycleState; actions: string[] } {
  let state = INITIAL_LIFECYCLE;
  const actions: string[] = [];
  inputs.forEach((input, index) => {
    const result = step(state, input, policy, times[index] ?? 0);
    state = result.next;
    actions.push(...result.actions.map((action) => (action.kind === "kill" ? "kill" : action.command)));
  });
  return { state, actions };
}

const exit = { kind: "worker-exit", exitCode: 0, signal: null, stderr: "" } as const;
const event = (name: string, data: Record<string, unknown> = {}): LifecycleInput => ({ kind: "qmp-event", event: name, data });

test("lifecycle: SHUTDOWN guest-shutdown then exit is a power-off", () => {
  const { state } = run([{ kind: "ready" }, event("SHUTDOWN", { guest: true, reason: "guest-shutdown" }), exit]);

  assert.deepEqual(state.outcome, { kind: "poweroff" });
  assert.equal(state.state, "stopped");
});

test("lifecycle: an exit code of 0 without SHUTDOWN is not a power-off (QEMU exits 0 on SIGTERM too)", () => {
  const { state } = run([{ kind: "ready" }, { kind: "worker-exit", exitCode: 0, signal: null, stderr: "terminating" }]);

  assert.equal(state.outcome?.kind, "worker-exit");
});

test("lifecycle: SIGKILL of the worker is reported with the signal", () => {
  const { state } = run([{ kind: "ready" }, { kind: "worker-exit", exitCode: null, signal: "SIGKILL", stderr: "" }]);

  assert.deepEqual(state.outcome, { kind: "worker-exit", exitCode: null, signal: "SIGKILL", stderr: "" });
});

test("lifecycle: a guest reset with --on-reboot exit ends the VM as a reset", () => {
  const { state } = run([{ kind: "ready" }, event("SHUTDOWN", { guest: true, reason: "guest-reset" }), exit]);

  assert.deepEqual(state.outcome, { kind: "guest-reset" });
});

test("lifecycle: a panic with --on-panic exit quits the worker and is reported as a panic", () => {
  const { state, actions } = run([{ kind: "ready" }, event("GUEST_PANICKED", { action: "pause" }), exit]);

  assert.deepEqual(state.outcome, { kind: "guest-panic" });
  assert.deepEqual(actions, ["quit"]);
});

test("lifecycle: a panic with --on-panic restart resets and continues the guest", () => {
  const { state, actions } = run([{ kind: "ready" }, event("GUEST_PANICKED", { action: "pause" })], { ...POLICY, onPanic: "restart" });

  assert.equal(state.outcome, null);
  assert.deepEqual(actions, ["system_reset", "cont"]);
});

test("lifecycle: more resets than allowed in the window is a reset loop", () => {
  const reset = event("RESET", { guest: true, reason: "guest-reset" });
  const { state, actions } = run([reset, reset, reset], POLICY, [0, 1000, 2000]);

  assert.deepEqual(state.outcome, { kind: "reset-loop", resets: 3, windowMs: 10_000 });
  assert.deepEqual(actions, ["quit"]);
});

test("lifecycle: resets with the guest ready in between are a user rebooting, not a loop", () => {
  const reset = event("RESET", { guest: true, reason: "guest-reset" });
  const ready: LifecycleInput = { kind: "ready" };
  const { state } = run([ready, reset, ready, reset, ready, reset, ready, reset], POLICY, [0, 100, 200, 300, 400, 500, 600, 700]);

  assert.equal(state.outcome, null);
  assert.equal(state.resetTimesMs.length, 1, "the count restarts at each deliberate reboot");
});

test("lifecycle: resets spread beyond the window are ordinary reboots", () => {
  const reset = event("RESET", { guest: true, reason: "guest-reset" });
  const { state } = run([reset, reset, reset], POLICY, [0, 20_000, 40_000]);

  assert.equal(state.outcome, null);
});

test("lifecycle: STOP queries the status; internal-error (KVM emulation failure) quits", () => {
  const { state, actions } = run([{ kind: "ready" }, event("STOP"), { kind: "status", status: "internal-error" }]);

  assert.deepEqual(state.outcome, { kind: "internal-error" });
  assert.deepEqual(actions, ["query-status", "quit"]);
});

test("lifecycle: pause and resume move between running and paused", () => {
  const paused = run([{ kind: "ready" }, event("STOP")]).state;
  const resumed = run([{ kind: "ready" }, event("STOP"), event("RESUME")]).state;

  assert.equal(paused.state, "paused");
  assert.equal(resumed.state, "running");
});

test("lifecycle: no ready marker before the boot timeout is a hang and kills the worker", () => {
  const { state, actions } = run([{ kind: "boot-timeout", timeoutMs: 60_000, waitedFor: "ready marker" }]);

  assert.deepEqual(state.outcome, { kind: "hang", timeoutMs: 60_000, waitedFor: "ready marker" });
  assert.deepEqual(actions, ["kill"]);
});

test("lifecycle: the boot timeout after readiness does nothing", () => {
  const { state } = run([{ kind: "ready" }, { kind: "boot-timeout", timeoutMs: 60_000, waitedFor: "ready marker" }]);

  assert.equal(state.outcome, null);
});

test("lifecycle: a stop Palisade asked for is reported as that stop, not a crash", () => {
  const { state } = run([
    { kind: "ready" },
    { kind: "stop-requested", how: "forced" },
    event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" }),
    exit,
  ]);

  assert.deepEqual(state.outcome, { kind: "stopped", how: "forced" });
});

test("lifecycle: a graceful stop the guest honours is graceful; one that needed quit is forced", () => {
  const honoured = run([{ kind: "ready" }, { kind: "stop-requested", how: "graceful" }, event("SHUTDOWN", { guest: true, reason: "guest-shutdown" }), exit]);
  const forced = run([{ kind: "ready" }, { kind: "stop-requested", how: "graceful" }, event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" }), exit]);

  assert.deepEqual(honoured.state.outcome, { kind: "stopped", how: "graceful" });
  assert.deepEqual(forced.state.outcome, { kind: "stopped", how: "forced" });
});
