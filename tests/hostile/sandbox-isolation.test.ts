/**
 * A compromised worker against its neighbours and the host: it cannot read or write
 * another VM's disks, run directory, sockets or memory, nor the service's data; cannot
 * write its own read-only disk; sees no other process; has no network unless its policy
 * grants user-mode networking. Two jails, A and B, each holding a random secret.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { JailWorld, skipReason, type TestJail } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
let world: JailWorld;
let a: TestJail;
let b: TestJail;
let bPid: number;
let server: ChildProcess;
let port: number;

before(async () => {
  if (skip !== false) return;
  world = await JailWorld.create();
  a = await world.jail("vm-a");
  b = await world.jail("vm-b");
  // B's worker keeps its secret in memory (read from its disk) and a socket in its run dir.
  ({ pid: bPid } = await b.start(
    `S=$(cat ${b.writableDisk}); nc -l -s 127.0.0.1 -p 7000 & nc -lk -s 0.0.0.0 -p 7001 & while :; do sleep 1; done`,
  ));
  // A host service in its own process: this one blocks in spawnSync while a jail runs.
  server = spawn(
    process.execPath,
    [
      "-e",
      'require("net").createServer((s) => s.end("host service\\n")).listen(0, "127.0.0.1", function () { console.log(this.address().port); })',
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const [line] = (await once(server.stdout ?? server, "data")) as [Buffer];
  port = Number(line.toString().trim());
});

after(async () => {
  if (skip !== false) return;
  server.kill();
  await world.dispose();
});

test("sandbox: a worker reads and writes its own disks", { skip }, () => {
  const run = a.sh(`cat ${a.readonlyDisk}; echo appended >> ${a.writableDisk} && echo wrote`);

  assert.equal(run.stdout, `ro ${a.secret}\nwrote\n`);
  assert.match(readFileSync(a.writableDisk, "utf8"), /appended/);
});

test("sandbox: a worker cannot write its read-only disk, nor change its mode", { skip }, () => {
  const run = a.sh(`echo x >> ${a.readonlyDisk}; chmod 666 ${a.readonlyDisk}; echo done`);

  assert.match(run.stderr, /Read-only file system/);
  assert.equal(readFileSync(a.readonlyDisk, "utf8"), `ro ${a.secret}\n`);
});

test("sandbox: a worker cannot change QEMU, its libraries or its firmware", { skip }, () => {
  const run = a.sh(
    "echo x >> /usr/bin/qemu-system-x86_64; echo x >> /lib/x86_64-linux-gnu/libc.so.6; touch /usr/share/qemu/new; echo done",
  );

  // Root's files (permission denied) on a read-only mount (read-only file system): two walls.
  assert.equal(run.stderr.match(/Permission denied|Read-only file system/g)?.length, 3, run.stderr);
});

test("sandbox: another VM's disks and run directory do not exist in the jail", { skip }, () => {
  const run = a.sh(
    `cat ${b.readonlyDisk} ${b.writableDisk}; ls ${b.spec.runDir}; echo x > ${b.spec.runDir}/planted`,
  );

  assert.equal(run.stdout, "");
  assert.match(run.stderr, /No such file or directory/);
  assert.doesNotMatch(run.stderr, /Permission denied/);
});

test("sandbox: the service's data directory is out of reach", { skip }, () => {
  const run = a.sh(`cat ${join(world.serviceDataDir, "palisade.sqlite")}; ls /var/lib/palisade`);

  assert.equal(run.stdout, "");
  assert.doesNotMatch(run.stdout + run.stderr, /service secret/);
});

test("sandbox: a worker sees only its own processes, not B's nor the host's", { skip }, () => {
  const run = a.sh("ls /proc | grep -E '^[0-9]+$'");

  // The shell (pid 1), ls and grep: nothing else exists in the jail's pid namespace.
  assert.ok(
    run.stdout
      .trim()
      .split("\n")
      .every((pid) => Number(pid) < 10),
    run.stdout,
  );
});

test(
  "sandbox: B's memory (/proc/PID/mem) cannot be opened from A, and B cannot be signalled",
  { skip },
  () => {
    const memory = a.probe("mem", String(bPid));
    const signal = a.sh(`kill -0 ${bPid} 2>&1; echo exit=$?`);

    assert.equal(memory, "mem: denied ENOENT");
    assert.match(signal.stdout, /exit=1/);
  },
);

/** A script fragment setting $S to `secret` without the secret appearing whole in the command line. */
function pattern(secret: string): string {
  return `H1=${secret.slice(0, 32)}; H2=${secret.slice(32)}; S="$H1$H2"`;
}

test("sandbox: B's secret is nowhere A can read (files, /proc, run dir, tmp)", { skip }, () => {
  // Everything but /dev (endless devices) and the rest of /proc (kernel state, no secrets, slow).
  const script = `${pattern(b.secret)}; for d in /*; do case $d in /dev|/proc) ;; *) grep -rsl "$S" $d;; esac; done; grep -sl "$S" /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/[0-9]*/maps; echo scanned`;

  const run = a.sh(script, 60_000);

  assert.equal(run.stdout, "scanned\n");
});

test("sandbox: A's secret is nowhere B's jail can read either", { skip }, () => {
  const run = b.sh(
    `${pattern(a.secret)}; grep -rsl "$S" /tmp /usr /lib /lib64 /proc/[0-9]*/cmdline; echo scanned`,
    60_000,
  );

  assert.equal(run.stdout, "scanned\n");
});

test(
  "sandbox: a worker without a network grant has only its own loopback: no host interface, no route out",
  { skip },
  () => {
    const run = a.sh("ip -o link | cut -d: -f2; ip route; ip -o addr | grep -v ' lo '");

    assert.equal(run.stdout.trim(), "lo");
  },
);

test("sandbox: a worker without a network grant cannot reach a host service on 127.0.0.1", { skip }, () => {
  const run = a.sh(`echo hi | timeout 5 nc 127.0.0.1 ${port}; echo exit=$?`);

  assert.doesNotMatch(run.stdout, /host service/);
  assert.match(run.stdout, /exit=[1-9]/);
});

test("sandbox: B's listening sockets are invisible from A's network namespace", { skip }, () => {
  const run = a.sh("echo hi | timeout 5 nc 127.0.0.1 7000; echo exit=$?");

  assert.match(run.stdout, /exit=[1-9]/);
});

test(
  "sandbox: with user-mode networking granted, the worker shares the host network (the documented trade-off)",
  { skip },
  async () => {
    const userNet = await world.jail("vm-usernet", { shareHostNetwork: true });

    const run = userNet.sh(`echo hi | timeout 5 nc 127.0.0.1 ${port}`);

    assert.equal(run.stdout, "host service\n");
  },
);
