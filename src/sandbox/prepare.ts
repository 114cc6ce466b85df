/**
 * The edge that makes a jail's files before the worker starts and undoes them after it
 * exits: the run directory and its root-owned control directory, the seccomp program,
 * the status file, per-VM device nodes, access to the VM's files, and the cgroups.
 */
import { execFile } from "node:child_process";
import { constants, existsSync } from "node:fs";
import { chmod, chown, lstat, mkdir, open, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { posix } from "node:path";
import { promisify } from "node:util";
import { createCgroups, removeCgroups } from "./cgroups.js";
import { probeSandboxHost, type SandboxHostFacts } from "./host-facts.js";
import {
  JAIL_DEVICES,
  SandboxError,
  cgroupDirs,
  jailPaths,
  parseWorkerStatus,
  validateJailSpec,
  type JailSpec,
  type WorkerStatus,
} from "./jail.js";
import { workerSeccompProgram } from "./seccomp-filter.js";

const execFileAsync = promisify(execFile);

/** A prepared jail; `cleanup()` undoes it once the worker has exited. */
export interface PreparedJail {
  /** Kills anything left in the worker's cgroups, removes them, restores file owners, removes device nodes. Idempotent. */
  cleanup(): Promise<void>;
}

/** Original owners of files handed to the worker, kept in the root-only control directory. */
interface OwnerRecord {
  readonly path: string;
  readonly uid: number;
  readonly gid: number;
}

const OWNERS_FILE = "owners.json";

/** A file the worker may read: world-readable files need nothing. */
function worldReadable(mode: number): boolean {
  return (mode & 0o004) !== 0;
}

/**
 * Removes what a previous worker left in the run directory: entries owned by anyone but
 * root (its sockets, and any link it planted to make root write elsewhere). Not followed.
 * Never a VM file the spec binds (a disk may live in the run directory; after a crash it
 * may still be owned by the old uid until its owner is restored).
 */
async function scrubRunDir(spec: JailSpec): Promise<void> {
  const keep = (path: string): boolean =>
    spec.binds.some((bind) => bind.hostPath === path || bind.hostPath.startsWith(`${path}/`));
  for (const name of await readdir(spec.runDir)) {
    const path = posix.join(spec.runDir, name);
    if (keep(path)) continue;
    const info = await lstat(path);
    if (info.uid !== 0 || name === ".jail") await rm(path, { recursive: true, force: true });
  }
}

async function makeDeviceNode(
  path: string,
  device: keyof typeof JAIL_DEVICES,
  spec: JailSpec,
): Promise<void> {
  const { major, minor } = JAIL_DEVICES[device];
  await execFileAsync("mknod", ["-m", "0600", path, "c", String(major), String(minor)], {
    env: { PATH: "/usr/bin:/bin" },
  });
  await chown(path, spec.uid, spec.gid);
}

/**
 * Gives the worker's uid access to its binds, like libvirt's DAC relabelling: writable
 * binds and read-only binds that are not world-readable become owned by the worker
 * (a read-only bind stays read-only: the mount is read-only, chmod included). The
 * original owners are recorded and restored by cleanup.
 */
async function grantBinds(spec: JailSpec, ownersFile: string): Promise<void> {
  const records: OwnerRecord[] = [];
  for (const bind of spec.binds) {
    const info = await lstat(bind.hostPath).catch((error: unknown) => {
      throw new SandboxError(`Jail bind ${bind.hostPath} cannot be read`, "sandbox.bind", { cause: error });
    });
    if (info.isSymbolicLink())
      throw new SandboxError(
        `Jail bind ${bind.hostPath} is a symbolic link: bind its target`,
        "sandbox.bind",
      );
    const readable = info.isDirectory()
      ? worldReadable(info.mode) && (info.mode & 0o001) !== 0
      : worldReadable(info.mode);
    if (bind.readonly && readable) continue;
    if (info.uid === spec.uid && info.gid === spec.gid) continue;
    records.push({ path: bind.hostPath, uid: info.uid, gid: info.gid });
    // Written before the change, so a crash in between still restores it.
    await writeFile(ownersFile, JSON.stringify(records), { mode: 0o600 });
    await chown(bind.hostPath, spec.uid, spec.gid);
    if ((info.mode & 0o600) !== 0o600 && !bind.readonly) await chmod(bind.hostPath, info.mode | 0o600);
  }
}

async function restoreOwners(ownersFile: string): Promise<void> {
  let records: OwnerRecord[];
  try {
    records = JSON.parse(await readFile(ownersFile, "utf8")) as OwnerRecord[];
  } catch {
    return;
  }
  for (const record of records) {
    try {
      // lstat first: never chown through a link.
      if (!(await lstat(record.path)).isSymbolicLink()) await chown(record.path, record.uid, record.gid);
    } catch {
      // The file is gone: nothing to restore.
    }
  }
  await rm(ownersFile, { force: true });
}

/**
 * Undoes a jail from its files alone (after a service restart): removes its cgroups
 * (killing what is left in them), restores owners, removes device nodes and the seccomp
 * program. Keeps the status file so the exit code can still be read.
 */
export async function cleanupJail(spec: JailSpec, host: SandboxHostFacts): Promise<void> {
  const paths = jailPaths(spec.runDir);
  await removeCgroups(cgroupDirs(spec, host));
  if (existsSync(paths.controlDir) && !(await lstat(paths.controlDir)).isSymbolicLink()) {
    await restoreOwners(posix.join(paths.controlDir, OWNERS_FILE));
    for (const node of Object.values(paths.deviceNodes)) await rm(node, { force: true });
    await rm(paths.seccompFile, { force: true });
  }
}

/**
 * Prepares a worker's jail: run directory (root:gid 1770, scrubbed of a previous
 * worker's entries), `<runDir>/.jail/` (root 0755) with a fresh status file, the seccomp
 * program and the device nodes the spec lists (owned by the worker), access to its binds,
 * and its cgroups with their limits. Idempotent; call before spawning `jailArgv()`.
 * When not root, only the directories and files this user can make.
 *
 * @throws {SandboxError} for an invalid spec, a missing bind or a cgroup that cannot be set up.
 */
export async function prepareJail(
  spec: JailSpec,
  host: SandboxHostFacts = probeSandboxHost(spec.qemuBinary),
): Promise<PreparedJail> {
  validateJailSpec(spec);
  const paths = jailPaths(spec.runDir);
  await mkdir(spec.runDir, { recursive: true, mode: 0o700 });
  if ((await lstat(spec.runDir)).isSymbolicLink())
    throw new SandboxError(`Jail runDir ${spec.runDir} is a symbolic link`);
  const previous = await lstat(paths.controlDir).catch(() => null);
  // A previous preparation of this jail: undo its owner changes before making a new one.
  if (previous?.isDirectory() === true && previous.uid === (process.getuid?.() ?? 0))
    await restoreOwners(posix.join(paths.controlDir, OWNERS_FILE));
  if (host.root) {
    await scrubRunDir(spec);
    await chown(spec.runDir, 0, spec.gid);
    // Sticky: the worker creates its sockets here but cannot remove or replace root's files.
    await chmod(spec.runDir, 0o1770);
  } else {
    await rm(paths.controlDir, { recursive: true, force: true });
  }
  await mkdir(paths.controlDir, { mode: 0o755 });
  await chmod(paths.controlDir, 0o755);
  const status = await open(
    paths.statusFile,
    constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW,
    0o644,
  );
  await status.close();
  await writeFile(paths.seccompFile, workerSeccompProgram(), { mode: 0o644 });
  if (host.root) {
    for (const device of spec.devices) await makeDeviceNode(paths.deviceNodes[device], device, spec);
    await grantBinds(spec, posix.join(paths.controlDir, OWNERS_FILE));
    await createCgroups(spec, host);
  }
  let cleaned = false;
  return {
    async cleanup(): Promise<void> {
      if (cleaned) return;
      await cleanupJail(spec, host);
      cleaned = true;
    },
  };
}

/** Reads a jail's status file (`parseWorkerStatus`); an empty status when it is missing. */
export async function readWorkerStatus(runDir: string): Promise<WorkerStatus> {
  try {
    return parseWorkerStatus(await readFile(jailPaths(runDir).statusFile, "utf8"));
  } catch {
    return parseWorkerStatus("");
  }
}
