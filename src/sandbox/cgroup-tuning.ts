/**
 * cgroup2's `favordynmods` mount option: whether it is on (pure, from the mount table) and
 * turning it on (the edge: `mount -o remount`).
 *
 * Why: every worker's jail moves its first process into the VM's cgroups before QEMU
 * runs. Without the option, each such move takes the kernel's global threadgroup lock for
 * writing, which first waits for an RCU grace period whenever no move happened in the
 * last few milliseconds — that is, at every VM start: the join measured ~13 ms median
 * (up to ~34 ms) of a start's critical path on these hosts. With it, the lock's fast path
 * is kept for writers (and, from Linux 6.17, moves lock only the moved process's thread
 * group): a move measured ~1.5 ms. The price, per the kernel's documentation, is a
 * slightly dearer fork and exit; OpenRC and libcgroup offer the same switch, and kernels
 * built with CONFIG_CGROUP_FAVOR_DYNMODS have it on from boot.
 *
 * It is a host-wide setting (the lock is global, whichever cgroup root asks for it), so
 * it is set on the cgroup2 mount, the only one the kernel lets a remount change; a host
 * can refuse it (`"cgroupFavorDynmods": false` in /etc/palisade/host.json). From Linux
 * 6.17 it cannot be turned off again until reboot.
 *
 * Reference: Documentation/admin-guide/cgroup-v2.rst (favordynmods), kernel/cgroup/cgroup.c
 * (cgroup_favor_dynmods).
 */
import { spawnSync } from "node:child_process";

/** What the mount table says about favordynmods. */
export interface FavorDynmodsState {
  /** Some cgroup root is mounted with it (the lock it changes is global). */
  readonly enabled: boolean;
  /** Where cgroup2 is mounted (the root a remount can set it on); null without one. */
  readonly cgroup2MountPoint: string | null;
}

/** Undoes the octal escapes the kernel writes in mountinfo paths (`\040` for a space). */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** A cgroup or cgroup2 mount: where, and its file system's (root's) options. */
interface CgroupMount {
  readonly fsType: "cgroup" | "cgroup2";
  readonly mountPoint: string;
  readonly superOptions: readonly string[];
}

/**
 * The cgroup mounts in `/proc/self/mountinfo` text, in order; pure. Lines that do not
 * parse are skipped. Format (proc(5)):
 * `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - FSTYPE SOURCE SUPEROPTIONS`.
 */
function cgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const separator = line.indexOf(" - ");
    if (separator < 0) continue;
    const mountPoint = line.slice(0, separator).split(" ")[4];
    const [fsType, , superOptions = ""] = line.slice(separator + 3).split(" ");
    if ((fsType !== "cgroup" && fsType !== "cgroup2") || mountPoint === undefined) continue;
    mounts.push({ fsType, mountPoint: unescapeMountPath(mountPoint), superOptions: superOptions.split(",") });
  }
  return mounts;
}

/** What the mount table says about favordynmods; pure. */
export function favorDynmodsState(mountinfo: string): FavorDynmodsState {
  const mounts = cgroupMounts(mountinfo);
  return {
    enabled: mounts.some((mount) => mount.superOptions.includes("favordynmods")),
    cgroup2MountPoint: mounts.find((mount) => mount.fsType === "cgroup2")?.mountPoint ?? null,
  };
}

/** The root options of the cgroup2 mount (its super options, `rw` left out), in order. */
export function cgroup2RootOptions(mountinfo: string): string[] | null {
  const mount = cgroupMounts(mountinfo).find((candidate) => candidate.fsType === "cgroup2");
  return mount === undefined
    ? null
    : mount.superOptions.filter((option) => option !== "" && option !== "rw" && option !== "ro");
}

/** What to do about favordynmods at a start; pure. */
export type FavorDynmodsPlan =
  | {
      readonly kind: "nothing";
      readonly why: "already-on" | "refused-by-host-config" | "refused-earlier-this-boot" | "no-cgroup2";
    }
  | { readonly kind: "remount"; readonly mountPoint: string };

/**
 * Decides whether to remount: not when it is on already, when the host's configuration
 * says no, when a remount failed earlier since this boot (`failedMarker` is the marker
 * file's text, `bootId` this boot's id), or without a cgroup2 mount.
 */
export function planFavorDynmods(
  mountinfo: string,
  allowed: boolean,
  failedMarker: string | null,
  bootId: string,
): FavorDynmodsPlan {
  const state = favorDynmodsState(mountinfo);
  if (state.enabled) return { kind: "nothing", why: "already-on" };
  if (!allowed) return { kind: "nothing", why: "refused-by-host-config" };
  if (failedMarker !== null && bootId !== "" && failedMarker.split("\n")[0] === bootId)
    return { kind: "nothing", why: "refused-earlier-this-boot" };
  if (state.cgroup2MountPoint === null) return { kind: "nothing", why: "no-cgroup2" };
  return { kind: "remount", mountPoint: state.cgroup2MountPoint };
}

/**
 * Judges a remount by the mount table before and after it; pure. It worked only if
 * favordynmods is now on and every other root option is still there: a remount names
 * the options it keeps, and the kernel turns off the ones it does not (nsdelegate,
 * memory_recursiveprot…). Inside a cgroup namespace other than the host's, the kernel
 * accepts the remount and ignores its options: that shows here as still off.
 */
export function judgeFavorDynmodsRemount(
  before: string,
  after: string,
): { ok: true } | { ok: false; reason: string } {
  if (!favorDynmodsState(after).enabled)
    return {
      ok: false,
      reason:
        "the remount succeeded but favordynmods is still off (a cgroup namespace other than the host's?)",
    };
  const kept = new Set(cgroup2RootOptions(after) ?? []);
  const lost = (cgroup2RootOptions(before) ?? []).filter((option) => !kept.has(option));
  return lost.length === 0
    ? { ok: true }
    : { ok: false, reason: `the remount dropped cgroup2 options ${lost.join(", ")}` };
}

/** The outcome of {@link remountFavorDynmods}. */
export type FavorDynmodsChange =
  | { readonly kind: "enabled"; readonly mountPoint: string }
  | { readonly kind: "unavailable"; readonly reason: string };

/**
 * Remounts cgroup2 at `mountPoint` with favordynmods, keeping its other options, then
 * checks the mount table (see {@link judgeFavorDynmodsRemount}). Needs CAP_SYS_ADMIN; a
 * kernel older than 6.0 refuses the option. Never throws: a host that cannot have it only
 * starts workers more slowly.
 *
 * @param readMountinfo reads `/proc/self/mountinfo` (after the remount).
 */
export function remountFavorDynmods(
  mountPoint: string,
  mountinfoBefore: string,
  readMountinfo: () => string,
): FavorDynmodsChange {
  // --options-source mtab: the options come from the mount table, never from an fstab
  // line for the same mount point (which libmount would otherwise prefer).
  const result = spawnSync("mount", ["--options-source", "mtab", "-o", "remount,favordynmods", mountPoint], {
    encoding: "utf8",
    env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" },
    timeout: 10_000,
  });
  if (result.status !== 0) {
    // stderr is null when mount could not be run at all (result.error says why).
    const stderr = result.stderr as string | null;
    const why = (stderr ?? "").trim().split("\n")[0] ?? "";
    return {
      kind: "unavailable",
      reason: why !== "" ? why : (result.error?.message ?? `mount exited ${result.status}`),
    };
  }
  let after: string;
  try {
    after = readMountinfo();
  } catch (error: unknown) {
    return { kind: "unavailable", reason: `cannot read the mount table after the remount: ${String(error)}` };
  }
  const judged = judgeFavorDynmodsRemount(mountinfoBefore, after);
  if (judged.ok) return { kind: "enabled", mountPoint };
  // Not expected with the options taken from the mount table; if it happens anyway, put
  // back what the host had (favordynmods itself may stay on: from Linux 6.17 it cannot go).
  const before = cgroup2RootOptions(mountinfoBefore) ?? [];
  if (before.length > 0)
    spawnSync("mount", ["--options-source", "mtab", "-o", `remount,${before.join(",")}`, mountPoint], {
      env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" },
      timeout: 10_000,
    });
  return { kind: "unavailable", reason: judged.reason };
}
