/**
 * A VM reads what Palisade's disk library wrote: a filesystem converted into a dynamic
 * VHDX by `palisade disk convert`, attached with `--disk path=X.vhdx,format=vhdx`. And the
 * guest can tell it runs on Palisade, with its version and its VM id.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TestVm, defaultImage, runCli } from "../harness/test-vm.js";
import { VERSION } from "../../src/util/version.js";

const scratch = mkdtempSync(join(tmpdir(), "palisade-disk-vm-"));
before(async () => {
  await defaultImage();
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

test("run: a guest mounts an ext4 filesystem that palisade disk convert wrote into a dynamic VHDX", async () => {
  const tree = join(scratch, "tree");
  mkdirSync(tree);
  writeFileSync(join(tree, "hello.txt"), "written on the host, read in the guest\n");
  const raw = join(scratch, "fs.raw");
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", tree, raw, "64M"]);
  const vhdx = join(scratch, "fs.vhdx");
  const converted = await runCli(["disk", "convert", raw, vhdx, "--format", "vhdx", "--type", "dynamic"]);
  assert.equal(converted.code, 0, converted.stderr);

  const vm = await TestVm.start({ disks: [`path=${vhdx},format=vhdx,readonly`] });
  try {
    const mounted = await vm.exec("mkdir -p /mnt && mount -o ro /dev/vda /mnt && cat /mnt/hello.txt");

    assert.equal(mounted.status, 0, mounted.stdout);
    assert.equal(mounted.stdout.trim(), "written on the host, read in the guest");
  } finally {
    await vm.dispose();
  }
});

test("run: the guest reads Palisade's version and its VM id from fw_cfg", async () => {
  const vm = await TestVm.start();
  try {
    const base = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.palisade";
    const version = await vm.exec(`cat ${base}/version/raw; echo`);
    const vmId = await vm.exec(`cat ${base}/vm-id/raw; echo`);

    assert.equal(version.stdout.trim(), VERSION);
    assert.match(vmId.stdout.trim(), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  } finally {
    await vm.dispose();
  }
});
