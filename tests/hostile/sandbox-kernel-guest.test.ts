/**
 * A hostile guest kernel: palisade_hostile.ko (tests/hostile/guest-module, built against
 * Debian's headers for the guest's own kernel) misbehaves in ring 0, and Palisade says what
 * happened and keeps everything else running:
 * - a triple fault (zero-limit IDT, then an exception) is a guest reset: with
 *   `--on-reboot exit`, `palisade run` ends with exit code 5 and says so;
 * - a guest that triple-faults at every boot is a reset loop: stopped, reported, exit 5;
 * - every vCPU spinning with interrupts off: the worker stays inside its CPU limit (its
 *   cgroup throttles it), a neighbour's heartbeat keeps ticking, the graceful stop (ACPI
 *   power button, which the guest cannot hear) runs out and the forced stop ends the VM.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { PRESETS } from "../../src/policy/index.js";
import { EngineGuest, HEARTBEAT, runGuest, ticks, v1CgroupDir, waitUntil } from "./guest-harness.js";
import { TRIPLE_FAULT_INIT, useHostileImage } from "./hostile-image.js";
import { skipReason } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
const image = useHostileImage();

const TRIPLE = "quiet palisade_hostile.action=triple";
const tripleFaults = (output: string): number => output.match(/palisade_hostile: triple fault now/g)?.length ?? 0;

test("hostile kernel: a triple fault is a guest reset; with --on-reboot exit, palisade run exits 5 and says so", { skip }, async () => {
  const vm = await runGuest(image(), { append: TRIPLE, memory: "192M", waitReady: false, extraArgs: ["--on-reboot", "exit"] });
  try {
    const exit = await vm.waitExit(120_000);

    assert.equal(tripleFaults(vm.output), 1, vm.output.slice(-1500));
    assert.deepEqual(exit, { code: 5, signal: null }, vm.stderr);
    assert.match(vm.stderr, /guest reset \(--on-reboot exit\)/);
  } finally {
    await vm.dispose();
  }
});

test("hostile kernel: a guest that triple-faults at every boot is stopped as a reset loop (exit 5, reported)", { skip }, async (t) => {
  // PID 1 loads the module at every boot: a reset as soon as the kernel has booted.
  const vm = await runGuest(image(), { append: `quiet rdinit=${TRIPLE_FAULT_INIT}`, memory: "192M", waitReady: false });
  try {
    const exit = await vm.waitExit(300_000);
    t.diagnostic(`${String(tripleFaults(vm.output))} triple faults; ${vm.stderr.trim().split("\n").pop() ?? ""}`);

    assert.deepEqual(exit, { code: 5, signal: null }, vm.stderr);
    assert.match(vm.stderr, /guest reset 6 times within 60 s \(triple fault or reset loop\); stopped/);
    assert.ok(tripleFaults(vm.output) >= 6, `${String(tripleFaults(vm.output))} triple faults on the console`);
  } finally {
    await vm.dispose();
  }
});

/** CPU seconds `pid` (all its threads) has used. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${String(pid)}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const throttled = (cgroup: string): number => Number(/^nr_throttled (\d+)$/m.exec(readFileSync(`${cgroup}/cpu.stat`, "utf8"))?.[1]);

test(
  "hostile kernel: every vCPU spinning with interrupts off stays inside the worker's CPU limit, its neighbour keeps ticking, and the forced stop ends it",
  { skip },
  async (t) => {
    // Half a host CPU for a 2-vCPU guest: the limit, not the guest, decides what it gets.
    const policy = { ...structuredClone(PRESETS.default), limits: { ...PRESETS.default.limits, cpuPercent: 50 } };
    const [a, b] = await Promise.all([
      EngineGuest.start(image(), { memoryMiB: 192, vcpus: 2, policy }),
      runGuest(image(), { memory: "192M" }),
    ]);
    try {
      b.send(HEARTBEAT);
      await waitUntil(() => ticks(b.output) >= 1, 30_000, "a heartbeat");
      const worker = await a.identity();
      const cgroup = v1CgroupDir(worker.qemuPid, "cpu");

      a.send("insmod /root/palisade_hostile.ko action=spin\n");
      await waitUntil(() => a.output.includes("spinning on all 2 vCPUs"), 60_000, "the spin", () => a.output.slice(-800));
      const wallStart = Date.now();
      const cpuStart = cpuSeconds(worker.qemuPid);
      const throttledStart = throttled(cgroup);
      const ticksStart = ticks(b.output);
      await waitUntil(() => ticks(b.output) >= ticksStart + 3, 60_000, "three heartbeats of the neighbour");
      const wall = (Date.now() - wallStart) / 1000;
      const used = cpuSeconds(worker.qemuPid) - cpuStart;
      const throttledBy = throttled(cgroup) - throttledStart;

      const quota = readFileSync(`${cgroup}/cpu.cfs_quota_us`, "utf8").trim();
      const stopStarted = Date.now();
      const outcome = await a.worker.stop(3000);
      const stopSeconds = (Date.now() - stopStarted) / 1000;
      t.diagnostic(
        `spinning guest used ${used.toFixed(2)} CPU s in ${wall.toFixed(2)} s (limit 0.5 CPU), throttled ${String(throttledBy)} periods; neighbour ticked ${String(ticks(b.output) - ticksStart)} times; stop took ${stopSeconds.toFixed(1)} s: ${JSON.stringify(outcome)}`,
      );

      assert.equal(quota, "50000");
      assert.ok(throttledBy > 0, "the spinning worker was never throttled");
      // The CFS quota is enforced per 100 ms period: at most half a CPU, plus a period's slack.
      assert.ok(used <= wall * 0.5 + 0.2, `${used.toFixed(2)} CPU s in ${wall.toFixed(2)} s is beyond half a CPU`);
      assert.ok(ticks(b.output) >= ticksStart + 3);
      // The guest cannot hear the power button with interrupts off: the stop had to be forced.
      assert.deepEqual(outcome, { kind: "stopped", how: "forced" });
      assert.throws(() => process.kill(worker.qemuPid, 0), "the spinning QEMU still runs");
      await waitUntil(() => !existsSync(cgroup), 10_000, "the worker's cgroup removed");
      assert.deepEqual(await b.powerOff(), { code: 0, signal: null });
    } finally {
      await a.dispose();
      await b.dispose();
    }
  },
);
