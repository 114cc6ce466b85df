import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_BACKOFF_MS, STABLE_RUN_MS, autostartPlan, decideRestart } from "./restart-policy.js";

const fresh = { attempts: 0, lastStartMs: null };

test("decideRestart: only a crash restarts; a poweroff or a requested stop never does", () => {
  const policy = { mode: "on-failure" } as const;
  assert.deepEqual(decideRestart(policy, "crashed", fresh, 0), {
    restart: true,
    attempt: 1,
    of: 3,
    delayMs: 1000,
  });
  assert.equal(decideRestart(policy, "stopped", fresh, 0).restart, false);
  assert.equal(decideRestart({ mode: "never" }, "crashed", fresh, 0).restart, false);
  assert.equal(decideRestart(undefined, "crashed", fresh, 0).restart, false);
});

test("decideRestart: the backoff doubles up to its cap and the series gives up after maxRetries", () => {
  const policy = { mode: "on-failure", maxRetries: 12, backoffSeconds: 2 } as const;
  const delays = [0, 1, 2, 3].map((attempts) =>
    decideRestart(policy, "crashed", { attempts, lastStartMs: 0 }, 1000),
  );
  assert.deepEqual(
    delays.map((d) => (d.restart ? d.delayMs : -1)),
    [2000, 4000, 8000, 16000],
  );
  const late = decideRestart(policy, "crashed", { attempts: 11, lastStartMs: 0 }, 1000);
  assert.equal(late.restart && late.delayMs, MAX_BACKOFF_MS);
  const over = decideRestart(
    { mode: "on-failure", maxRetries: 2 },
    "crashed",
    { attempts: 2, lastStartMs: 0 },
    1000,
  );
  assert.deepEqual(over, { restart: false, reason: "restart policy gave up after 2 restarts", gaveUp: true });
  assert.equal(decideRestart({ mode: "on-failure", maxRetries: 0 }, "crashed", fresh, 0).restart, false);
});

test("decideRestart: a crash after a long stable run starts a new series", () => {
  const policy = { mode: "on-failure", maxRetries: 2 } as const;
  const again = decideRestart(policy, "crashed", { attempts: 2, lastStartMs: 0 }, STABLE_RUN_MS);
  assert.deepEqual(again, { restart: true, attempt: 1, of: 2, delayMs: 1000 });
});

test("autostartPlan: autostart VMs that are not running, by delay then name, pending restarts skipped", () => {
  const plan = autostartPlan(
    [
      { name: "b", autostart: true, state: "stopped", autostartDelaySeconds: 5 },
      { name: "a", autostart: true, state: "crashed" },
      { name: "c", autostart: true, state: "running" },
      { name: "d", autostart: false, state: "stopped" },
      { name: "e", autostart: true, state: "stopped" },
      { name: "f", autostart: true, state: "crashed" },
    ],
    new Set(["f"]),
  );
  assert.deepEqual(plan, [
    { name: "a", delayMs: 0 },
    { name: "e", delayMs: 0 },
    { name: "b", delayMs: 5000 },
  ]);
});
