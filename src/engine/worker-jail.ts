/**
 * The worker's jail, from the VM's spec and policy: which files it may see, its uid, its
 * devices and limits. Joins the sandbox layer to the worker launch.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { workerResourceLimits, type CompiledPolicy } from "../policy/index.js";
import {
  allocateUid,
  planFavorDynmods,
  remountFavorDynmods,
  jailCommandArgv,
  jailedProgramPid,
  prepareJail,
  prepareRuntimeTree,
  probeSandboxHost,
  readWorkerStatus,
  releaseUid,
  sandboxGaps,
  type JailSpec,
  type PreparedJail,
  type SandboxHostFacts,
} from "../sandbox/index.js";
import type { Accel } from "./accel.js";
import type { WorkerPaths } from "./qemu-argv.js";
import type { VmSpec } from "./vm-spec.js";
import { readHostConfig } from "./placement.js";

/** What Worker.launch needs from a jail. */
export interface LaunchJail {
  /** Creates the jail's cgroups, control files and device nodes (after the run directory exists). */
  prepare(): Promise<void>;
  /** The command that runs `command` inside the jail. */
  wrap(command: readonly string[]): string[];
  /** QEMU's host pid, once the jail reported it. */
  qemuPid(): Promise<number | null>;
  /** Removes the cgroups and gives the uid back; idempotent. */
  cleanup(): Promise<void>;
  readonly description: string;
}

/** The jail's pure part: what the worker of `spec` may see and use. */
export function jailSpecFor(
  spec: VmSpec,
  paths: WorkerPaths,
  policy: CompiledPolicy,
  accel: Accel,
  uid: number,
  qemuBinary: string,
  detached: boolean,
): JailSpec {
  return {
    vmId: spec.name,
    uid,
    gid: uid,
    runDir: paths.runDir,
    binds: [
      { hostPath: spec.kernel, readonly: true },
      ...(spec.initrd === undefined ? [] : [{ hostPath: spec.initrd, readonly: true }]),
      ...spec.disks.map((disk) => ({ hostPath: disk.path, readonly: disk.readonly })),
    ],
    devices: accel === "kvm" ? ["kvm"] : [],
    // QEMU's user-mode network opens host sockets itself: the one case the worker keeps
    // the host's network namespace (the policy says whether it is allowed).
    shareHostNetwork: spec.nics.some((nic) => nic.kind === "user"),
    limits: workerResourceLimits(policy, spec),
    qemuBinary,
    dieWithParent: !detached,
  };
}

/**
 * The jail for a worker, or null with the reason when the policy turns the sandbox off
 * or the host cannot build one (not root, bubblewrap missing).
 */
export async function planWorkerJail(
  spec: VmSpec,
  paths: WorkerPaths,
  policy: CompiledPolicy,
  accel: Accel,
  qemuBinary: string,
  detached: boolean,
  stateDir: string,
): Promise<{ jail: LaunchJail | null; gaps: string[]; hostChange?: string }> {
  if (!policy.sandboxEnabled) return { jail: null, gaps: ["the partition policy turns the sandbox off (sandbox.enabled)"] };
  const probed = sandboxHostFacts(qemuBinary, stateDir);
  const gaps = sandboxGaps(probed);
  if (!probed.root || probed.bwrap === null || probed.setpriv === null) return { jail: null, gaps };
  const hostChange = probed.cgroups.version === "none" ? null : tuneCgroups(stateDir);
  const host = await withRuntimeTree(probed, qemuBinary, stateDir);
  // Claims are keyed by the VM's uuid: names are unique per run root, not per host.
  const uid = await allocateUid(spec.uuid, stateDir);
  const jailSpec = jailSpecFor(spec, paths, policy, accel, uid, qemuBinary, detached);
  let prepared: PreparedJail | null = null;
  let released = false;
  return {
    gaps,
    ...(hostChange === null ? {} : { hostChange }),
    jail: {
      description: `uid ${uid}, own mount/pid/ipc/uts${jailSpec.shareHostNetwork ? "" : "/net"}/cgroup namespaces, seccomp, ${jailSpec.limits.pids} tasks, ${jailSpec.limits.memoryBytes >> 20n} MiB`,
      async prepare() {
        prepared = await prepareJail(jailSpec, host);
      },
      wrap: (command) => jailCommandArgv(jailSpec, command, host),
      async qemuPid() {
        // bwrap's child is QEMU itself for a detached jail, but for an attached one it is
        // bwrap's reaper (pid 1 of the jail) with QEMU below it: look for the program.
        const jailPid = (await readWorkerStatus(paths.runDir)).childPid;
        return jailPid === undefined ? null : (jailedProgramPid(jailPid, qemuBinary) ?? jailPid);
      },
      async cleanup() {
        await prepared?.cleanup();
        if (!released) {
          released = true;
          await releaseUid(spec.uuid, stateDir);
        }
      },
    },
  };
}

/**
 * Turns on cgroup2's `favordynmods` (sandbox/cgroup-tuning.ts: each worker's cgroup join
 * then skips an RCU grace period, ~13 ms of every start) unless /etc/palisade/host.json
 * says `"cgroupFavorDynmods": false`. Costs one read of the mount table when it is on. A
 * host where it cannot be had (no cgroup2, an old kernel, a cgroup namespace) is told
 * once and not asked again until it reboots (a marker keyed by boot id). Returns the line
 * for the user when the host was changed or refused, else null; never throws.
 */
function tuneCgroups(stateDir: string): string | null {
  const marker = join(stateDir, "favordynmods-unavailable");
  const read = (path: string): string | null => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return null;
    }
  };
  const mountinfo = read("/proc/self/mountinfo");
  if (mountinfo === null) return null;
  const bootId = read("/proc/sys/kernel/random/boot_id")?.trim() ?? "";
  const plan = planFavorDynmods(mountinfo, readHostConfig().cgroupFavorDynmods, read(marker), bootId);
  if (plan.kind === "nothing") return null;
  const change = remountFavorDynmods(plan.mountPoint, mountinfo, () => readFileSync("/proc/self/mountinfo", "utf8"));
  if (change.kind === "enabled")
    return `host: turned on favordynmods on ${change.mountPoint}, so workers join their cgroups without waiting for an RCU grace period (host-wide until reboot; "cgroupFavorDynmods": false in /etc/palisade/host.json keeps it off)`;
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(marker, `${bootId}\n${change.reason}\n`, { mode: 0o600 });
  } catch {
    // Without the marker the next start asks again: slower, not wrong.
  }
  return `host: favordynmods stays off (${change.reason}); workers start ~13 ms slower, nothing else changes`;
}

/**
 * The host facts with the runtime tree (QEMU, its libraries and firmware hard-linked into
 * one directory) that jails bind as three mounts instead of ~60. bwrap re-reads the mount
 * table for every read-only bind, so per-file binds cost ~0.3 s per start under load.
 * Checked on every start (one stat per file): a package upgrade changes an inode, which
 * names a new tree, so a worker never runs a library that apt has replaced. If the tree
 * cannot be built (disk full), the jail binds the host's files one by one, as before.
 */
async function withRuntimeTree(host: SandboxHostFacts, qemuBinary: string, stateDir: string): Promise<SandboxHostFacts> {
  try {
    return await prepareRuntimeTree(host, qemuBinary, stateDir);
  } catch {
    return host;
  }
}

/**
 * The sandbox's host probe, cached in `stateDir`: the probe runs ldd three times and QEMU
 * once (~0.3 s), and its answer only changes when QEMU, the tools or the mounts do.
 */
export function sandboxHostFacts(qemuBinary: string, stateDir: string): SandboxHostFacts {
  const key = createHash("sha256")
    .update(JSON.stringify([qemuBinary, process.getuid?.(), ...[qemuBinary, "/usr/bin/bwrap", "/usr/bin/setpriv"].map(fileStamp)]))
    .update(cgroupMounts())
    .update(readFileSync("/proc/self/cgroup"))
    .digest("hex");
  const file = join(stateDir, "host-facts.json");
  try {
    const cached = JSON.parse(readFileSync(file, "utf8")) as { key: string; facts: SandboxHostFacts };
    if (cached.key === key && (cached.facts.runtimeTree === null || existsSync(cached.facts.runtimeTree.root))) return cached.facts;
  } catch {
    // No cache yet, or a broken one: probe.
  }
  const facts = probeSandboxHost(qemuBinary);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(`${file}.tmp`, JSON.stringify({ key, facts }), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  } catch {
    // A cache we cannot write only costs the next start the probe.
  }
  return facts;
}

/**
 * The mount table's cgroup lines: the only mounts the probe's answer depends on. (Keying
 * on the whole table missed the cache whenever anything on the host mounted anything,
 * and the probe then cost every start ~0.2 s.)
 */
function cgroupMounts(): string {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((line) => / - cgroup2? /.test(line))
    .join("\n")
    // Turning favordynmods on (tuneCgroups) changes nothing the probe found.
    .replaceAll(",favordynmods", "");
}

function fileStamp(path: string): string {
  try {
    const stat = statSync(path);
    return `${path}:${stat.size}:${stat.mtimeMs}:${stat.ino}`;
  } catch {
    return `${path}:missing`;
  }
}

/**
 * Where the sandbox keeps its uid claims, host probe and runtime trees: one directory for
 * the whole host (`PALISADE_SANDBOX_DIR`, else `/run/palisade/sandbox` as root), whatever
 * run root a VM uses. The service, `palisade run` and tests each had a pool beside their
 * own run root, over the same uid range: two running VMs could be handed one uid, kept
 * apart only by "no process runs as it yet". Unprivileged runs never jail; their state
 * stays beside their run root.
 */
export function sandboxStateDir(runRoot: string): string {
  const configured = process.env.PALISADE_SANDBOX_DIR;
  if (configured !== undefined && configured !== "") return configured;
  return process.getuid?.() === 0 ? "/run/palisade/sandbox" : join(runRoot, "..", "sandbox");
}
