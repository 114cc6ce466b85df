/**
 * The worker's cgroups: which files to write for its limits (pure, `cgroupLimitWrites`)
 * and the edge that creates, fills, empties and removes the directories.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { posix } from "node:path";
import type { SandboxHostFacts } from "./host-facts.js";
import { SandboxError, cgroupDirs, type JailSpec } from "./jail.js";

/** One write of a cgroup interface file; `optional` writes are skipped when the file does not exist. */
export interface CgroupWrite {
  readonly file: string;
  readonly value: string;
  readonly optional: boolean;
}

/** The CFS period the CPU limit is expressed in: 100 ms, the kernel's default. */
const CPU_PERIOD_US = 100_000;

/**
 * The writes that set a worker's limits, in order; pure. v1: memory.limit_in_bytes (then
 * memsw, so swap cannot extend it), pids.max, cpu.cfs_quota_us, blkio weight; v2:
 * memory.max, memory.swap.max, pids.max, cpu.max, io.weight.
 */
export function cgroupLimitWrites(
  spec: Pick<JailSpec, "vmId" | "limits">,
  host: SandboxHostFacts,
): CgroupWrite[] {
  if (!host.root) return [];
  const { limits } = spec;
  const quota =
    limits.cpuPercent === undefined
      ? undefined
      : Math.max(1000, Math.round((limits.cpuPercent * CPU_PERIOD_US) / 100));
  const writes: CgroupWrite[] = [];
  const write = (file: string, value: string, optional = false): void => {
    writes.push({ file, value, optional });
  };
  const layout = host.cgroups;
  switch (layout.version) {
    case "none":
      return [];
    case "v2": {
      const dir = posix.join(layout.base, "palisade", spec.vmId);
      // The prober only picks v2 when it offers memory and pids; a layout without them
      // (a host that delegates fewer controllers) gets what it has, and sandboxGaps says what not.
      if (layout.controllers.includes("memory")) {
        write(posix.join(dir, "memory.max"), String(limits.memoryBytes));
        write(posix.join(dir, "memory.swap.max"), "0", true);
      }
      if (layout.controllers.includes("pids")) write(posix.join(dir, "pids.max"), String(limits.pids));
      if (quota !== undefined && layout.controllers.includes("cpu"))
        write(posix.join(dir, "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
      if (limits.ioWeight !== undefined && layout.controllers.includes("io"))
        write(posix.join(dir, "io.weight"), `default ${limits.ioWeight}`, true);
      return writes;
    }
    case "v1": {
      const dir = (base: string): string => posix.join(base, "palisade", spec.vmId);
      const { memory, pids, cpu, blkio } = layout.controllers;
      if (memory !== undefined) {
        write(posix.join(dir(memory), "memory.limit_in_bytes"), String(limits.memoryBytes));
        write(posix.join(dir(memory), "memory.memsw.limit_in_bytes"), String(limits.memoryBytes), true);
      }
      if (pids !== undefined) write(posix.join(dir(pids), "pids.max"), String(limits.pids));
      if (cpu !== undefined && quota !== undefined) {
        write(posix.join(dir(cpu), "cpu.cfs_period_us"), String(CPU_PERIOD_US));
        write(posix.join(dir(cpu), "cpu.cfs_quota_us"), String(quota));
      }
      if (blkio !== undefined && limits.ioWeight !== undefined) {
        // v1 weights run 10–1000, v2's 1–10000.
        const weight = String(Math.min(1000, Math.max(10, Math.round(limits.ioWeight / 10))));
        write(posix.join(dir(blkio), "blkio.weight"), weight, true);
        write(posix.join(dir(blkio), "blkio.bfq.weight"), weight, true);
      }
      return writes;
    }
  }
}

/** Creates the worker's cgroups (idempotent) and writes its limits. */
export async function createCgroups(spec: JailSpec, host: SandboxHostFacts): Promise<string[]> {
  const dirs = cgroupDirs(spec, host);
  if (host.cgroups.version === "v2") {
    // Let the base and Palisade's directory hand the controllers down to each VM's cgroup.
    const wanted = ["memory", "pids", "cpu", "io"].filter(
      (name) => host.cgroups.version === "v2" && host.cgroups.controllers.includes(name),
    );
    const control = wanted.map((name) => `+${name}`).join(" ");
    await mkdir(posix.join(host.cgroups.base, "palisade"), { recursive: true });
    for (const parent of control === "" ? [] : [host.cgroups.base, posix.join(host.cgroups.base, "palisade")]) {
      await writeFile(posix.join(parent, "cgroup.subtree_control"), control).catch((error: unknown) => {
        throw new SandboxError(`Cannot enable cgroup controllers in ${parent}`, "sandbox.cgroup", {
          cause: error,
        });
      });
    }
  }
  for (const dir of dirs) await mkdir(dir, { recursive: true });
  for (const { file, value, optional } of cgroupLimitWrites(spec, host)) {
    if (optional && !existsSync(file)) continue;
    try {
      await writeFile(file, value);
    } catch (error: unknown) {
      if (optional) continue;
      throw new SandboxError(`Cannot write ${value} to ${file}`, "sandbox.cgroup", { cause: error });
    }
  }
  return dirs;
}

/** The pids in a cgroup directory (`cgroup.procs`); empty when it is gone. */
export async function cgroupProcs(dir: string): Promise<number[]> {
  try {
    return (await readFile(posix.join(dir, "cgroup.procs"), "utf8"))
      .split("\n")
      .filter((line) => /^\d+$/.test(line))
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Kills what is left in the worker's cgroups and removes them. Waits at most `timeoutMs`
 * for the tasks to go.
 *
 * @throws {SandboxError} when a cgroup still has tasks after the timeout.
 */
export async function removeCgroups(dirs: readonly string[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (;;) {
      const pids = await cgroupProcs(dir);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
      if (Date.now() > deadline)
        throw new SandboxError(
          `Cgroup ${dir} still has tasks ${pids.join(", ")} after ${timeoutMs} ms`,
          "sandbox.cgroup",
        );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // rmdir can fail with EBUSY for a moment after the last task exits.
    for (;;) {
      try {
        await rmdir(dir);
        break;
      } catch (error: unknown) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") break;
        if (Date.now() > deadline)
          throw new SandboxError(`Cannot remove cgroup ${dir}`, "sandbox.cgroup", { cause: error });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }
}
