/**
 * The worker's jail as a command line: `jailArgv()` turns a {@link JailSpec} and QEMU's
 * arguments into the argv to spawn so that QEMU runs inside its jail. Pure: the host is
 * described by {@link SandboxHostFacts}, the files the argv relies on are made by
 * `prepareJail()`. The mechanism and its reasons are in docs/design/sandbox.md.
 */
import { posix } from "node:path";
import { PalisadeError } from "../util/errors.js";
import type { SandboxHostFacts } from "./host-facts.js";
import { runtimeTreeTops, type RuntimeTree } from "./runtime-tree.js";
import { byCodeUnits } from "../util/order.js";

/** A jail spec or host that cannot be jailed safely; `code` says which. */
export class SandboxError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code = "sandbox.invalid-spec", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** A host file or directory the worker needs, bound at the SAME path inside the jail. */
export interface JailBind {
  readonly hostPath: string;
  readonly readonly: boolean;
}

/** Host devices a worker may be given. */
export type JailDevice = "kvm" | "net-tun";

/** Everything that makes one worker's jail. */
export interface JailSpec {
  /** The VM's id: names its cgroups; `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`. */
  readonly vmId: string;
  /** The worker's own uid and gid (from `allocateUid()`), never 0, never shared with another running VM. */
  readonly uid: number;
  readonly gid: number;
  /**
   * Host directory bound read-write at the same path inside the jail: QMP and console
   * sockets live there. `prepareJail()` makes it root:gid mode 1770 and creates
   * `<runDir>/.jail/` (root-owned: status file, seccomp program, device nodes).
   */
  readonly runDir: string;
  /** Kernel, initrd, disks: bound at the same path, so the QEMU argv needs no translation. */
  readonly binds: readonly JailBind[];
  readonly devices: readonly JailDevice[];
  /** Share the host's network namespace: only for QEMU user-mode networking. */
  readonly shareHostNetwork: boolean;
  /**
   * A network namespace prepared for this VM (e.g. `/run/netns/palisade-a`, holding only
   * its TAP devices) that the worker joins instead of a new, empty one.
   */
  readonly netnsPath?: string;
  readonly limits: {
    /** Guest RAM plus overhead; exceeding it kills the worker (cgroup OOM). */
    readonly memoryBytes: bigint;
    /** Tasks (processes + threads): cgroup pids.max and RLIMIT_NPROC of the worker's uid. */
    readonly pids: number;
    /** CPU in percent of one host CPU; absent = no CPU limit. */
    readonly cpuPercent?: number;
    /** RLIMIT_NOFILE. */
    readonly openFiles: number;
    /** Relative I/O weight (1–10000, cgroup v2 scale), where the host supports it. */
    readonly ioWeight?: number;
  };
  readonly qemuBinary: string;
  /** Kill the worker when the process that spawned it dies (an attached `palisade run`); default false (detached). */
  readonly dieWithParent?: boolean;
}

/**
 * QEMU's own seccomp switches, every deniable group denied; the engine appends these to
 * the QEMU argv. Palisade's filter (`seccomp-filter.ts`) stacks under it.
 */
export const QEMU_SECCOMP_ARGS: readonly string[] = Object.freeze([
  "-sandbox",
  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
]);

/** Files `prepareJail()` makes for a jail, all in the root-owned `<runDir>/.jail/`. */
export interface JailPaths {
  readonly controlDir: string;
  /** bwrap's `--json-status-fd` output: `{"child-pid": N, …}` then `{"exit-code": N}`. */
  readonly statusFile: string;
  /** The worker seccomp program (`seccomp-filter.ts`), read by bwrap. */
  readonly seccompFile: string;
  /** Per-VM device nodes, owned by the worker's uid, bound over `/dev/kvm` and `/dev/net/tun`. */
  readonly deviceNodes: Readonly<Record<JailDevice, string>>;
}

/** Where a jail's control files live (`<runDir>/.jail/…`); pure. */
export function jailPaths(runDir: string): JailPaths {
  const controlDir = posix.join(runDir, ".jail");
  return {
    controlDir,
    statusFile: posix.join(controlDir, "worker-status.json"),
    seccompFile: posix.join(controlDir, "seccomp.bpf"),
    deviceNodes: { kvm: posix.join(controlDir, "kvm"), "net-tun": posix.join(controlDir, "net-tun") },
  };
}

/** Where each device appears inside the jail, and its host major:minor (Documentation/admin-guide/devices.txt). */
export const JAIL_DEVICES: Readonly<
  Record<JailDevice, { readonly path: string; readonly major: number; readonly minor: number }>
> = {
  kvm: { path: "/dev/kvm", major: 10, minor: 232 },
  "net-tun": { path: "/dev/net/tun", major: 10, minor: 200 },
};

const VM_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Paths that never go into a jail by a bind: the jail makes its own. (`/tmp` is allowed: binds land on the jail's tmpfs.) */
const FORBIDDEN_PREFIXES = ["/proc", "/dev", "/sys"];

function checkPath(path: string, what: string): void {
  if (
    !path.startsWith("/") ||
    posix.normalize(path) !== path ||
    path === "/" ||
    path.endsWith("/") ||
    /[\0\n]/.test(path)
  ) {
    throw new SandboxError(`Jail ${what} "${path}" must be an absolute, normalized path other than /`);
  }
  if (FORBIDDEN_PREFIXES.some((prefix) => path === prefix || path.startsWith(`${prefix}/`))) {
    throw new SandboxError(
      `Jail ${what} "${path}" is under ${path.split("/")[1] ?? ""}, which the jail makes itself`,
    );
  }
}

/**
 * Checks a spec before anything is built from it.
 *
 * @throws {SandboxError} naming the field at fault.
 */
export function validateJailSpec(spec: JailSpec): void {
  if (!VM_ID.test(spec.vmId) || spec.vmId === "." || spec.vmId === "..")
    throw new SandboxError(`Jail vmId "${spec.vmId}" must match ${VM_ID.source}`);
  for (const [name, id] of [
    ["uid", spec.uid],
    ["gid", spec.gid],
  ] as const) {
    if (!Number.isInteger(id) || id <= 0 || id >= 0xffffffff)
      throw new SandboxError(`Jail ${name} ${id} must be an unprivileged id (1 … 4294967294)`);
  }
  checkPath(spec.runDir, "runDir");
  checkPath(spec.qemuBinary, "qemuBinary");
  for (const bind of spec.binds) {
    checkPath(bind.hostPath, "bind");
    if (bind.hostPath === spec.runDir || bind.hostPath.startsWith(`${spec.runDir}/.jail`))
      throw new SandboxError(`Jail bind "${bind.hostPath}" overlaps the run directory's control files`);
  }
  if (spec.netnsPath !== undefined) checkPath(spec.netnsPath, "netnsPath");
  if (spec.netnsPath !== undefined && spec.shareHostNetwork)
    throw new SandboxError("Jail cannot both share the host network and join a prepared network namespace");
  const { limits } = spec;
  if (limits.memoryBytes < 16n * 1024n * 1024n)
    throw new SandboxError(`Jail memory limit ${limits.memoryBytes} bytes is below 16 MiB`);
  if (!Number.isInteger(limits.pids) || limits.pids < 1)
    throw new SandboxError(`Jail pids limit ${limits.pids} must be a positive integer`);
  if (!Number.isInteger(limits.openFiles) || limits.openFiles < 16)
    throw new SandboxError(`Jail openFiles limit ${limits.openFiles} must be an integer ≥ 16`);
  if (limits.cpuPercent !== undefined && (!Number.isInteger(limits.cpuPercent) || limits.cpuPercent < 1))
    throw new SandboxError(`Jail cpuPercent ${limits.cpuPercent} must be a positive integer`);
  if (
    limits.ioWeight !== undefined &&
    (!Number.isInteger(limits.ioWeight) || limits.ioWeight < 1 || limits.ioWeight > 10000)
  )
    throw new SandboxError(`Jail ioWeight ${limits.ioWeight} must be 1 … 10000`);
}

/** The cgroup directories of a worker, one per controller hierarchy (`<base>/palisade/<vmId>`); pure. */
export function cgroupDirs(spec: Pick<JailSpec, "vmId">, host: SandboxHostFacts): string[] {
  if (!host.root) return [];
  switch (host.cgroups.version) {
    case "none":
      return [];
    case "v2":
      return [posix.join(host.cgroups.base, "palisade", spec.vmId)];
    case "v1":
      return Object.values(host.cgroups.controllers).map((base) => posix.join(base, "palisade", spec.vmId));
  }
}

/**
 * The prefix every jailed command starts with: a POSIX shell that moves itself into the
 * worker's cgroups (so every later process, QEMU included, is born inside them), opens
 * the status file on fd 3 and the seccomp program on fd 4, then execs the rest. Arguments
 * are passed as positional parameters, never pasted into the script.
 */
const PREFIX_SCRIPT = [
  'n="$1"; shift',
  'while [ "$n" -gt 0 ]; do echo "$$" > "$1/cgroup.procs" || exit 125; shift; n=$((n - 1)); done',
  'if [ "$1" != - ]; then exec 3>>"$1" || exit 125; fi',
  'if [ "$2" != - ]; then exec 4<"$2" || exit 125; fi',
  "shift 2",
  'exec "$@"',
].join("\n");

/** Every ancestor directory of `paths`, parents first, excluding `/` and the paths themselves; pure. */
function ancestorDirs(paths: readonly string[]): string[] {
  const targets = new Set(paths);
  const dirs = new Set<string>();
  for (const path of paths) {
    for (let dir = posix.dirname(path); dir !== "/"; dir = posix.dirname(dir)) {
      if (!targets.has(dir)) dirs.add(dir);
    }
  }
  return [...dirs]
    .filter((dir) => dir !== "/tmp")
    .sort((a, b) => a.split("/").length - b.split("/").length || byCodeUnits(a, b));
}

/**
 * The runtime tree, when the jail can use it: every other mount must land outside the
 * tree's top directories (a read-only bind cannot take new mount points), and so must the
 * program unless the tree holds it. Pure.
 */
function usableTree(
  host: SandboxHostFacts,
  otherMounts: readonly string[],
  program: string,
): RuntimeTree | null {
  const tree = host.runtimeTree;
  if (tree === null) return null;
  const tops = runtimeTreeTops(tree);
  const inside = (path: string): boolean => tops.some((top) => path === top || path.startsWith(`${top}/`));
  if (otherMounts.some(inside)) return null;
  if (!tree.files.includes(program) && inside(program)) return null;
  return tree;
}

/**
 * The argv that runs `command` (program + arguments) in the worker's jail: what
 * {@link jailArgv} runs QEMU with, and what the hostile tests run a shell with.
 *
 * @throws {SandboxError} when the spec is invalid, or the host is root without setpriv
 *   (QEMU would keep every capability).
 */
export function jailCommandArgv(
  spec: JailSpec,
  command: readonly string[],
  host: SandboxHostFacts,
): string[] {
  validateJailSpec(spec);
  if (command.length === 0) throw new SandboxError("Jail command is empty");
  if (host.root && host.setpriv === null)
    throw new SandboxError(
      "setpriv (util-linux) is missing: refusing to run a worker as root",
      "sandbox.host-missing",
    );
  const paths = jailPaths(spec.runDir);
  const useBwrap = host.bwrap !== null;
  const seccomp = useBwrap && host.arch === "x64";
  const cgroups = cgroupDirs(spec, host);
  const argv = [
    host.shell,
    "-c",
    PREFIX_SCRIPT,
    "palisade-jail",
    String(cgroups.length),
    ...cgroups,
    useBwrap ? paths.statusFile : "-",
    seccomp ? paths.seccompFile : "-",
  ];
  if (spec.netnsPath !== undefined && host.nsenter !== null)
    argv.push(host.nsenter, `--net=${spec.netnsPath}`, "--");
  if (host.prlimit !== null) {
    // RLIMIT_NPROC counts every task of the worker's uid: a second pids limit that holds without cgroups.
    argv.push(host.prlimit, `--nofile=${spec.limits.openFiles}:${spec.limits.openFiles}`, "--core=0:0");
    if (host.root) argv.push(`--nproc=${spec.limits.pids}:${spec.limits.pids}`);
    argv.push("--");
  }
  const dropPrivileges =
    host.root && host.setpriv !== null
      ? [
          host.setpriv,
          `--reuid=${spec.uid}`,
          `--regid=${spec.gid}`,
          "--clear-groups",
          "--inh-caps=-all",
          "--bounding-set=-all",
          "--no-new-privs",
          // The kernel clears the parent-death signal bwrap set (--die-with-parent) when
          // the uid changes; setpriv sets it again after the drop, or an attached worker
          // would outlive a killed `palisade run`.
          ...(spec.dieWithParent === true ? ["--pdeathsig", "SIGKILL"] : []),
          "--",
        ]
      : [];
  if (host.bwrap === null) return [...argv, ...dropPrivileges, ...command];

  argv.push(
    host.bwrap,
    "--new-session",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup",
  );
  if (!spec.shareHostNetwork && spec.netnsPath === undefined) argv.push("--unshare-net");
  if (!host.root) argv.push("--unshare-user", "--disable-userns");
  // A pid namespace's init ignores the parent-death signal, so a worker that must die with
  // its parent runs under bwrap's own init (as pid 2); a detached one is the jail's pid 1.
  if (spec.dieWithParent !== true) argv.push("--as-pid-1");
  argv.push("--clearenv", "--hostname", "palisade-worker", "--json-status-fd", "3");
  if (seccomp) argv.push("--seccomp", "4");
  if (spec.dieWithParent === true) argv.push("--die-with-parent");

  const program = command[0] ?? "";
  const readonlyBinds = spec.binds.filter((bind) => bind.readonly).map((bind) => bind.hostPath);
  const writableBinds = spec.binds.filter((bind) => !bind.readonly).map((bind) => bind.hostPath);
  const tree = usableTree(host, [spec.runDir, ...readonlyBinds, ...writableBinds], program);
  // Tree mode: its top directories (+ the program when the tree lacks it); else every file.
  const treeMounts = tree === null ? [] : runtimeTreeTops(tree);
  const readonlyFiles: string[] =
    tree === null
      ? [
          ...new Set([
            ...host.runtimeFiles,
            ...(host.root && host.setpriv !== null ? [host.setpriv] : []),
            spec.qemuBinary,
            program,
          ]),
        ].filter((path) => path !== "")
      : tree.files.includes(program)
        ? []
        : [program];
  const firmwareDirs = tree === null ? host.firmwareDirs : [];
  // User-mode networking resolves names for the guest with the host's resolvers.
  if (spec.shareHostNetwork && host.resolvConf !== undefined && host.resolvConf !== null)
    readonlyFiles.push(host.resolvConf);
  const mountTargets = [
    ...treeMounts,
    ...readonlyFiles,
    ...firmwareDirs,
    spec.runDir,
    ...readonlyBinds,
    ...writableBinds,
  ];

  argv.push(
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--perms",
    "01777",
    "--size",
    String(16 * 1024 * 1024),
    "--tmpfs",
    "/tmp",
  );
  for (const top of treeMounts) argv.push("--ro-bind", posix.join(tree?.root ?? "", top), top);
  for (const dir of ancestorDirs(mountTargets)) argv.push("--perms", "0755", "--dir", dir);
  for (const file of readonlyFiles) argv.push("--ro-bind", file, file);
  for (const dir of firmwareDirs) argv.push("--ro-bind", dir, dir);
  argv.push("--bind", spec.runDir, spec.runDir);
  // Sorted, so a bind inside another bind is mounted after it.
  const binds = [...spec.binds].sort((a, b) => byCodeUnits(a.hostPath, b.hostPath));
  for (const bind of binds) argv.push(bind.readonly ? "--ro-bind" : "--bind", bind.hostPath, bind.hostPath);
  for (const device of spec.devices) {
    const jailPath = JAIL_DEVICES[device].path;
    if (posix.dirname(jailPath) !== "/dev") argv.push("--perms", "0755", "--dir", posix.dirname(jailPath));
    // As root, a per-VM node owned by the worker's uid (prepareJail); otherwise the host's node.
    argv.push("--dev-bind", host.root ? paths.deviceNodes[device] : jailPath, jailPath);
  }
  argv.push("--chdir", "/", "--");
  return [...argv, ...dropPrivileges, ...command];
}

/**
 * The argv to spawn so that QEMU runs inside its jail. `qemuArgv` is QEMU's arguments
 * WITHOUT the binary (`spec.qemuBinary` is prepended); it should end with
 * {@link QEMU_SECCOMP_ARGS}. Spawn it with an empty environment and only stdin/out/err
 * (the jail clears the environment too); the status lands in `jailPaths(runDir).statusFile`.
 *
 * @throws {SandboxError} see {@link jailCommandArgv}.
 * @example
 * spawn(argv[0], argv.slice(1), { env: {}, stdio: ["ignore", "ignore", "pipe"], detached: true })
 */
export function jailArgv(spec: JailSpec, qemuArgv: readonly string[], host: SandboxHostFacts): string[] {
  return jailCommandArgv(spec, [spec.qemuBinary, ...qemuArgv], host);
}

/** What bwrap reported about a worker (`--json-status-fd`). */
export interface WorkerStatus {
  /**
   * Host pid of the jail's first process: QEMU itself when the jail runs it as its pid 1
   * (detached workers), bwrap's reaper above it otherwise (`jailedProgramPid` finds QEMU).
   */
  readonly childPid?: number;
  /** The worker's exit code, once it has exited (128 + signal when killed by a signal). */
  readonly exitCode?: number;
  /** Namespace inode numbers of the jail, by kind (`mnt`, `pid`, `net`, …). */
  readonly namespaces: Readonly<Record<string, number>>;
}

/**
 * Parses the status file's JSON documents; pure. Unknown or malformed parts are ignored
 * (the file is written only by bwrap, running as root, outside the jail).
 */
export function parseWorkerStatus(text: string): WorkerStatus {
  let childPid: number | undefined;
  let exitCode: number | undefined;
  const namespaces: Record<string, number> = {};
  for (const match of text.matchAll(/\{[^{}]*\}/g)) {
    let document: unknown;
    try {
      document = JSON.parse(match[0]);
    } catch {
      continue;
    }
    if (typeof document !== "object" || document === null) continue;
    for (const [key, value] of Object.entries(document)) {
      if (typeof value !== "number" || !Number.isSafeInteger(value)) continue;
      if (key === "child-pid") childPid = value;
      else if (key === "exit-code") exitCode = value;
      else if (key.endsWith("-namespace")) namespaces[key.slice(0, -"-namespace".length)] = value;
    }
  }
  return {
    ...(childPid === undefined ? {} : { childPid }),
    ...(exitCode === undefined ? {} : { exitCode }),
    namespaces,
  };
}
