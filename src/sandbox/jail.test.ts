import { test } from "node:test";
import assert from "node:assert/strict";
import {
  jailArgv,
  jailCommandArgv,
  parseWorkerStatus,
  SandboxError,
  QEMU_SECCOMP_ARGS,
  type JailSpec,
} from "./jail.js";
import type { SandboxHostFacts } from "./host-facts.js";

const rootHost: SandboxHostFacts = {
  root: true,
  bwrap: "/usr/bin/bwrap",
  setpriv: "/usr/bin/setpriv",
  prlimit: "/usr/bin/prlimit",
  nsenter: "/usr/bin/nsenter",
  shell: "/bin/sh",
  runtimeFiles: ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"],
  firmwareDirs: ["/usr/share/qemu", "/usr/share/seabios"],
  runtimeTree: null,
  cgroups: {
    version: "v1",
    controllers: { memory: "/sys/fs/cgroup/memory/svc", pids: "/sys/fs/cgroup/pids" },
  },
  arch: "x64",
};
const userHost: SandboxHostFacts = { ...rootHost, root: false, cgroups: { version: "none" } };

const spec: JailSpec = {
  vmId: "web-1",
  uid: 64007,
  gid: 64007,
  runDir: "/var/lib/palisade/vms/web-1/run",
  binds: [
    { hostPath: "/var/lib/palisade/images/vmlinuz", readonly: true },
    { hostPath: "/var/lib/palisade/vms/web-1/disk.raw", readonly: false },
  ],
  devices: [],
  shareHostNetwork: false,
  limits: { memoryBytes: 384n * 1024n * 1024n, pids: 96, cpuPercent: 200, openFiles: 1024 },
  qemuBinary: "/usr/bin/qemu-system-x86_64",
};

/** The argument following `flag` each time it appears. */
function valuesOf(argv: readonly string[], flag: string): string[] {
  return argv.flatMap((arg, index) => (arg === flag ? [argv[index + 1] ?? ""] : []));
}

/** The bwrap part of the argv (between bwrap and its `--`). */
function bwrapPart(argv: readonly string[]): string[] {
  const start = argv.indexOf("/usr/bin/bwrap");
  return argv.slice(start, argv.indexOf("--", start));
}

test("jailArgv: QEMU runs last, after setpriv drops to the VM's uid with no capabilities and no_new_privs", () => {
  const argv = jailArgv(spec, ["-M", "microvm", ...QEMU_SECCOMP_ARGS], rootHost);

  const setpriv = argv.lastIndexOf("/usr/bin/setpriv");
  assert.deepEqual(argv.slice(setpriv), [
    "/usr/bin/setpriv",
    "--reuid=64007",
    "--regid=64007",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
    "/usr/bin/qemu-system-x86_64",
    "-M",
    "microvm",
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
  ]);
});

test("jailArgv: the prefix joins the worker's cgroups before anything else runs", () => {
  const argv = jailArgv(spec, [], rootHost);

  assert.equal(argv[0], "/bin/sh");
  assert.deepEqual(argv.slice(3, 8), [
    "palisade-jail",
    "2",
    "/sys/fs/cgroup/memory/svc/palisade/web-1",
    "/sys/fs/cgroup/pids/palisade/web-1",
    "/var/lib/palisade/vms/web-1/run/.jail/worker-status.json",
  ]);
  assert.equal(argv[8], "/var/lib/palisade/vms/web-1/run/.jail/seccomp.bpf");
});

test("jailArgv: rlimits cap open files, tasks of the uid and core dumps (guest RAM never lands in a core file)", () => {
  const argv = jailArgv(spec, [], rootHost);

  const prlimit = argv.indexOf("/usr/bin/prlimit");
  assert.deepEqual(argv.slice(prlimit, prlimit + 5), [
    "/usr/bin/prlimit",
    "--nofile=1024:1024",
    "--core=0:0",
    "--nproc=96:96",
    "--",
  ]);
});

test("jailArgv: every namespace is new, QEMU is the jail's pid 1, the environment is cleared, the status goes to fd 3", () => {
  const bwrap = bwrapPart(jailArgv(spec, [], rootHost));

  for (const flag of [
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup",
    "--unshare-net",
    "--new-session",
    "--as-pid-1",
    "--clearenv",
  ]) {
    assert.ok(bwrap.includes(flag), flag);
  }
  assert.deepEqual(valuesOf(bwrap, "--json-status-fd"), ["3"]);
  assert.deepEqual(valuesOf(bwrap, "--seccomp"), ["4"]);
  assert.equal(bwrap.includes("--unshare-user"), false);
  assert.equal(bwrap.includes("--die-with-parent"), false);
});

test("jailArgv: user-mode networking shares the host network namespace and sees the host's resolv.conf", () => {
  const bwrap = bwrapPart(
    jailArgv({ ...spec, shareHostNetwork: true }, [], { ...rootHost, resolvConf: "/etc/resolv.conf" }),
  );

  assert.equal(bwrap.includes("--unshare-net"), false);
  assert.ok(valuesOf(bwrap, "--ro-bind").includes("/etc/resolv.conf"));
});

test("jailArgv: without user-mode networking the jail has no /etc at all", () => {
  const bwrap = bwrapPart(jailArgv(spec, [], { ...rootHost, resolvConf: "/etc/resolv.conf" }));

  assert.equal(
    bwrap.some((arg) => arg.startsWith("/etc")),
    false,
  );
});

test("jailArgv: a prepared network namespace is joined with nsenter instead of a new empty one", () => {
  const argv = jailArgv({ ...spec, netnsPath: "/run/netns/palisade-web-1" }, [], rootHost);

  assert.ok(argv.includes("--net=/run/netns/palisade-web-1"));
  assert.equal(bwrapPart(argv).includes("--unshare-net"), false);
});

test("jailArgv: VM files are bound at the same path, read-only ones read-only", () => {
  const bwrap = bwrapPart(jailArgv(spec, [], rootHost));

  assert.deepEqual(valuesOf(bwrap, "--bind"), [
    "/var/lib/palisade/vms/web-1/run",
    "/var/lib/palisade/vms/web-1/disk.raw",
  ]);
  assert.ok(valuesOf(bwrap, "--ro-bind").includes("/var/lib/palisade/images/vmlinuz"));
});

test("jailArgv: the root holds only QEMU, its libraries and firmware, setpriv and the VM's files", () => {
  const bwrap = bwrapPart(jailArgv(spec, [], rootHost));

  assert.deepEqual(valuesOf(bwrap, "--ro-bind"), [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/bin/setpriv",
    "/usr/bin/qemu-system-x86_64",
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/var/lib/palisade/images/vmlinuz",
  ]);
  assert.deepEqual(valuesOf(bwrap, "--dev"), ["/dev"]);
  assert.deepEqual(valuesOf(bwrap, "--dev-bind"), []);
});

test("jailArgv: parent directories are created 0755, parents first (bwrap's implicit ones are 0700)", () => {
  const bwrap = bwrapPart(jailArgv(spec, [], rootHost));

  const dirs = valuesOf(bwrap, "--dir");
  assert.deepEqual(dirs.slice(0, 3), ["/lib", "/lib64", "/usr"]);
  assert.ok(dirs.indexOf("/var/lib/palisade") < dirs.indexOf("/var/lib/palisade/vms/web-1"));
  assert.equal(dirs.includes("/var/lib/palisade/vms/web-1/run"), false);
  assert.ok(valuesOf(bwrap, "--perms").every((mode) => mode === "0755" || mode === "01777"));
});

test("jailArgv: /dev/kvm and /dev/net/tun appear only when listed, as per-VM nodes", () => {
  const bwrap = bwrapPart(jailArgv({ ...spec, devices: ["kvm", "net-tun"] }, [], rootHost));

  assert.deepEqual(valuesOf(bwrap, "--dev-bind"), [
    "/var/lib/palisade/vms/web-1/run/.jail/kvm",
    "/var/lib/palisade/vms/web-1/run/.jail/net-tun",
  ]);
  assert.ok(bwrap.includes("/dev/kvm") && bwrap.includes("/dev/net/tun"));
});

test("jailArgv: an attached worker dies with its parent", () => {
  assert.ok(
    bwrapPart(jailArgv({ ...spec, dieWithParent: true }, [], rootHost)).includes("--die-with-parent"),
  );
});

test("jailArgv: not root: a user namespace without further user namespaces, no setpriv, no cgroups", () => {
  const argv = jailArgv(spec, [], userHost);

  assert.ok(argv.includes("--unshare-user") && argv.includes("--disable-userns"));
  assert.equal(argv.includes("/usr/bin/setpriv"), false);
  assert.equal(argv[4], "0");
  assert.equal(
    argv.some((arg) => arg.startsWith("--nproc")),
    false,
  );
});

test("jailArgv: without bubblewrap, root still drops to the VM's uid with rlimits", () => {
  const argv = jailArgv(spec, ["-M", "microvm"], { ...rootHost, bwrap: null });

  assert.deepEqual(argv.slice(-11, -3), [
    "/usr/bin/setpriv",
    "--reuid=64007",
    "--regid=64007",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
  ]);
  assert.ok(argv.includes("/usr/bin/prlimit"));
});

test("jailArgv: as root without setpriv the jail is refused (QEMU would keep every capability)", () => {
  assert.throws(
    () => jailArgv(spec, [], { ...rootHost, setpriv: null }),
    (error: unknown) => error instanceof SandboxError && error.code === "sandbox.host-missing",
  );
});

test("jailArgv: uid 0 is refused", () => {
  assert.throws(() => jailArgv({ ...spec, uid: 0 }, [], rootHost), /uid 0 must be an unprivileged id/);
});

test("jailArgv: a vmId that could escape the cgroup directory is refused", () => {
  assert.throws(() => jailArgv({ ...spec, vmId: "../../x" }, [], rootHost), SandboxError);
});

test("jailArgv: binds of relative, unnormalized or /proc paths are refused", () => {
  assert.throws(
    () => jailArgv({ ...spec, binds: [{ hostPath: "disk.raw", readonly: true }] }, [], rootHost),
    /absolute, normalized/,
  );
  assert.throws(
    () => jailArgv({ ...spec, binds: [{ hostPath: "/var/../etc/shadow", readonly: true }] }, [], rootHost),
    /absolute, normalized/,
  );
  assert.throws(
    () => jailArgv({ ...spec, binds: [{ hostPath: "/proc/1/root", readonly: true }] }, [], rootHost),
    /under proc/,
  );
});

test("jailArgv: a bind over the jail's control files is refused", () => {
  assert.throws(
    () =>
      jailArgv(
        {
          ...spec,
          binds: [{ hostPath: "/var/lib/palisade/vms/web-1/run/.jail/seccomp.bpf", readonly: false }],
        },
        [],
        rootHost,
      ),
    /control files/,
  );
});

test("jailCommandArgv: another program (the hostile tests' shell) is bound into the jail and run in QEMU's place", () => {
  const argv = jailCommandArgv(spec, ["/usr/bin/busybox", "sh"], rootHost);

  assert.deepEqual(argv.slice(-2), ["/usr/bin/busybox", "sh"]);
  assert.ok(valuesOf(bwrapPart(argv), "--ro-bind").includes("/usr/bin/busybox"));
});

test("parseWorkerStatus: reads bwrap's JSON documents (pid, namespaces, exit code)", () => {
  const text =
    '{ "child-pid": 9137, "cgroup-namespace": 4026532250, "net-namespace": 4026532251 }\n{ "exit-code": 137 }';

  assert.deepEqual(parseWorkerStatus(text), {
    childPid: 9137,
    exitCode: 137,
    namespaces: { cgroup: 4026532250, net: 4026532251 },
  });
});

test("parseWorkerStatus: a worker still running has no exit code; garbage is ignored", () => {
  assert.deepEqual(parseWorkerStatus('{ "child-pid": 5 }{ broken'), { childPid: 5, namespaces: {} });
});

const treeHost: SandboxHostFacts = {
  ...rootHost,
  runtimeTree: {
    root: "/var/lib/palisade/jail-runtime/runtime-0123",
    files: [
      "/lib/x86_64-linux-gnu/libc.so.6",
      "/lib64/ld-linux-x86-64.so.2",
      "/usr/bin/qemu-system-x86_64",
      "/usr/bin/setpriv",
      "/usr/share/qemu/qboot.rom",
    ],
  },
};

test("jailArgv: with a runtime tree, its three top directories are bound instead of each file", () => {
  const bwrap = bwrapPart(jailArgv(spec, [], treeHost));

  assert.deepEqual(valuesOf(bwrap, "--ro-bind"), [
    "/var/lib/palisade/jail-runtime/runtime-0123/lib",
    "/var/lib/palisade/jail-runtime/runtime-0123/lib64",
    "/var/lib/palisade/jail-runtime/runtime-0123/usr",
    "/var/lib/palisade/images/vmlinuz",
  ]);
  assert.equal(
    valuesOf(bwrap, "--dir").some((dir) => dir.startsWith("/usr")),
    false,
  );
});

test("jailArgv: a VM file under /usr cannot go into a read-only tree, so files are bound one by one", () => {
  const bwrap = bwrapPart(
    jailArgv({ ...spec, binds: [{ hostPath: "/usr/share/palisade/vmlinuz", readonly: true }] }, [], treeHost),
  );

  assert.ok(valuesOf(bwrap, "--ro-bind").includes("/usr/bin/qemu-system-x86_64"));
  assert.equal(
    valuesOf(bwrap, "--ro-bind").some((path) => path.includes("runtime-0123")),
    false,
  );
});

test("jailCommandArgv: a program outside the tree's directories is bound beside the tree", () => {
  const bwrap = bwrapPart(jailCommandArgv(spec, ["/opt/probe/jail-probe"], treeHost));

  assert.ok(valuesOf(bwrap, "--ro-bind").includes("/opt/probe/jail-probe"));
  assert.ok(valuesOf(bwrap, "--ro-bind").includes("/var/lib/palisade/jail-runtime/runtime-0123/usr"));
});
