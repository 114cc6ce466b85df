import { test } from "node:test";
import assert from "node:assert/strict";
import { cgroupLimitWrites } from "./cgroups.js";
import type { SandboxHostFacts } from "./host-facts.js";

const base: SandboxHostFacts = {
  root: true,
  bwrap: "/usr/bin/bwrap",
  setpriv: "/usr/bin/setpriv",
  prlimit: "/usr/bin/prlimit",
  nsenter: null,
  shell: "/bin/sh",
  runtimeFiles: [],
  firmwareDirs: [],
  runtimeTree: null,
  arch: "x64",
  cgroups: {
    version: "v1",
    controllers: { memory: "/cg/memory", pids: "/cg/pids", cpu: "/cg/cpu", blkio: "/cg/blkio" },
  },
};
const limits = {
  memoryBytes: 384n * 1024n * 1024n,
  pids: 96,
  cpuPercent: 150,
  openFiles: 1024,
  ioWeight: 500,
};

test("cgroupLimitWrites: v1 sets memory (and memsw), pids, a CFS quota of 150 % and a blkio weight", () => {
  const writes = cgroupLimitWrites({ vmId: "a", limits }, base);

  assert.deepEqual(
    writes.map(({ file, value }) => `${file}=${value}`),
    [
      "/cg/memory/palisade/a/memory.limit_in_bytes=402653184",
      "/cg/memory/palisade/a/memory.memsw.limit_in_bytes=402653184",
      "/cg/pids/palisade/a/pids.max=96",
      "/cg/cpu/palisade/a/cpu.cfs_period_us=100000",
      "/cg/cpu/palisade/a/cpu.cfs_quota_us=150000",
      "/cg/blkio/palisade/a/blkio.weight=50",
      "/cg/blkio/palisade/a/blkio.bfq.weight=50",
    ],
  );
});

test("cgroupLimitWrites: v2 sets memory.max, no swap, pids.max, cpu.max and io.weight", () => {
  const writes = cgroupLimitWrites(
    { vmId: "a", limits },
    { ...base, cgroups: { version: "v2", base: "/cg", controllers: ["cpu", "io", "memory", "pids"] } },
  );

  assert.deepEqual(
    writes.map(({ file, value }) => `${file}=${value}`),
    [
      "/cg/palisade/a/memory.max=402653184",
      "/cg/palisade/a/memory.swap.max=0",
      "/cg/palisade/a/pids.max=96",
      "/cg/palisade/a/cpu.max=150000 100000",
      "/cg/palisade/a/io.weight=default 500",
    ],
  );
});

test("cgroupLimitWrites: a v2 hierarchy without memory and pids (v1 holds them) writes only what it has", () => {
  const writes = cgroupLimitWrites(
    { vmId: "a", limits },
    { ...base, cgroups: { version: "v2", base: "/cg", controllers: ["cpu", "hugetlb"] } },
  );

  assert.deepEqual(
    writes.map(({ file, value }) => `${file}=${value}`),
    ["/cg/palisade/a/cpu.max=150000 100000"],
  );
});

test("cgroupLimitWrites: no CPU limit asked, no CPU write; not root, no writes at all", () => {
  const noCpu = { memoryBytes: limits.memoryBytes, pids: limits.pids, openFiles: limits.openFiles };

  assert.equal(
    cgroupLimitWrites({ vmId: "a", limits: noCpu }, base).some((write) => write.file.includes("/cpu/")),
    false,
  );
  assert.deepEqual(cgroupLimitWrites({ vmId: "a", limits }, { ...base, root: false }), []);
});
