/**
 * A compromised worker's identity: its own uid, no capabilities, no_new_privs, a seccomp
 * filter, its own namespaces, its cgroups and rlimits, only the descriptors it was given;
 * and it cannot gain privileges (setuid binaries, user namespaces, ptrace, mount).
 * Each test runs a shell or the static probe with exactly the worker's jail.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, chmodSync, chownSync, mkdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import {
  describeSandbox,
  jailCommandArgv,
  jailPaths,
  prepareJail,
  sandboxGaps,
  type SandboxHostFacts,
} from "../../src/sandbox/index.js";
import { JailWorld, skipReason, type TestJail } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
let world: JailWorld;
let jail: TestJail;

before(async () => {
  if (skip !== false) return;
  world = await JailWorld.create();
  // A setuid-root copy of the probe, bound in: what an attacker would hope to find.
  const setuidProbe = join(world.root, "setuid-probe");
  copyFileSync(world.probe, setuidProbe);
  chownSync(setuidProbe, 0, 0);
  chmodSync(setuidProbe, 0o4755);
  jail = await world.jail("identity", { extraBinds: [{ hostPath: setuidProbe, readonly: true }] });
});

after(async () => {
  if (skip === false) await world.dispose();
});

test("sandbox: the worker runs as its own uid and gid, with no supplementary groups", { skip }, () => {
  const run = jail.sh("id -u; id -g; id -G");

  assert.deepEqual(run.stdout.trim().split("\n"), [
    String(jail.spec.uid),
    String(jail.spec.gid),
    String(jail.spec.gid),
  ]);
});

test(
  "sandbox: the worker has no capabilities in any set, no_new_privs, and a seccomp filter",
  { skip },
  () => {
    const status = jail.sh("cat /proc/self/status").stdout;

    for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
      assert.match(status, new RegExp(`^${set}:\\s+0000000000000000$`, "m"), set);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    assert.match(status, /^Seccomp:\s+2$/m);
  },
);

test("sandbox: every namespace but user and time is the worker's own", { skip }, () => {
  const kinds = ["mnt", "pid", "net", "ipc", "uts", "cgroup"];

  const inside = jail
    .sh(kinds.map((kind) => `readlink /proc/self/ns/${kind}`).join("; "))
    .stdout.trim()
    .split("\n");

  assert.equal(inside.length, kinds.length);
  kinds.forEach((kind, index) => {
    assert.notEqual(inside[index], readlinkSync(`/proc/self/ns/${kind}`), kind);
  });
});

test("sandbox: the environment is empty and only stdin, stdout and stderr are open", { skip }, () => {
  // busybox's own `ls` holds one more descriptor on the directory it lists.
  const run = jail.run(["/usr/bin/busybox", "sh", "-c", "env; echo --; ls /proc/self/fd"]);

  const [environment, fds] = run.stdout.split("--\n");
  // busybox sh sets PWD, SHLVL and a default PATH itself; nothing came from outside.
  assert.deepEqual(
    environment?.split("\n").filter((line) => line !== "" && !/^(PWD|SHLVL|PATH)=/.test(line)),
    [],
  );
  assert.deepEqual(fds?.trim().split("\n"), ["0", "1", "2", "3"]);
});

test(
  "sandbox: the root holds no /etc, no /home, no host binaries beyond what the worker needs",
  { skip },
  () => {
    const run = jail.sh("ls /; ls /etc /home /root /var/lib/palisade /usr/sbin 2>&1");

    assert.match(run.stdout, /^dev$/m);
    assert.doesNotMatch(run.stdout, /^(etc|home|root|var|sbin|boot|srv)$/m);
    assert.match(run.stdout, /\/etc: No such file or directory/);
  },
);

test(
  "sandbox: the worker's rlimits: open files from the policy, processes of its uid, no core dumps",
  { skip },
  () => {
    const run = jail.sh("ulimit -n; ulimit -u; ulimit -c");

    assert.deepEqual(run.stdout.trim().split("\n"), [
      String(jail.spec.limits.openFiles),
      String(jail.spec.limits.pids),
      "0",
    ]);
  },
);

test("sandbox: a setuid-root binary inside the jail does not raise privileges", { skip }, () => {
  const output = jail.run([join(world.root, "setuid-probe"), "setuid"]).stdout;

  assert.match(output, new RegExp(`setuid-exec: euid=${jail.spec.uid}`));
  assert.match(output, /setuid: denied EPERM/);
});

test(
  "sandbox: the worker cannot create a user namespace (unshare -U, clone with CLONE_NEWUSER)",
  { skip },
  () => {
    assert.equal(jail.probe("userns"), "userns: denied EPERM");
    assert.equal(jail.probe("clone-userns"), "clone-userns: denied EPERM");
    assert.match(jail.sh("unshare -U -r id 2>&1; echo exit=$?").stdout, /exit=[1-9]/);
  },
);

test("sandbox: the worker cannot create a network namespace or mount anything", { skip }, () => {
  assert.equal(jail.probe("netns"), "netns: denied EPERM");
  assert.equal(jail.probe("mount"), "mount: denied EPERM");
});

test("sandbox: the worker cannot ptrace, not even a process of its own uid in its own jail", { skip }, () => {
  // pid 1 of the jail is the worker itself (bwrap --as-pid-1): the shell, here.
  assert.equal(jail.sh(`${world.probe} ptrace 1`).stdout.trim(), "ptrace: denied EPERM");
});

test("sandbox: the worker cannot type into the terminal it was started from (TIOCSTI)", { skip }, () => {
  assert.match(jail.probe("tiocsti"), /^tiocsti: denied (EPERM|ENOTTY)$/);
});

test(
  "sandbox: describeSandbox() of a running worker shows its uid, no caps, seccomp, namespaces and cgroup limits",
  { skip },
  async () => {
    const { pid } = await jail.start("while :; do sleep 1; done");

    const description = describeSandbox(pid);

    assert.deepEqual(description.uid, [jail.spec.uid, jail.spec.uid, jail.spec.uid, jail.spec.uid]);
    assert.equal(description.capabilities.effective, 0n);
    assert.equal(description.capabilities.bounding, 0n);
    assert.equal(description.noNewPrivs, true);
    assert.equal(description.seccompMode, 2);
    assert.deepEqual(
      Object.entries(description.namespaces)
        .filter(([, ns]) => ns.own)
        .map(([kind]) => kind)
        .sort(),
      ["cgroup", "ipc", "mnt", "net", "pid", "uts"],
    );
    assert.equal(description.cgroupLimits.memoryBytes, jail.spec.limits.memoryBytes);
    assert.equal(description.cgroupLimits.pids, jail.spec.limits.pids);
    assert.equal(description.cgroupLimits.cpuQuotaPercent, jail.spec.limits.cpuPercent);
    assert.equal(description.rlimits.coreBytes, 0);
  },
);

test(
  "sandbox: not root, the jail still gives namespaces, no capabilities, no_new_privs and the seccomp filter, and says what it lacks",
  { skip },
  async () => {
    // The same host seen by an unprivileged user (nobody): bwrap in a user namespace, no uid switch, no cgroups.
    const nobody = 65534;
    const host: SandboxHostFacts = { ...world.host, root: false, cgroups: { version: "none" } };
    const runDir = join(world.root, "unprivileged", "run");
    mkdirSync(runDir, { recursive: true });
    chownSync(runDir, nobody, nobody);
    const spec = { ...jail.spec, vmId: "unprivileged", uid: nobody, gid: nobody, runDir, binds: [] };
    const prepared = await prepareJail(spec, host);
    for (const path of [jailPaths(runDir).controlDir, jailPaths(runDir).statusFile])
      chownSync(path, nobody, nobody);
    const argv = jailCommandArgv(
      spec,
      ["/usr/bin/busybox", "sh", "-c", "id -u; cat /proc/self/status; ls /proc | grep -cE '^[0-9]+$'"],
      host,
    );

    const run = spawnSync(
      "/usr/bin/setpriv",
      [`--reuid=${nobody}`, `--regid=${nobody}`, "--clear-groups", "--", ...argv],
      { env: {}, encoding: "utf8", timeout: 20_000 },
    );
    await prepared.cleanup();

    assert.match(run.stdout, /^65534$/m);
    assert.match(run.stdout, /^CapEff:\s+0000000000000000$/m);
    assert.match(run.stdout, /^NoNewPrivs:\s+1$/m);
    assert.match(run.stdout, /^Seccomp:\s+2$/m);
    assert.ok(Number(run.stdout.trim().split("\n").pop()) <= 3, "the jail sees only its own processes");
    assert.match(sandboxGaps(host).join("\n"), /not running as root: the worker keeps Palisade's uid/);
  },
);
