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

/**
 * Reads `/proc/self/mountinfo` text; pure. Lines that do not parse are skipped.
 * Format (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - FSTYPE SOURCE SUPEROPTIONS`.
 */
export function favorDynmodsState(mountinfo: string): FavorDynmodsState {
  let enabled = false;
  let cgroup2MountPoint: string | null = null;
  for (const line of mountinfo.split("\n")) {
    const separator = line.indexOf(" - ");
    if (separator < 0) continue;
    const before = line.slice(0, separator).split(" ");
    const [fsType, , superOptions = ""] = line.slice(separator + 3).split(" ");
    if (fsType !== "cgroup" && fsType !== "cgroup2") continue;
    if (superOptions.split(",").includes("favordynmods")) enabled = true;
    const mountPoint = before[4];
    if (fsType === "cgroup2" && cgroup2MountPoint === null && mountPoint !== undefined)
      cgroup2MountPoint = unescapeMountPath(mountPoint);
  }
  return { enabled, cgroup2MountPoint };
}

/** The outcome of {@link enableFavorDynmods}. */
export type FavorDynmodsChange =
  | { readonly kind: "already-on" }
  | { readonly kind: "enabled"; readonly mountPoint: string }
  | { readonly kind: "unavailable"; readonly reason: string };

/**
 * Turns favordynmods on by remounting cgroup2 with it, unless the mount table says it is
 * on already. Needs CAP_SYS_ADMIN; a kernel older than 6.0 refuses the option. Never
 * throws: a host that cannot have it only starts workers more slowly.
 */
export function enableFavorDynmods(mountinfo: string): FavorDynmodsChange {
  const state = favorDynmodsState(mountinfo);
  if (state.enabled) return { kind: "already-on" };
  if (state.cgroup2MountPoint === null) return { kind: "unavailable", reason: "no cgroup2 mount" };
  // util-linux mount keeps the mount's other options on a remount.
  const result = spawnSync("mount", ["-o", "remount,favordynmods", state.cgroup2MountPoint], {
    encoding: "utf8",
    env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin" },
    timeout: 10_000,
  });
  if (result.status === 0) return { kind: "enabled", mountPoint: state.cgroup2MountPoint };
  // stderr is null when mount could not be run at all (result.error says why).
  const stderr = result.stderr as string | null;
  const why = (stderr ?? "").trim().split("\n")[0] ?? "";
  return { kind: "unavailable", reason: why !== "" ? why : (result.error?.message ?? `mount exited ${result.status}`) };
}
