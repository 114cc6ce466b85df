/**
 * The worker jail's cgroup code against the real cgroup v2 hierarchy.
 *
 * On these machines the v2 hierarchy (/sys/fs/cgroup/unified) offers only `hugetlb`:
 * memory, pids, cpu, cpuset, cpuacct, blkio, devices and freezer are bound to v1
 * hierarchies, and a controller can move to v2 only once its v1 hierarchy is unmounted
 * with no child cgroups left — memory, cpu and pids hold hundreds of other users' cgroups
 * (this very process sits in one), so moving them would break every v1 user. The test
 * shows both facts (hugetlb can be enabled on a v2 child, memory cannot: ENOENT), then runs
 * the jail on the v2 layout this host really has: the worker is born in
 * `<base>/palisade/<vm>` (the jail's prefix joins it before exec), v2's core CPU accounting
 * (`cpu.stat` usage_usec) counts its work, the missing limits are named by sandboxGaps,
 * and cleanup kills the worker and removes its cgroup. The v2 memory/pids/cpu limit writes
 * themselves are covered by cgroups.test.ts only (no v2 host with those controllers here).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sandboxGaps } from "../../src/sandbox/index.js";
import { waitUntil } from "./guest-harness.js";
import { skipReason, useJailWorld } from "./sandbox-harness.js";

const v2Mount = readFileSync("/proc/self/mountinfo", "utf8")
  .split("\n")
  .find((line) => line.split(" - ")[1]?.startsWith("cgroup2 "))
  ?.split(" ")[4];
const skip = skipReason() ?? (v2Mount === undefined ? "no cgroup v2 hierarchy is mounted" : false);
const world = useJailWorld();

const words = (path: string): string[] => readFileSync(path, "utf8").split(/\s+/).filter((word) => word !== "");

test("sandbox: on the cgroup v2 hierarchy the worker is born in its own cgroup, is accounted there, and cleanup removes it", { skip }, async () => {
  const root = v2Mount ?? "";
  const base = join(root, `palisade-v2-test-${String(process.pid)}`);
  const rootControl = join(root, "cgroup.subtree_control");
  const enabledHugetlb = words(join(root, "cgroup.controllers")).includes("hugetlb") && !words(rootControl).includes("hugetlb");
  mkdirSync(base);
  try {
    if (enabledHugetlb) writeFileSync(rootControl, "+hugetlb");
    const controllers = words(join(base, "cgroup.controllers"));
    let memoryError = "";
    try {
      writeFileSync(join(base, "cgroup.subtree_control"), "+memory");
    } catch (error: unknown) {
      memoryError = (error as NodeJS.ErrnoException).code ?? "";
    }
    const host = { ...world().host, cgroups: { version: "v2" as const, base, controllers } };
    const jail = await world().jail("v2-worker", { host });
    const vmCgroup = join(base, "palisade", "v2-worker");

    const { pid } = await jail.start("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; while :; do sleep 1; done");
    const v2Line = readFileSync(`/proc/${String(pid)}/cgroup`, "utf8").split("\n").find((line) => line.startsWith("0::"));
    const procs = words(join(vmCgroup, "cgroup.procs")).map(Number);
    const usage = (): number => Number(/^usage_usec (\d+)$/m.exec(readFileSync(join(vmCgroup, "cpu.stat"), "utf8"))?.[1]);
    await waitUntil(() => usage() > 50_000, 30_000, "50 ms of CPU accounted to the worker's v2 cgroup");
    await jail.dispose();
    // Killed: gone, or a zombie until the bwrap above it reaps it.
    const dead = (): boolean => {
      try {
        return /^\d+ \(.*\) Z /.test(readFileSync(`/proc/${String(pid)}/stat`, "utf8"));
      } catch {
        return true;
      }
    };
    await waitUntil(dead, 10_000, "the worker's end").catch(() => undefined);

    if (controllers.includes("hugetlb")) assert.equal(memoryError, "ENOENT", "memory could be enabled on v2: this host is not the hybrid one described");
    assert.equal(v2Line, `0::${vmCgroup.slice(root.length)}`);
    assert.ok(procs.includes(pid), `${String(pid)} not in ${procs.join(" ")}`);
    assert.match(sandboxGaps(host).join("\n"), /cgroup v2 controller "memory" is not enabled: no memory limit/);
    assert.ok(dead(), "the worker outlived cleanup");
    assert.equal(existsSync(vmCgroup), false, "the worker's v2 cgroup is still there");
  } finally {
    for (const dir of [join(base, "palisade", "v2-worker"), join(base, "palisade"), base]) {
      if (existsSync(dir)) rmdirSync(dir);
    }
    if (enabledHugetlb) writeFileSync(rootControl, "-hugetlb");
  }
});
