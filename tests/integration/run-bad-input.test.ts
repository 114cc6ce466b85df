/**
 * Every bad input to `palisade run` gets a one-line error naming what is wrong and the
 * configuration exit code (2), or 3 when the host lacks something, before any guest runs.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { defaultImage, runCli } from "../harness/test-vm.js";
import { probeHost, kvmUnavailableReason } from "../../src/engine/index.js";

const scratch = mkdtempSync(join(tmpdir(), "palisade-bad-input-"));
let kernel = "";
let initrd = "";
before(async () => {
  ({ kernelPath: kernel, initrdPath: initrd } = await defaultImage());
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

async function expectError(args: string[], code: number, message: RegExp, env?: Record<string, string>): Promise<void> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const result = await runCli(["run", "--kernel", kernel, "--initrd", initrd, "--run-dir", join(scratch, "run"), ...args]);
    assert.equal(result.code, code, `exit code for ${args.join(" ")}: stderr ${result.stderr}`);
    assert.match(result.stderr, message);
  } finally {
    process.env = saved;
  }
}

test("bad input: QEMU not installed says how to install it", async () => {
  await expectError([], 3, /QEMU \(qemu-system-x86_64\) is not installed; install it with: apt-get install qemu-system-x86/, {
    PALISADE_QEMU: "/nonexistent/qemu",
  });
});

test("bad input: --accel kvm where the host cannot give it says why", async (t) => {
  const reason = kvmUnavailableReason(probeHost());
  if (reason === null) {
    t.skip("this host has working hardware KVM, so --accel kvm is available");
    return;
  }
  await expectError(["--accel", "kvm"], 3, /--accel kvm is unavailable: /);
});

test("bad input: kernel missing, a directory, or not a bzImage", async () => {
  const notKernel = join(scratch, "not-a-kernel");
  writeFileSync(notKernel, Buffer.alloc(4096, 7));
  const dir = join(scratch, "dir");
  mkdirSync(dir);

  await expectError(["--kernel", join(scratch, "missing")], 2, /Kernel .*missing does not exist/);
  await expectError(["--kernel", notKernel], 2, /is not a bzImage: boot flag at 0x1fe is 0x707/);
  await expectError(["--kernel", dir], 2, /Kernel .*dir cannot be read/);
});

test("bad input: initrd missing", async () => {
  await expectError(["--initrd", join(scratch, "no-initrd")], 2, /Initrd .*no-initrd does not exist/);
});

test("bad input: --memory unparsable, under 32 MiB, or more than the host has", async () => {
  await expectError(["--memory", "lots"], 2, /--memory: "lots" is not a size/);
  await expectError(["--memory", "16M"], 2, /memoryMiB: memory must be at least 32 MiB/);
  await expectError(["--memory", "900G"], 2, /--memory 921600 MiB is more than the host can give/);
});

test("bad input: --cpus 0 or more than allowed", async () => {
  await expectError(["--cpus", "0"], 2, /vcpus: cpus must be at least 1/);
  await expectError(["--cpus", "300"], 2, /vcpus: cpus must be at most 255/);
});

test("bad input: disk missing, unknown format, malformed --disk and --net", async () => {
  await expectError(["--disk", `path=${join(scratch, "nodisk.raw")}`], 2, /Disk .*nodisk.raw does not exist/);
  await expectError(["--disk", "path=/x.img,format=vmdk"], 2, /--disk: format "vmdk" is unknown/);
  await expectError(["--disk", "file=/x.img"], 2, /--disk: unknown key "file"/);
  await expectError(["--net", "tap=tap0"], 2, /--net: unknown network "tap"/);
  await expectError(["--net", "user,hostfwd=nonsense"], 2, /hostfwd must look like/);
});

test("bad input: a console socket path already taken", async () => {
  const taken = join(scratch, "taken.sock");
  writeFileSync(taken, "");

  await expectError(["--console", `socket:${taken}`], 2, /Console socket path .*taken.sock is already taken/);
});

test("bad input: unknown flags are refused", async () => {
  await expectError(["--frobnicate"], 2, /unknown option '--frobnicate'/);
});
