import { test } from "node:test";
import assert from "node:assert/strict";
import { checkTransition } from "./lifecycle.js";

test("checkTransition: a stopped VM may start and is starting meanwhile", () => {
  assert.deepEqual(checkTransition("stopped", "start"), { ok: true, during: "starting" });
});

test("checkTransition: a running VM may not be deleted, and the reason says to stop it", () => {
  assert.deepEqual(checkTransition("running", "delete"), {
    ok: false,
    reason: "VM is running; stop it first",
  });
});

test("checkTransition: a VM in transition refuses a second start but accepts a kill", () => {
  assert.equal(checkTransition("starting", "start").ok, false);
  assert.equal(checkTransition("stopping", "kill").ok, true);
});

test("checkTransition: a crashed VM may be started again or deleted", () => {
  assert.equal(checkTransition("crashed", "start").ok, true);
  assert.equal(checkTransition("crashed", "delete").ok, true);
});

test("checkTransition: only a paused VM resumes and only a running VM pauses", () => {
  assert.equal(checkTransition("running", "resume").ok, false);
  assert.equal(checkTransition("paused", "pause").ok, false);
  assert.equal(checkTransition("paused", "resume").ok, true);
});
