/**
 * Whether a caller could open a host file themselves. The service runs as root and opens
 * the files a VM definition names (kernel, initrd, disks); without this check any local
 * user allowed to create a VM could make it read /etc/shadow as a disk. The check runs at
 * create and update time with the caller's uid and gids, and again at every start with
 * the uid that last set the paths (a file swapped for a symlink after the check is caught
 * there; what remains is the window between that check and QEMU's open).
 */
import { realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { ValidationError } from "./errors.js";

/** Who asks: a uid and every gid it has. */
export interface Caller {
  readonly uid: number;
  readonly gids: readonly number[];
}

/** The part of a stat this decision needs. */
export interface FileMode {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** 4 read, 2 write, 1 execute/search. */
export type AccessBits = number;

/**
 * Whether the classic owner/group/other mode bits grant `want` to `caller` (pure). ACLs
 * are not consulted: with ACLs the group bits are the mask, an upper bound, so this can
 * only refuse more than the kernel would, never less. Root is allowed everything.
 *
 * @example
 * modeAllows({ mode: 0o640, uid: 0, gid: 42 }, { uid: 1000, gids: [42] }, 4); // true
 */
export function modeAllows(file: FileMode, caller: Caller, want: AccessBits): boolean {
  if (caller.uid === 0) return true;
  const bits =
    file.uid === caller.uid
      ? (file.mode >> 6) & 7
      : caller.gids.includes(file.gid)
        ? (file.mode >> 3) & 7
        : file.mode & 7;
  return (bits & want) === want;
}

/**
 * Refuses a path the caller could not open with `want` themselves: the real path (every
 * symlink resolved, as QEMU will see it) must be reachable (search on every directory)
 * and readable (and writable for a writable disk) by the caller.
 *
 * @throws {ValidationError} `vm.path-denied` naming the field and the path
 */
export function assertCallerMayOpen(path: string, caller: Caller, want: "r" | "rw", field: string): void {
  if (caller.uid === 0) return;
  const denied = (why: string): ValidationError =>
    new ValidationError(`Field ${field}: ${path}: ${why}`, field, "vm.path-denied");
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw denied("no such file, or you cannot reach it");
  }
  for (let dir = dirname(real); ; dir = dirname(dir)) {
    if (!modeAllows(statSync(dir), caller, 1)) throw denied(`you (uid ${caller.uid}) cannot search ${dir}`);
    if (dir === "/") break;
  }
  const st = statSync(real);
  if (!st.isFile() && !st.isBlockDevice()) throw denied("not a regular file or block device");
  if (!modeAllows(st, caller, want === "rw" ? 6 : 4)) {
    throw denied(`you (uid ${caller.uid}) may not ${want === "rw" ? "read and write" : "read"} it`);
  }
}
