/**
 * A real guest (Palisade's default image: Debian's cloud kernel + busybox initramfs) boots
 * to its shell through `palisade run` with the locked-down policy on q35: its QEMU runs in
 * the worker's jail (both seccomp filters), the guest sees the policy's CPU (no vmx, svm or
 * la57) and Palisade's SMBIOS vendor, and it powers off with exit code 0. Proves the jail
 * holds everything a boot needs (firmware, TCG module, libraries), not just `-S`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { describeSandbox } from "../../src/sandbox/index.js";
import { runGuest, usePrivatePlacement, workerOf } from "./guest-harness.js";
import { skipReason } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
usePrivatePlacement();

test(
  "sandbox: a guest boots to its shell inside the jail, sees no vmx/svm/la57, and powers off with exit code 0",
  { skip },
  async () => {
    const vm = await runGuest(null, { memory: "256M", extraArgs: ["--machine", "q35", "--policy", "locked-down"] });
    try {
      const worker = await workerOf(vm);
      const sandbox = describeSandbox(worker.qemuPid);
      const seen = await vm.exec(
        "echo VMX=$(grep -cw vmx /proc/cpuinfo) SVM=$(grep -cw svm /proc/cpuinfo) LA57=$(grep -cw la57 /proc/cpuinfo) VENDOR=$(cat /sys/class/dmi/id/sys_vendor)",
      );
      const exit = await vm.powerOff();

      assert.match(vm.stderr, /worker sandbox: uid \d+/);
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
