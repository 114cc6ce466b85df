/**
 * Per-VM uids: a pool of unprivileged uid/gid pairs (uid = gid), one per running VM,
 * never shared. Claims are files `<stateDir>/uid-pool/<uid>.json`, each made whole and
 * at once (written under a temporary name, then hard-linked: the link fails if the uid is
 * taken). Reclaiming stale claims and renewing one happen under an exclusive `flock` of
 * `<stateDir>/uid-pool/lock`, which the kernel drops if the holder dies: the pool
 * survives crashes.
 *
 * The lock is skipped when there is nothing to reclaim: a new claim when every claim on
 * file is live, and a release by the process that made the claim (a live owner's claim is
 * never judged stale, so no reclaimer can be removing it). Why: the lock needs koffi
 * (Node has no flock), whose load cost `palisade run` ~14 ms before QEMU could start.
 * Safe because only lock holders delete other processes' claims, and a claim judged stale
 * under the lock cannot be replaced until that holder deletes it (links never overwrite).
 *
 * A claim is stale, and reclaimed, when no process on the host runs with its uid AND the
 * process that made it is gone (pid and start time, so a reused pid does not count).
 */
import { closeSync, openSync, readFileSync, readdirSync } from "node:fs";
import { link, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { posix } from "node:path";
import { SandboxError } from "./jail.js";

/** The default pool: 1000 ids above the range Debian gives to users and services. */
export const DEFAULT_UID_RANGE = { first: 64000, count: 1000 } as const;

/** One claim, as stored. */
export interface UidClaim {
  readonly uid: number;
  readonly vmId: string;
  /** The process that allocated it, and its start time (field 22 of /proc/PID/stat). */
  readonly ownerPid: number;
  readonly ownerStartTime: string;
}

/** What the pool needs to know about processes; the real one reads /proc. Tests may pass their own. */
export interface ProcessTable {
  /** Start time of `pid`, or null when no such process exists. */
  startTime(pid: number): string | null;
  /** The uids in use by any process on the host. */
  uidsInUse(): ReadonlySet<number>;
}

/** Field 22 (starttime) of a /proc/PID/stat line; pure. The command name may hold spaces and parentheses. */
export function parseStatStartTime(stat: string): string | null {
  const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields after the name start at field 3 (state); starttime is field 22.
  return after[22 - 3] ?? null;
}

/** The process table of this host, from /proc. */
export const procProcessTable: ProcessTable = {
  startTime(pid: number): string | null {
    try {
      return parseStatStartTime(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return null;
    }
  },
  uidsInUse(): ReadonlySet<number> {
    const uids = new Set<number>();
    for (const name of readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const match = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/m.exec(
          readFileSync(`/proc/${name}/status`, "utf8"),
        );
        if (match) for (const id of match.slice(1)) uids.add(Number(id));
      } catch {
        // The process exited while we looked.
      }
    }
    return uids;
  },
};

let flockFunction: ((fd: number, operation: number) => number) | undefined;
function flock(fd: number, operation: number): number {
  if (flockFunction === undefined) {
    // Loaded on first use: the lock-free paths above never need it.
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const libc = koffi.load("libc.so.6");
    flockFunction = libc.func("int flock(int fd, int operation)") as (
      fd: number,
      operation: number,
    ) => number;
  }
  return flockFunction(fd, operation);
}
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

/** Runs `action` holding the pool's exclusive lock; waits at most `timeoutMs` for it. */
async function withPoolLock<T>(dir: string, timeoutMs = 10_000, action: () => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const fd = openSync(posix.join(dir, "lock"), "a", 0o600);
  try {
    const deadline = Date.now() + timeoutMs;
    // Non-blocking attempts: a blocking flock would stall Node's only JS thread.
    while (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      if (Date.now() > deadline)
        throw new SandboxError(
          `The uid pool lock ${dir}/lock is held for more than ${timeoutMs} ms`,
          "sandbox.uid-pool",
        );
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    try {
      return await action();
    } finally {
      flock(fd, LOCK_UN);
    }
  } finally {
    closeSync(fd);
  }
}

async function readClaims(dir: string): Promise<UidClaim[]> {
  const claims: UidClaim[] = [];
  for (const name of await readdir(dir)) {
    if (!/^\d+\.json$/.test(name)) continue;
    const uid = Number(name.slice(0, -".json".length));
    try {
      const claim = JSON.parse(await readFile(posix.join(dir, name), "utf8")) as Partial<UidClaim>;
      // The file name is the uid; the body must agree and be whole.
      if (
        claim.uid !== uid ||
        typeof claim.vmId !== "string" ||
        typeof claim.ownerPid !== "number" ||
        typeof claim.ownerStartTime !== "string"
      ) {
        throw new Error("malformed claim");
      }
      claims.push({ uid, vmId: claim.vmId, ownerPid: claim.ownerPid, ownerStartTime: claim.ownerStartTime });
    } catch {
      // A claim half-written by a crashed allocator: its uid is reclaimed below.
      claims.push({ uid, vmId: "", ownerPid: 0, ownerStartTime: "" });
    }
  }
  return claims;
}

/** Is this claim's VM gone? Pure given the process table. */
export function isStaleClaim(
  claim: UidClaim,
  processes: ProcessTable,
  uidsInUse: ReadonlySet<number>,
): boolean {
  if (uidsInUse.has(claim.uid)) return false;
  return processes.startTime(claim.ownerPid) !== claim.ownerStartTime;
}

/** Options of the pool; defaults suit the service. */
export interface UidPoolOptions {
  readonly range?: { readonly first: number; readonly count: number };
  readonly processes?: ProcessTable;
  /** How long to wait for the pool's lock; default 10 s. */
  readonly lockTimeoutMs?: number;
}

let temporaryCount = 0;

/**
 * Makes `<dir>/<uid>.json` holding `claim`, whole, unless that uid is already claimed.
 * @returns false when the uid's file exists (someone claimed it first).
 */
async function createClaimFile(dir: string, claim: UidClaim): Promise<boolean> {
  const temporary = posix.join(dir, `.${claim.uid}.${process.pid}.${++temporaryCount}.tmp`);
  await writeFile(temporary, JSON.stringify(claim), { mode: 0o600, flag: "wx" });
  try {
    await link(temporary, posix.join(dir, `${claim.uid}.json`));
    return true;
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  } finally {
    await rm(temporary, { force: true });
  }
}

/**
 * The lock-free claim: the lowest free uid when every claim on file is live and none is
 * this VM's; null when the locked path must decide (stale or unreadable claims, a claim
 * to renew, a lost race, a full pool).
 */
async function claimWithoutLock(dir: string, vmId: string, range: { first: number; count: number }, processes: ProcessTable): Promise<number | null> {
  const claims = await readClaims(dir);
  if (claims.some((claim) => claim.vmId === vmId)) return null;
  const inUse = processes.uidsInUse();
  if (claims.some((claim) => isStaleClaim(claim, processes, inUse))) return null;
  const taken = new Set(claims.map((claim) => claim.uid));
  const ownerStartTime = processes.startTime(process.pid) ?? "";
  for (let uid = range.first; uid < range.first + range.count; uid++) {
    if (taken.has(uid) || inUse.has(uid)) continue;
    return (await createClaimFile(dir, { uid, vmId, ownerPid: process.pid, ownerStartTime })) ? uid : null;
  }
  return null;
}

/**
 * Allocates the VM's uid (= gid): its existing claim if it has one, else the lowest free
 * id, reclaiming stale claims.
 *
 * @throws {SandboxError} `sandbox.uid-pool` when every id is claimed by a live VM.
 */
export async function allocateUid(
  vmId: string,
  stateDir: string,
  options: UidPoolOptions = {},
): Promise<number> {
  const range = options.range ?? DEFAULT_UID_RANGE;
  const processes = options.processes ?? procProcessTable;
  const dir = posix.join(stateDir, "uid-pool");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const quick = await claimWithoutLock(dir, vmId, range, processes);
  if (quick !== null) return quick;
  return withPoolLock(dir, options.lockTimeoutMs, async () => {
    const claims = await readClaims(dir);
    const own = claims.find((claim) => claim.vmId === vmId);
    if (own !== undefined) {
      // This process now owns the claim (e.g. a restarted service starting the VM again).
      const renewed: UidClaim = {
        ...own,
        ownerPid: process.pid,
        ownerStartTime: processes.startTime(process.pid) ?? "",
      };
      await writeFile(posix.join(dir, `${own.uid}.json`), JSON.stringify(renewed), { mode: 0o600 });
      return own.uid;
    }
    const inUse = processes.uidsInUse();
    const taken = new Set<number>();
    for (const claim of claims) {
      if (isStaleClaim(claim, processes, inUse))
        await rm(posix.join(dir, `${claim.uid}.json`), { force: true });
      else taken.add(claim.uid);
    }
    for (let uid = range.first; uid < range.first + range.count; uid++) {
      // An id some process already runs as (outside Palisade) is never handed out.
      if (taken.has(uid) || inUse.has(uid)) continue;
      const claim: UidClaim = {
        uid,
        vmId,
        ownerPid: process.pid,
        ownerStartTime: processes.startTime(process.pid) ?? "",
      };
      // A lock-free claim may have taken it since the list was read: try the next one.
      if (await createClaimFile(dir, claim)) return uid;
    }
    throw new SandboxError(
      `No free worker uid in ${range.first}–${range.first + range.count - 1}: ${taken.size} claimed by running VMs`,
      "sandbox.uid-pool",
    );
  });
}

/**
 * Releases the VM's uid (after its worker exited and its jail was cleaned up). Idempotent.
 * Without the lock when this process made the claim (see the file's comment).
 */
export async function releaseUid(vmId: string, stateDir: string, options: Pick<UidPoolOptions, "processes" | "lockTimeoutMs"> = {}): Promise<void> {
  const dir = posix.join(stateDir, "uid-pool");
  const processes = options.processes ?? procProcessTable;
  let mine: UidClaim[];
  try {
    mine = (await readClaims(dir)).filter((claim) => claim.vmId === vmId);
  } catch {
    mine = [];
  }
  const ownStart = processes.startTime(process.pid);
  if (mine.length > 0 && mine.every((claim) => claim.ownerPid === process.pid && claim.ownerStartTime === ownStart)) {
    for (const claim of mine) await rm(posix.join(dir, `${claim.uid}.json`), { force: true });
    return;
  }
  await withPoolLock(dir, options.lockTimeoutMs, async () => {
    for (const claim of await readClaims(dir)) {
      if (claim.vmId === vmId) await rm(posix.join(dir, `${claim.uid}.json`), { force: true });
    }
  });
}
