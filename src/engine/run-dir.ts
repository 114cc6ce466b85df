/**
 * Per-VM run directories: `<root>/<name>/` holds the worker's control sockets and its
 * record, so a worker can be found again by any process (the management service after a
 * restart, a second `palisade` command) without a parent that waits for it.
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as z from "zod";
import type { WorkerPaths } from "./qemu-argv.js";
import { VmSpecSchema, type VmSpec } from "./vm-spec.js";

/** The standard root: /run/palisade/vms as root, the user's runtime dir otherwise. */
export function defaultRunRoot(): string {
  if (process.getuid?.() === 0) return "/run/palisade/vms";
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime !== undefined && runtime !== "" ? join(runtime, "palisade", "vms") : `/tmp/palisade-${process.getuid?.() ?? 0}/vms`;
}

/** The worker's paths; `runDir` overrides `<root>/<name>` (the service uses `<data-dir>/vms/<id>`). */
export function workerPaths(root: string, spec: VmSpec, runDir: string = join(root, spec.name)): WorkerPaths {
  return {
    runDir,
    qmpSocket: join(runDir, "qmp.sock"),
    // Always inside the run directory (the jail binds only that); `--console socket:PATH`
    // gets a symbolic link at PATH.
    consoleSocket: join(runDir, "console.sock"),
  };
}

const WorkerRecordSchema = z.object({
  name: z.string(),
  uuid: z.string(),
  /** The process Palisade spawned: QEMU, or the jail (bwrap) around it. */
  pid: z.number().int().positive(),
  /** QEMU's own host pid when it runs in a jail. */
  qemuPid: z.number().int().positive().optional(),
  jailed: z.boolean().default(false),
  startedAtMs: z.number(),
  accel: z.enum(["kvm", "tcg"]),
  detached: z.boolean(),
  /** Real paths of the disks it holds, for the one-VM-per-disk check. */
  diskRealPaths: z.array(z.object({ path: z.string(), readonly: z.boolean() })),
  spec: VmSpecSchema,
  paths: z.object({ runDir: z.string(), qmpSocket: z.string(), consoleSocket: z.string() }),
});
export type WorkerRecord = z.infer<typeof WorkerRecordSchema>;

export const RECORD_FILE = "worker.json";

/** Writes the record crash-safely (write, then rename over). */
export function writeWorkerRecord(record: WorkerRecord): void {
  const file = join(record.paths.runDir, RECORD_FILE);
  writeFileSync(`${file}.tmp`, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

export function readWorkerRecord(runDir: string): WorkerRecord | null {
  try {
    return WorkerRecordSchema.parse(JSON.parse(readFileSync(join(runDir, RECORD_FILE), "utf8")));
  } catch {
    return null;
  }
}

/** Whether `pid` is alive and is the worker of VM `uuid` (guards against pid reuse). */
export function isWorkerAlive(pid: number, uuid: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = /\) (\S) /.exec(stat)?.[1];
    return cmdline.includes(uuid) && state !== "Z";
  } catch {
    return false;
  }
}

/** Records of workers that are alive under `root`; stale directories are ignored (see pruneStale). */
export function listLiveWorkers(root: string): WorkerRecord[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  return names
    .map((name) => readWorkerRecord(join(root, name)))
    .filter((record): record is WorkerRecord => record !== null && isWorkerAlive(record.pid, record.uuid));
}

/** Creates a fresh run directory (mode 0700); a stale one left by a dead worker is replaced. */
export function createRunDir(runDir: string): void {
  mkdirSync(join(runDir, ".."), { recursive: true, mode: 0o755 });
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { mode: 0o700 });
}

export function removeRunDir(runDir: string): void {
  rmSync(runDir, { recursive: true, force: true });
}
