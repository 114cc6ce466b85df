/**
 * A real guest (Palisade's default image: Debian's cloud kernel + busybox initramfs) boots
 * to its shell through `palisade run` with the locked-down policy on q35: its QEMU runs in
 * the worker's jail (both seccomp filters), the guest sees the policy's CPU (no vmx, svm or
 * la57) and Palisade's SMBIOS vendor, and it powers off with exit code 0. Proves the jail
 * holds everything a boot needs (firmware, TCG module, libraries), not just `-S`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { CLI } from "../harness/test-vm.js";
import { describeSandbox } from "../../src/sandbox/index.js";
import { runGuest, usePrivatePlacement, workerOf } from "./guest-harness.js";
import { skipReason } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
usePrivatePlacement();

test(
  "sandbox: a guest boots to its shell inside the jail, sees no vmx/svm/la57, and powers off with exit code 0",
  { skip },
  async () => {
    const vm = await runGuest(null, { memory: "256M", extraArgs: ["--machine", "q35", "--policy", "locked-down", "--print-sandbox"] });
    try {
      const worker = await workerOf(vm);
      const sandbox = describeSandbox(worker.qemuPid);
      const seen = await vm.exec(
        "echo VMX=$(grep -cw vmx /proc/cpuinfo) SVM=$(grep -cw svm /proc/cpuinfo) LA57=$(grep -cw la57 /proc/cpuinfo) VENDOR=$(cat /sys/class/dmi/id/sys_vendor)",
      );
      const exit = await vm.powerOff();

      assert.match(vm.stderr, /worker sandbox: uid \d+/);
      // --print-sandbox describes the jailed QEMU (not bwrap above it): its uid, no capabilities, both filters, own namespaces, the policy's limits.
      assert.match(vm.stderr, new RegExp(`pid ${String(worker.qemuPid)}: uid ${String(worker.uid)}/`));
      assert.match(vm.stderr, /capabilities: effective 0x0, permitted 0x0, bounding 0x0/);
      assert.match(vm.stderr, /no_new_privs 1, seccomp mode 2 \([2-9] filters\)/);
      assert.match(vm.stderr, /own namespaces: [^;]*\bmnt\b[^;]*; shared/);
      assert.match(vm.stderr, /own namespaces: [^;]*\bpid\b[^;]*; shared/);
      assert.match(vm.stderr, /own namespaces: [^;]*\bnet\b[^;]*; shared/);
      assert.match(vm.stderr, /cgroup limits: memory \d+ bytes, pids 96,/);
      assert.match(vm.stderr, /rlimits: open files 1024, processes 96, core 0/);
      assert.notEqual(worker.uid, 0);
      assert.equal(sandbox.noNewPrivs, true);
      assert.equal(sandbox.capabilities.permitted, 0n);
      assert.ok(sandbox.seccompFilters >= 2, `${String(sandbox.seccompFilters)} seccomp filters: Palisade's and QEMU's -sandbox expected`);
      assert.match(seen.stdout, /VMX=0 SVM=0 LA57=0 VENDOR=Palisade/);
      assert.deepEqual(exit, { code: 0, signal: null });
    } finally {
      await vm.dispose();
    }
  },
);

test("run --print-policy: the effective locked-down policy and what it compiles to; a bad policy is refused naming its field", { skip }, () => {
  const run = (...args: string[]): ReturnType<typeof spawnSync> =>
    spawnSync(process.execPath, [CLI, "run", "--kernel", "/dev/null", "--print-policy", ...args], { encoding: "utf8", timeout: 30_000 });

  const shown = run("--policy", "locked-down");
  const refused = run("--policy", "default", "--cpus", "64");

  assert.equal(shown.status, 0, String(shown.stderr));
  const printed = JSON.parse(String(shown.stdout)) as { policy: { trustLevel: string; network: { userNet: boolean } }; compiled: { cpuArg: string; devices: string[] } };
  assert.equal(printed.policy.trustLevel, "untrusted");
  assert.equal(printed.policy.network.userNet, false);
  assert.match(printed.compiled.cpuArg, /-vmx,-svm/);
  assert.deepEqual(printed.compiled.devices, ["console", "disk", "nic", "entropy", "pvpanic"]);
  assert.equal(refused.status, 2);
  assert.match(String(refused.stderr), /limits\.maxVcpus/);
});
