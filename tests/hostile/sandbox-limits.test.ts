/**
 * A compromised worker against its resource limits: it cannot run more tasks than its
 * pids limit nor use more memory than its limit (the cgroup kills it), and its /tmp is a
 * small tmpfs charged to it. Also: its cgroups are removed when the jail is cleaned up.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { cgroupDirs } from "../../src/sandbox/index.js";
import { skipReason, useJailWorld } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
const world = useJailWorld();

test("sandbox: a fork bomb stops at the worker's pids limit", { skip }, async () => {
  const jail = await world().jail("forks", { limits: { pids: 24 } });

  // A subshell starts 100 sleepers and dies at the first failed fork; the jail's pid 1 then
  // counts the tasks with builtins only (a fork would fail at the limit).
  const run = jail.sh(
    "(i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n",
  );

  const tasks = Number(run.stdout.trim());
  assert.ok(tasks <= 24, `${tasks} tasks ran under a limit of 24`);
  assert.ok(tasks >= 20, `only ${tasks} tasks ran: the limit is not what stopped them`);
});

test(
  "sandbox: a worker that allocates beyond its memory limit is killed, not the host",
  { skip },
  async () => {
    // 96 MiB limit; busybox dd allocates its block size (256 MiB) and fills it from /dev/zero.
    const jail = await world().jail("memory", { limits: { memoryBytes: 96n * 1024n * 1024n } });

    const run = jail.sh("dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null; echo dd-exit=$?");

    assert.match(run.stdout, /dd-exit=137/);
  },
);

test("sandbox: memory within the limit is fine", { skip }, async () => {
  const jail = await world().jail("memory-ok", { limits: { memoryBytes: 96n * 1024n * 1024n } });

  const run = jail.sh("dd if=/dev/zero of=/dev/null bs=16M count=2 2>/dev/null; echo dd-exit=$?");

  assert.equal(run.stdout, "dd-exit=0\n");
});

test("sandbox: the jail's /tmp is a 16 MiB tmpfs, not the host's /tmp", { skip }, async () => {
  const jail = await world().jail("tmp");

  const run = jail.sh("dd if=/dev/zero of=/tmp/fill bs=1M count=32 2>&1; ls /tmp");

  assert.match(run.stdout, /No space left on device/);
  // Only the file it wrote and the directories holding its own binds: none of the host's /tmp.
  assert.deepEqual(run.stdout.trim().split("\n").slice(-2), ["fill", basename(world().root)]);
});

test("sandbox: cleanup kills what is left of a worker and removes its cgroups", { skip }, async () => {
  const jail = await world().jail("cleanup");
  const { pid } = await jail.start("sleep 300 & sleep 300 & wait");
  const dirs = cgroupDirs(jail.spec, world().host);
  assert.ok(dirs.length > 0 && dirs.every((dir) => existsSync(dir)));

  await jail.dispose();

  assert.equal(
    dirs.some((dir) => existsSync(dir)),
    false,
  );
  // bwrap, outside the jail, reaps the killed worker a moment later.
  const deadline = Date.now() + 5000;
  while (existsSync(`/proc/${pid}`) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(existsSync(`/proc/${pid}`), false);
});
