/**
 * What `prepareJail` does to the host and how cleanup undoes it: the VM's private files
 * become the worker's for its lifetime and return to their owner afterwards (also when
 * prepared twice); what a previous worker left in the run directory (a link planted for
 * root to follow) is removed; device nodes are the worker's own.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, lchownSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jailCommandArgv, jailPaths, prepareJail } from "../../src/sandbox/index.js";
import { skipReason, useJailWorld } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
const world = useJailWorld();

test(
  "prepareJail: private disks belong to the worker while it runs, and to their owner again after cleanup",
  { skip },
  async () => {
    const jail = await world().jail("owners");
    const during = [statSync(jail.readonlyDisk).uid, statSync(jail.writableDisk).uid];

    await jail.dispose();

    assert.deepEqual(during, [jail.spec.uid, jail.spec.uid]);
    assert.deepEqual([statSync(jail.readonlyDisk).uid, statSync(jail.writableDisk).uid], [0, 0]);
  },
);

test("prepareJail: preparing twice still restores the original owner", { skip }, async () => {
  const jail = await world().jail("twice");
  const again = await prepareJail(jail.spec, world().host);

  await again.cleanup();

  assert.equal(statSync(jail.writableDisk).uid, 0);
});

test(
  "prepareJail: a link a previous worker planted in its run directory is removed, not followed",
  { skip },
  async () => {
    const jail = await world().jail("planted");
    const victim = join(world().root, "victim");
    writeFileSync(victim, "root's file\n", { mode: 0o600 });
    const planted = join(jail.spec.runDir, "qmp.sock");
    symlinkSync(victim, planted);
    // As the worker would have made it: owned by its uid.
    lchownSync(planted, jail.spec.uid, jail.spec.gid);

    await prepareJail(jail.spec, world().host);

    assert.equal(existsSync(planted), false);
    assert.equal(statSync(victim).uid, 0);
  },
);

test(
  "prepareJail: /dev/kvm in the jail is a per-VM node owned by the worker, the host's stays root's",
  { skip },
  async () => {
    const jail = await world().jail("kvm-node");
    const spec = { ...jail.spec, devices: ["kvm" as const] };
    const prepared = await prepareJail(spec, world().host);

    const node = statSync(jailPaths(spec.runDir).deviceNodes.kvm);
    const argv = jailCommandArgv(
      spec,
      [
        "/usr/bin/busybox",
        "sh",
        "-c",
        "ls -ln /dev/kvm; dd if=/dev/kvm bs=1 count=0 2>/dev/null && echo opened",
      ],
      world().host,
    );
    const run = spawnSync(argv[0] ?? "", argv.slice(1), { env: {}, encoding: "utf8", timeout: 20_000 });
    await prepared.cleanup();

    assert.ok(node.isCharacterDevice());
    assert.equal(node.uid, spec.uid);
    assert.equal((node.mode & 0o777).toString(8), "600");
    assert.match(
      run.stdout,
      new RegExp(`^crw-------\\s+1\\s+${spec.uid}\\s+${spec.gid}\\s+10,\\s+232 .*/dev/kvm$`, "m"),
    );
    assert.match(run.stdout, /^opened$/m);
    assert.equal(statSync("/dev/kvm").uid, 0);
    assert.equal(existsSync(jailPaths(spec.runDir).deviceNodes.kvm), false);
  },
);

test("prepareJail: a disk kept in the run directory survives re-preparing, even still owned by the old worker", { skip }, async () => {
  const jail = await world().jail("disk-in-run");
  const disk = join(jail.spec.runDir, "disk.raw");
  writeFileSync(disk, "guest data\n");
  // A crash left it owned by the worker, with no owner record.
  lchownSync(disk, jail.spec.uid, jail.spec.gid);

  const prepared = await prepareJail({ ...jail.spec, binds: [...jail.spec.binds, { hostPath: disk, readonly: false }] }, world().host);
  await prepared.cleanup();

  assert.equal(existsSync(disk), true);
});
