/**
 * The effective sandbox of a running process, read from /proc: what `palisade run
 * --print-sandbox` shows and what the hostile tests assert. Parsers are pure; the
 * reading is `describeSandbox(pid)`.
 */
import { readFileSync, readlinkSync } from "node:fs";
import { posix } from "node:path";

/** A process's sandbox as the kernel sees it. */
export interface SandboxDescription {
  readonly pid: number;
  /** Real, effective, saved, filesystem uid (and gid). */
  readonly uid: readonly number[];
  readonly gid: readonly number[];
  readonly groups: readonly number[];
  /** Capability sets as hex masks (CapInh, CapPrm, CapEff, CapBnd, CapAmb). */
  readonly capabilities: Readonly<
    Record<"inheritable" | "permitted" | "effective" | "bounding" | "ambient", bigint>
  >;
  readonly noNewPrivs: boolean;
  /** 0 none, 1 strict, 2 filter. */
  readonly seccompMode: number;
  readonly seccompFilters: number;
  /** Namespace ids of the process, and whether each differs from the describer's own (the host's). */
  readonly namespaces: Readonly<Record<string, { readonly id: string; readonly own: boolean }>>;
  /** The process's cgroup per hierarchy (`memory` → `/palisade/a`; `""` for v2). */
  readonly cgroups: Readonly<Record<string, string>>;
  /** Limits found in those cgroups (bytes for memory; null = unlimited or absent). */
  readonly cgroupLimits: {
    readonly memoryBytes: bigint | null;
    readonly pids: number | null;
    readonly cpuQuotaPercent: number | null;
  };
  /** Soft rlimits that matter to a worker (null = unlimited). */
  readonly rlimits: {
    readonly openFiles: number | null;
    readonly processes: number | null;
    readonly coreBytes: number | null;
  };
}

/** `/proc/PID/status` → identity, capabilities, no_new_privs and seccomp; pure. */
export function parseProcStatus(
  text: string,
): Pick<
  SandboxDescription,
  "uid" | "gid" | "groups" | "capabilities" | "noNewPrivs" | "seccompMode" | "seccompFilters"
> {
  const field = (name: string): string =>
    new RegExp(`^${name}:[ \\t]*(.*)$`, "m").exec(text)?.[1]?.trim() ?? "";
  const ids = (name: string): number[] =>
    field(name)
      .split(/\s+/)
      .filter((id) => id !== "")
      .map(Number);
  const cap = (name: string): bigint => {
    const hex = field(name);
    return /^[0-9a-f]+$/.test(hex) ? BigInt(`0x${hex}`) : 0n;
  };
  return {
    uid: ids("Uid"),
    gid: ids("Gid"),
    groups: ids("Groups"),
    capabilities: {
      inheritable: cap("CapInh"),
      permitted: cap("CapPrm"),
      effective: cap("CapEff"),
      bounding: cap("CapBnd"),
      ambient: cap("CapAmb"),
    },
    noNewPrivs: field("NoNewPrivs") === "1",
    seccompMode: Number(field("Seccomp") || "0"),
    seccompFilters: Number(field("Seccomp_filters") || "0"),
  };
}

/** `/proc/PID/cgroup` → hierarchy name → path; pure. */
export function parseProcCgroup(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (match?.[1] === undefined || match[2] === undefined) continue;
    for (const name of match[1].split(",")) out[name] = match[2];
  }
  return out;
}

/** `/proc/PID/limits` → soft limits by name (`Max open files` → number, `unlimited` → null); pure. */
export function parseProcLimits(text: string): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const line of text.split("\n").slice(1)) {
    const match = /^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)/.exec(line);
    if (match?.[1] === undefined || match[2] === undefined) continue;
    out[match[1]] = match[2] === "unlimited" ? null : Number(match[2]);
  }
  return out;
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return fallback;
  }
}

/** Mount points of cgroup hierarchies, by controller name ("" = v2). */
function cgroupMounts(): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const line of readOr("/proc/self/mountinfo", "").split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const point = left.split(" ")[4] ?? "";
    const [fstype, , options] = right.split(" ");
    if (fstype === "cgroup2") mounts.set("", point);
    if (fstype === "cgroup") for (const option of (options ?? "").split(",")) mounts.set(option, point);
  }
  return mounts;
}

function limitOf(text: string): bigint | null {
  const value = text.trim().split(/\s+/)[0] ?? "";
  if (!/^\d+$/.test(value)) return null;
  const number = BigInt(value);
  // v1 reports "unlimited" as a page-rounded 2^63 - 1.
  return number >= 0x7fff_ffff_ffff_f000n ? null : number;
}

/**
 * Describes the sandbox of process `pid` from /proc (as root, any process; otherwise
 * only this user's).
 */
export function describeSandbox(pid: number): SandboxDescription {
  const status = parseProcStatus(readFileSync(`/proc/${pid}/status`, "utf8"));
  const namespaces: Record<string, { id: string; own: boolean }> = {};
  for (const kind of ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"]) {
    try {
      const id = readlinkSync(`/proc/${pid}/ns/${kind}`);
      namespaces[kind] = { id, own: id !== readlinkSync(`/proc/self/ns/${kind}`) };
    } catch {
      // Not supported by this kernel.
    }
  }
  const cgroups = parseProcCgroup(readOr(`/proc/${pid}/cgroup`, ""));
  const mounts = cgroupMounts();
  const read = (controller: string, file: string): string | null => {
    const mount = mounts.get(controller);
    const path = cgroups[controller];
    return mount === undefined || path === undefined
      ? null
      : readOr(posix.join(mount, path, file), "") || null;
  };
  const memory = read("memory", "memory.limit_in_bytes") ?? read("", "memory.max");
  const pids = read("pids", "pids.max") ?? read("", "pids.max");
  const quota = read("cpu", "cpu.cfs_quota_us");
  const period = read("cpu", "cpu.cfs_period_us");
  const cpuMax = read("", "cpu.max")?.trim().split(" ");
  let cpuQuotaPercent: number | null = null;
  if (quota !== null && period !== null && Number(quota) > 0)
    cpuQuotaPercent = Math.round((Number(quota) * 100) / Number(period));
  else if (cpuMax?.[0] !== undefined && /^\d+$/.test(cpuMax[0]))
    cpuQuotaPercent = Math.round((Number(cpuMax[0]) * 100) / Number(cpuMax[1]));
  const pidLimit = pids === null ? null : limitOf(pids);
  const limits = parseProcLimits(readOr(`/proc/${pid}/limits`, ""));
  return {
    pid,
    ...status,
    namespaces,
    cgroups,
    cgroupLimits: {
      memoryBytes: memory === null ? null : limitOf(memory),
      pids: pidLimit === null ? null : Number(pidLimit),
      cpuQuotaPercent,
    },
    rlimits: {
      openFiles: limits["Max open files"] ?? null,
      processes: limits["Max processes"] ?? null,
      coreBytes: limits["Max core file size"] ?? null,
    },
  };
}

/** A few lines a person can read (`palisade run --print-sandbox`); pure. */
export function formatSandboxDescription(description: SandboxDescription): string {
  const separate = Object.entries(description.namespaces)
    .filter(([, ns]) => ns.own)
    .map(([kind]) => kind);
  const shared = Object.entries(description.namespaces)
    .filter(([, ns]) => !ns.own)
    .map(([kind]) => kind);
  const unlimited = (value: bigint | number | null, unit = ""): string =>
    value === null ? "unlimited" : `${value}${unit}`;
  return [
    `pid ${description.pid}: uid ${description.uid.join("/")}, gid ${description.gid.join("/")}, groups [${description.groups.join(", ")}]`,
    `capabilities: effective 0x${description.capabilities.effective.toString(16)}, permitted 0x${description.capabilities.permitted.toString(16)}, bounding 0x${description.capabilities.bounding.toString(16)}`,
    `no_new_privs ${description.noNewPrivs ? 1 : 0}, seccomp mode ${description.seccompMode} (${description.seccompFilters} filters)`,
    `own namespaces: ${separate.join(", ") || "none"}; shared with the host: ${shared.join(", ") || "none"}`,
    `cgroup limits: memory ${unlimited(description.cgroupLimits.memoryBytes, " bytes")}, pids ${unlimited(description.cgroupLimits.pids)}, CPU ${unlimited(description.cgroupLimits.cpuQuotaPercent, " %")}`,
    `rlimits: open files ${unlimited(description.rlimits.openFiles)}, processes ${unlimited(description.rlimits.processes)}, core ${unlimited(description.rlimits.coreBytes)}`,
  ].join("\n");
}
