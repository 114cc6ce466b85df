import { test } from "node:test";
import assert from "node:assert/strict";
import { parseLdd, parseCgroupLayout, sandboxGaps, type SandboxHostFacts } from "./host-facts.js";

test("parseLdd: library paths and the interpreter, not the vdso", () => {
  const text = [
    "\tlinux-vdso.so.1 (0x00007ffd4d5f2000)",
    "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f0e1c7c0000)",
    "\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1d8a1000)",
  ].join("\n");

  assert.deepEqual(parseLdd(text), ["/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"]);
});

// As on these machines: v1 controllers, an empty v2 hierarchy, the service in a memory sub-cgroup.
const selfCgroup = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/5a82\n1:cpu:/\n0::/\n";
const mountinfo = [
  "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
  "31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids",
  "32 25 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
  "33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
].join("\n");

test("parseCgroupLayout: v1 controllers nest under the service's own cgroups when v2 has no controllers", () => {
  const layout = parseCgroupLayout(selfCgroup, mountinfo, () => []);

  assert.deepEqual(layout, {
    version: "v1",
    controllers: {
      memory: "/sys/fs/cgroup/memory/process_api/5a82",
      pids: "/sys/fs/cgroup/pids/",
      cpu: "/sys/fs/cgroup/cpu/",
    },
  });
});

test("parseCgroupLayout: v2 is used when it offers memory and pids, beside the service's own cgroup", () => {
  const layout = parseCgroupLayout(
    "0::/system.slice/palisade.service\n",
    "40 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
    () => ["cpu", "io", "memory", "pids"],
  );

  assert.deepEqual(layout, {
    version: "v2",
    base: "/sys/fs/cgroup/system.slice",
    controllers: ["cpu", "io", "memory", "pids"],
  });
});

test("parseCgroupLayout: no cgroup mounts means none", () => {
  assert.deepEqual(
    parseCgroupLayout("0::/\n", "", () => []),
    { version: "none" },
  );
});

const fullHost: SandboxHostFacts = {
  root: true,
  bwrap: "/usr/bin/bwrap",
  setpriv: "/usr/bin/setpriv",
  prlimit: "/usr/bin/prlimit",
  nsenter: "/usr/bin/nsenter",
  shell: "/bin/sh",
  runtimeFiles: [],
  firmwareDirs: [],
  runtimeTree: null,
  arch: "x64",
  cgroups: { version: "v2", base: "/sys/fs/cgroup", controllers: ["cpu", "io", "memory", "pids"] },
};

test("sandboxGaps: a root host with bwrap, setpriv and v2 controllers lacks nothing", () => {
  assert.deepEqual(sandboxGaps(fullHost), []);
});

test("sandboxGaps: not root and no bwrap say what the jail loses", () => {
  const gaps = sandboxGaps({ ...fullHost, root: false, bwrap: null, cgroups: { version: "none" } });

  assert.equal(gaps.length, 3);
  assert.match(gaps.join("\n"), /bubblewrap .* not installed/);
  assert.match(gaps.join("\n"), /not running as root/);
  assert.match(gaps.join("\n"), /no memory, pids or CPU limits/);
});

test("sandboxGaps: a v1 host without the cpu controller has no CPU limit", () => {
  const gaps = sandboxGaps({
    ...fullHost,
    cgroups: { version: "v1", controllers: { memory: "/m", pids: "/p", blkio: "/b" } },
  });

  assert.deepEqual(gaps, ['cgroup v1 controller "cpu" is not mounted or not writable: no cpu limit']);
});

test("sandboxGaps: a v2 hierarchy that offers only hugetlb (v1 holds the rest) has no memory, pids, CPU or I/O limits", () => {
  const gaps = sandboxGaps({ ...fullHost, cgroups: { version: "v2", base: "/u", controllers: ["hugetlb"] } });

  assert.deepEqual(gaps, [
    'cgroup v2 controller "memory" is not enabled: no memory limit',
    'cgroup v2 controller "pids" is not enabled: no pids limit',
    'cgroup v2 controller "cpu" is not enabled: no CPU limit',
    'cgroup v2 controller "io" is not enabled: no I/O weight',
  ]);
});
