/**
 * What the host offers for sandboxing workers, probed once at the edge
 * (`probeSandboxHost()`) and passed around as a value, so `jailArgv()` stays pure and
 * tests describe a host with a literal.
 */
import { execFileSync } from "node:child_process";
import {
  existsSync,
  readFileSync,
  readdirSync,
  realpathSync,
  statSync,
  accessSync,
  constants,
} from "node:fs";
import { dirname, join } from "node:path";
import type { RuntimeTree } from "./runtime-tree.js";

/** Where the worker cgroups go, per cgroup version; each base gets `palisade/<vmId>` below it. */
export type CgroupLayout =
  | {
      readonly version: "v1";
      /** Base directory per v1 controller that is mounted and usable, e.g. `{ memory: "/sys/fs/cgroup/memory/x" }`. */
      readonly controllers: Readonly<Partial<Record<CgroupV1Controller, string>>>;
    }
  | {
      readonly version: "v2";
      /** Base directory in the unified hierarchy (the prober's own cgroup's parent). */
      readonly base: string;
      /** Controllers the base may enable for its children (`cgroup.controllers`). */
      readonly controllers: readonly string[];
    }
  | { readonly version: "none" };

/** v1 controllers Palisade uses. */
export type CgroupV1Controller = "memory" | "pids" | "cpu" | "blkio";

/** The sandboxing facts of a host. */
export interface SandboxHostFacts {
  /** The process preparing jails is root (uid 0 with CAP_SYS_ADMIN): the full jail is possible. */
  readonly root: boolean;
  /** Absolute paths of the helper programs, or null when missing. */
  readonly bwrap: string | null;
  readonly setpriv: string | null;
  readonly prlimit: string | null;
  readonly nsenter: string | null;
  /** The POSIX shell that runs the jail's prefix (joins cgroups, opens the status and filter fds). */
  readonly shell: string;
  /** Files bound read-only into every jail: QEMU's and setpriv's shared libraries and ELF interpreter, QEMU's accelerator modules. */
  readonly runtimeFiles: readonly string[];
  /** Directories bound read-only: QEMU's firmware and ROMs (`/usr/share/qemu` and where its links point). */
  readonly firmwareDirs: readonly string[];
  readonly cgroups: CgroupLayout;
  /**
   * The prepared runtime tree (`prepareRuntimeTree()`): when set, jails bind its few
   * top-level directories instead of each runtime file and firmware directory.
   */
  readonly runtimeTree: RuntimeTree | null;
  /**
   * The host's resolver configuration, bound read-only into jails that share the host
   * network: QEMU's user-mode networking (libslirp) forwards the guest's DNS to the
   * servers it names. Absent or null: not bound.
   */
  readonly resolvConf?: string | null;
  /** The CPU architecture: the seccomp filter is written for x86-64 only. */
  readonly arch: string;
}

/** `ldd` output → the absolute paths of the libraries and the ELF interpreter; pure. */
export function parseLdd(text: string): string[] {
  const paths = new Set<string>();
  for (const line of text.split("\n")) {
    const arrow = /=>\s+(\/\S+)\s+\(/.exec(line);
    const direct = /^\s*(\/\S+)\s+\(/.exec(line);
    const path = arrow?.[1] ?? direct?.[1];
    if (path !== undefined) paths.add(path);
  }
  return [...paths];
}

/**
 * `/proc/self/cgroup` and `/proc/self/mountinfo` → the worker cgroup layout; pure.
 * v2 is used when the unified hierarchy offers the memory and pids controllers; otherwise
 * v1 controllers that are mounted; otherwise none. Bases nest under the prober's own
 * cgroups, so workers stay inside whatever limits the service itself runs under.
 */
export function parseCgroupLayout(
  selfCgroup: string,
  mountinfo: string,
  v2Controllers: (dir: string) => string[],
): CgroupLayout {
  const mounts: { point: string; fstype: string; options: string }[] = [];
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const point = left.split(" ")[4];
    const [fstype, , superOptions] = right.split(" ");
    if (point === undefined || fstype === undefined) continue;
    mounts.push({ point: point.replace(/\\040/g, " "), fstype, options: superOptions ?? "" });
  }
  const paths = new Map<string, string>();
  for (const line of selfCgroup.split("\n")) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (match?.[2] !== undefined && match[3] !== undefined) paths.set(match[2], match[3]);
  }
  const unified = mounts.find((mount) => mount.fstype === "cgroup2");
  const selfV2 = paths.get("");
  if (unified !== undefined && selfV2 !== undefined) {
    const own = join(unified.point, selfV2);
    const base = selfV2 === "/" ? own : dirname(own);
    const controllers = v2Controllers(base);
    if (controllers.includes("memory") && controllers.includes("pids"))
      return { version: "v2", base, controllers };
  }
  const controllers: Partial<Record<CgroupV1Controller, string>> = {};
  for (const controller of ["memory", "pids", "cpu", "blkio"] as const) {
    const mount = mounts.find(
      (candidate) => candidate.fstype === "cgroup" && candidate.options.split(",").includes(controller),
    );
    const own = [...paths].find(([names]) => names.split(",").includes(controller))?.[1];
    if (mount !== undefined && own !== undefined) controllers[controller] = join(mount.point, own);
  }
  return Object.keys(controllers).length > 0 ? { version: "v1", controllers } : { version: "none" };
}

function which(name: string, candidates: readonly string[]): string | null {
  return (
    candidates.find((path) => existsSync(path)) ??
    (existsSync(`/usr/bin/${name}`) ? `/usr/bin/${name}` : null)
  );
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

function lddPaths(binary: string): string[] {
  try {
    return parseLdd(execFileSync("ldd", [binary], { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } }));
  } catch {
    return [];
  }
}

/** QEMU's accelerator modules: TCG is a loadable module in Debian's build. */
function acceleratorModules(qemuBinary: string): string[] {
  const dirs = [
    "/usr/lib/x86_64-linux-gnu/qemu",
    "/usr/lib64/qemu",
    "/usr/lib/qemu",
    join(dirname(qemuBinary), "..", "lib", "qemu"),
  ];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    return readdirSync(dir)
      .filter((name) => /^accel-.*x86_64\.so$/.test(name))
      .map((name) => join(dir, name));
  }
  return [];
}

/**
 * QEMU's firmware search path (`qemu -L help`: `/usr/share/qemu`, SeaBIOS, iPXE on
 * Debian) plus every directory the links in it point into (qboot).
 */
function firmwareDirectories(qemuBinary: string): string[] {
  let searchPath: string[];
  try {
    searchPath = execFileSync(qemuBinary, ["-L", "help"], { encoding: "utf8", env: {}, timeout: 10_000 })
      .split("\n")
      .filter((line) => line.startsWith("/"));
  } catch {
    searchPath = ["/usr/share/qemu"];
  }
  const dirs = new Set<string>();
  for (const entry of searchPath) {
    let root: string;
    try {
      root = realpathSync(entry);
    } catch {
      continue;
    }
    dirs.add(root);
    for (const name of readdirSync(root)) {
      try {
        const real = realpathSync(join(root, name));
        if (!real.startsWith(`${root}/`) && statSync(real).isFile()) dirs.add(dirname(real));
      } catch {
        // A dangling link: nothing to bind.
      }
    }
  }
  return [...dirs].sort();
}

function isRoot(): boolean {
  if (process.getuid?.() !== 0) return false;
  const capEff = /^CapEff:\s+([0-9a-f]+)$/m.exec(readText("/proc/self/status"))?.[1];
  // CAP_SYS_ADMIN is bit 21.
  return capEff !== undefined && (BigInt(`0x${capEff}`) & (1n << 21n)) !== 0n;
}

/**
 * Probes the host: helper programs, QEMU's libraries (ldd), modules and firmware, the
 * cgroup layout. Reads files and runs `ldd`; call once and pass the value around.
 *
 * @param qemuBinary the QEMU the workers run.
 */
export function probeSandboxHost(qemuBinary = "/usr/bin/qemu-system-x86_64"): SandboxHostFacts {
  const setpriv = which("setpriv", ["/usr/bin/setpriv", "/bin/setpriv"]);
  const runtime = new Set<string>([...lddPaths(qemuBinary), ...(setpriv === null ? [] : lddPaths(setpriv))]);
  for (const module of acceleratorModules(qemuBinary)) {
    runtime.add(module);
    for (const library of lddPaths(module)) runtime.add(library);
  }
  const cgroups = parseCgroupLayout(readText("/proc/self/cgroup"), readText("/proc/self/mountinfo"), (dir) =>
    readText(join(dir, "cgroup.controllers"))
      .trim()
      .split(/\s+/)
      .filter((name) => name !== ""),
  );
  return {
    root: isRoot(),
    bwrap: which("bwrap", ["/usr/bin/bwrap", "/bin/bwrap"]),
    setpriv,
    prlimit: which("prlimit", ["/usr/bin/prlimit", "/bin/prlimit"]),
    nsenter: which("nsenter", ["/usr/bin/nsenter", "/bin/nsenter"]),
    shell: "/bin/sh",
    runtimeFiles: [...runtime].filter((path) => existsSync(path)).sort(),
    firmwareDirs: firmwareDirectories(qemuBinary),
    cgroups: usableCgroups(cgroups),
    runtimeTree: null,
    resolvConf: existsSync("/etc/resolv.conf") ? "/etc/resolv.conf" : null,
    arch: process.arch,
  };
}

/** Drops controllers whose base directory this process cannot write (not root, not delegated). */
function usableCgroups(layout: CgroupLayout): CgroupLayout {
  const writable = (dir: string): boolean => {
    try {
      accessSync(dir, constants.W_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (layout.version === "v2") return writable(layout.base) ? layout : { version: "none" };
  if (layout.version === "none") return layout;
  const controllers: Partial<Record<CgroupV1Controller, string>> = {};
  for (const [name, dir] of Object.entries(layout.controllers) as [CgroupV1Controller, string][]) {
    // blkio is only worth joining when it can weigh I/O (CFQ or BFQ).
    const weighs =
      name !== "blkio" || existsSync(join(dir, "blkio.weight")) || existsSync(join(dir, "blkio.bfq.weight"));
    if (writable(dir) && weighs) controllers[name] = dir;
  }
  return Object.keys(controllers).length > 0 ? { version: "v1", controllers } : { version: "none" };
}

/**
 * What the jail will lack on this host, one sentence each; empty when the full jail is
 * available. Pure. Shown by `palisade run --print-sandbox` and logged when a worker
 * starts with a partial jail.
 */
export function sandboxGaps(host: SandboxHostFacts): string[] {
  const gaps: string[] = [];
  if (host.bwrap === null)
    gaps.push(
      "bubblewrap (bwrap) is not installed: no namespaces, no private root, no seccomp filter beyond QEMU's -sandbox",
    );
  if (!host.root) {
    gaps.push(
      "not running as root: the worker keeps Palisade's uid (no per-VM uid) and gets namespaces only through an unprivileged user namespace",
    );
  } else if (host.setpriv === null) {
    gaps.push(
      "setpriv (util-linux) is not installed: the worker cannot drop to its own uid; refusing to jail as root",
    );
  }
  if (host.prlimit === null)
    gaps.push("prlimit (util-linux) is not installed: no open-file, process-count or core-dump rlimits");
  if (host.arch !== "x64")
    gaps.push(`the seccomp filter is written for x86-64, not ${host.arch}: only QEMU's -sandbox applies`);
  switch (host.cgroups.version) {
    case "none":
      gaps.push("no usable cgroup hierarchy: no memory, pids or CPU limits (only rlimits)");
      break;
    case "v1":
      for (const controller of ["memory", "pids", "cpu"] as const) {
        if (host.cgroups.controllers[controller] === undefined)
          gaps.push(
            `cgroup v1 controller "${controller}" is not mounted or not writable: no ${controller} limit`,
          );
      }
      if (host.cgroups.controllers.blkio === undefined)
        gaps.push('cgroup v1 controller "blkio" is not available: no I/O weight');
      break;
    case "v2":
      for (const controller of ["memory", "pids"] as const) {
        if (!host.cgroups.controllers.includes(controller))
          gaps.push(`cgroup v2 controller "${controller}" is not enabled: no ${controller} limit`);
      }
      if (!host.cgroups.controllers.includes("cpu"))
        gaps.push('cgroup v2 controller "cpu" is not enabled: no CPU limit');
      if (!host.cgroups.controllers.includes("io"))
        gaps.push('cgroup v2 controller "io" is not enabled: no I/O weight');
      break;
  }
  return gaps;
}
