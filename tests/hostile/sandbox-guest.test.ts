/**
 * A real guest (Palisade's default image: Debian's cloud kernel + busybox initramfs) boots
 * to its shell with QEMU inside the worker's jail, under both seccomp filters and the
 * locked-down policy's CPU, sees what the policy says, and powers off cleanly. Proves the
 * jail holds everything a boot needs (firmware, TCG module, libraries), not just `-S`.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { ensureDefaultImage, READY_MARKER, type BuiltImage } from "../../src/image/index.js";
import { compilePolicy, resolvePolicy } from "../../src/policy/index.js";
import { QEMU_SECCOMP_ARGS, jailArgv } from "../../src/sandbox/index.js";
import { JailWorld, skipReason } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
let world: JailWorld;
let image: BuiltImage;

before(async () => {
  if (skip !== false) return;
  world = await JailWorld.create();
  image = await ensureDefaultImage();
});

after(async () => {
  if (skip === false) await world.dispose();
});

test(
  "sandbox: a guest boots to its shell inside the jail, sees no vmx/svm/la57, and powers off with exit code 0",
  { skip },
  async () => {
    const jail = await world.jail("guest", {
      limits: { memoryBytes: 448n * 1024n * 1024n, pids: 64 },
      extraBinds: [
        { hostPath: image.kernelPath, readonly: true },
        { hostPath: image.initrdPath, readonly: true },
      ],
    });
    const cpu = compilePolicy(resolvePolicy("locked-down"), { accel: "tcg", hostCpuVendor: "other" }).cpuArg;
    // q35: legacy timers, so no TSC calibration hints are needed (host-notes.md).
    const qemuArgs = [
      "-M",
      "q35",
      "-accel",
      "tcg",
      "-cpu",
      cpu,
      "-m",
      "256",
      "-smp",
      "1",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-serial",
      "stdio",
      "-kernel",
      image.kernelPath,
      "-initrd",
      image.initrdPath,
      "-append",
      "console=ttyS0 quiet panic=-1 palisade.net=none",
      "-no-reboot",
      "-smbios",
      "type=1,manufacturer=Palisade,product=Palisade VM,serial=guest",
      ...QEMU_SECCOMP_ARGS,
    ];
    const argv = jailArgv(jail.spec, qemuArgs, world.host);
    const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    let asked = false;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      if (!asked && output.includes(READY_MARKER)) {
        asked = true;
        child.stdin.write(
          "echo VMX=$(grep -cw vmx /proc/cpuinfo) SVM=$(grep -cw svm /proc/cpuinfo) LA57=$(grep -cw la57 /proc/cpuinfo) VENDOR=$(cat /sys/class/dmi/id/sys_vendor); poweroff\n",
        );
      }
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    const exitCode = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    clearTimeout(timer);
    const status = await jail.waitStatus((s) => s.exitCode !== undefined, 10_000);

    assert.ok(output.includes(READY_MARKER), `no ready marker; console:\n${output.slice(-2000)}`);
    assert.match(output, /VMX=0 SVM=0 LA57=0 VENDOR=Palisade/);
    assert.equal(exitCode, 0);
    assert.equal(status.exitCode, 0);
  },
);
