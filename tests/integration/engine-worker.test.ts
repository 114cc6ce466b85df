/**
 * The engine's Worker API, as the management service uses it: a detached worker, found
 * again through its run directory, paused, resumed and stopped through the ACPI power
 * button right after the guest is ready.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Worker, parseVmSpec, probeHost, startVm } from "../../src/engine/index.js";
import { BOOT_TIMEOUT_MS, READY, defaultImage } from "../harness/test-vm.js";

const runRoot = mkdtempSync(join(tmpdir(), "palisade-engine-test-"));
after(() => {
  rmSync(runRoot, { recursive: true, force: true });
});

test("engine: a detached worker is re-attached through its run directory, paused, resumed and stopped gracefully at once", async () => {
  const image = await defaultImage();
  const spec = parseVmSpec({
    name: `eng-${process.pid}`,
    uuid: randomUUID(),
    kernel: image.kernelPath,
    initrd: image.initrdPath,
    append: "quiet",
    memoryMiB: 256,
    vcpus: 1,
    readyMarker: READY,
    bootTimeoutMs: BOOT_TIMEOUT_MS,
    console: { kind: "none" },
  });
  const launched = await startVm(spec, probeHost(), { runRoot, detached: true });
  try {
    launched.on("event", (event) => {
      if (process.env.PALISADE_TEST_DEBUG !== undefined) console.error(event);
    });
    await launched.holdConsole();
    await new Promise<void>((resolve) => {
      launched.on("event", (event) => {
        if (event.event === "ready") resolve();
      });
    });
    // QEMU serves one QMP client: the first holder lets go, another finds the worker by its run directory.
    launched.release();
    const again = await Worker.attach(launched.record.paths.runDir);
    await again.pause();
    await waitFor(() => again.state === "paused");
    await again.resume();
    await waitFor(() => again.state === "running");
    const outcome = await again.stop(20_000);

    assert.equal(again.record.uuid, spec.uuid);
    // The guest honoured the power button pressed right at ready: not forced by a quit.
    assert.deepEqual(outcome, { kind: "stopped", how: "graceful" });
  } finally {
    for (const pid of [launched.record.qemuPid, launched.record.pid]) {
      try {
        if (pid !== undefined) process.kill(pid, "SIGKILL");
      } catch {
        // Already gone: the normal case.
      }
    }
  }
});

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met within 10 s");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
