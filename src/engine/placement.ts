/**
 * Host-wide placement: which VMs run on this host and at which trust level, whatever
 * started them (`palisade run`, the service) and wherever their run directories are. The
 * seed's rule: VMs of different trust levels do not share a host unless the host's
 * configuration allows the pair.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import * as z from "zod";
import { ConfigError } from "../util/errors.js";
import { PRESETS, checkTrustPlacement, resolvePolicy, type PartitionPolicy } from "../policy/index.js";
import { procProcessTable } from "../sandbox/index.js";
import { isWorkerAlive, readWorkerRecord } from "./run-dir.js";
import type { VmSpec } from "./vm-spec.js";

/** PALISADE_PLACEMENT_DIR, else /run/palisade/placement as root, else the user's runtime dir. */
export function placementDir(): string {
  const override = process.env.PALISADE_PLACEMENT_DIR;
  if (override !== undefined && override !== "") return override;
  if (process.getuid?.() === 0) return "/run/palisade/placement";
  return join(process.env.XDG_RUNTIME_DIR ?? `/tmp/palisade-${process.getuid?.() ?? 0}`, "palisade", "placement");
}

const EntrySchema = z.object({
  name: z.string(),
  uuid: z.string(),
  trustLevel: z.string(),
  runDir: z.string(),
  /** The process starting the VM, and its start time: the entry holds while it lives, before the worker exists. */
  launcherPid: z.number().int().optional(),
  launcherStart: z.string().optional(),
});
type Entry = z.infer<typeof EntrySchema>;

const HostConfigSchema = z.strictObject({
  /** Unordered pairs of trust levels that may share this host. */
  trustPairs: z.array(z.tuple([z.string(), z.string()])).default([]),
  /**
   * The most any VM the service runs may be granted: a partition policy (a preset name
   * or an object, as `--policy` takes). Absent: the `default` preset.
   */
  maxPolicy: z.unknown().optional(),
  /**
   * Whether Palisade may turn on cgroup2's `favordynmods` (host-wide; see
   * sandbox/cgroup-tuning.ts): each worker then joins its cgroups without waiting for an
   * RCU grace period. Default true.
   */
  cgroupFavorDynmods: z.boolean().default(true),
});

/** The host's configuration: PALISADE_HOST_CONFIG or /etc/palisade/host.json; absent means defaults. */
export function readHostConfig(): z.infer<typeof HostConfigSchema> {
  const path = process.env.PALISADE_HOST_CONFIG ?? "/etc/palisade/host.json";
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return { trustPairs: [], maxPolicy: undefined, cgroupFavorDynmods: true };
  }
  try {
    return HostConfigSchema.parse(JSON.parse(text));
  } catch (error: unknown) {
    throw new ConfigError(`Host configuration ${path} is invalid: ${(error as Error).message.slice(0, 200)}`, "config.host-config");
  }
}

/** VMs placed on this host whose workers are alive; stale entries are removed. */
export function placedVms(dir = placementDir()): Entry[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((file) => file.endsWith(".json"));
  } catch {
    return [];
  }
  const live: Entry[] = [];
  for (const file of files) {
    try {
      const entry = EntrySchema.parse(JSON.parse(readFileSync(join(dir, file), "utf8")));
      const record = readWorkerRecord(entry.runDir);
      const workerAlive = record !== null && record.uuid === entry.uuid && isWorkerAlive(record.pid, record.uuid);
      if (workerAlive || (record === null && launcherAlive(entry))) live.push(entry);
      else rmSync(join(dir, file), { force: true });
    } catch {
      rmSync(join(dir, file), { force: true });
    }
  }
  return live;
}

/**
 * Refuses a VM whose trust level differs from a running VM's, unless allowed.
 * @throws {ConfigError} `config.trust-placement` with the policy's reason.
 */
export function checkPlacement(spec: VmSpec, dir = placementDir()): void {
  const decision = checkTrustPlacement(
    { name: spec.name, trustLevel: spec.policy.trustLevel },
    placedVms(dir).filter((entry) => entry.uuid !== spec.uuid),
    readHostConfig().trustPairs,
  );
  if (!decision.ok) throw new ConfigError(decision.reason, "config.trust-placement");
}

/**
 * Places a VM on this host before its worker starts: writes its record first, then checks
 * it against every other live record. Two VMs of incompatible trust levels started at the
 * same instant each see the other's record and are both refused (a retry places one);
 * checking first and recording after the launch let both through. The record holds while
 * this process lives and then while the worker does; the returned function removes it.
 *
 * @throws {ConfigError} `config.trust-placement` (the record is removed first).
 */
export function reservePlacement(spec: VmSpec, runDir: string, dir = placementDir()): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `${spec.uuid}.json`);
  const entry: Entry = {
    name: spec.name,
    uuid: spec.uuid,
    trustLevel: spec.policy.trustLevel,
    runDir,
    launcherPid: process.pid,
    launcherStart: procProcessTable.startTime(process.pid) ?? "",
  };
  writeFileSync(`${file}.tmp`, JSON.stringify(entry) + "\n", { mode: 0o644 });
  renameSync(`${file}.tmp`, file);
  const unplace = (): void => {
    rmSync(file, { force: true });
  };
  try {
    checkPlacement(spec, dir);
  } catch (error: unknown) {
    unplace();
    throw error;
  }
  return unplace;
}

function launcherAlive(entry: Entry): boolean {
  return entry.launcherPid !== undefined && procProcessTable.startTime(entry.launcherPid) === entry.launcherStart;
}

/**
 * The host's policy ceiling: what the parent partition grants at most (the seed: each
 * partition gets only the privileges its parent's policy grants). The service refuses a
 * VM definition whose policy exceeds it, so a user allowed to create VMs cannot, say,
 * turn the sandbox off or grant nested virtualization.
 *
 * @throws {ConfigError} `config.host-config` when `maxPolicy` is not a valid policy.
 */
export function hostPolicyCeiling(): PartitionPolicy {
  const { maxPolicy } = readHostConfig();
  if (maxPolicy === undefined) return PRESETS.default;
  try {
    return resolvePolicy(typeof maxPolicy === "string" ? { preset: maxPolicy } : maxPolicy);
  } catch (error: unknown) {
    throw new ConfigError(`Host configuration maxPolicy is not a valid partition policy: ${(error as Error).message}`, "config.host-config", {
      cause: error,
    });
  }
}
