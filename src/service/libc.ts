/**
 * The few libc calls Node lacks, through koffi: `getsockopt(SO_PEERCRED)` and `flock`.
 * Loaded on first use, so importing the service costs nothing on hosts that never listen.
 */
import koffi from "koffi";
import { HostError } from "../util/errors.js";

/** `struct ucred` from <sys/socket.h>. */
export interface Ucred {
  pid: number;
  uid: number;
  gid: number;
}

// x86_64 and aarch64 Linux values (asm-generic/socket.h, sys/file.h).
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const LOCK_EX = 2;
const LOCK_NB = 4;
const UCRED_SIZE = 12;

interface Libc {
  getsockopt: (fd: number, level: number, name: number, out: Partial<Ucred>, len: number[]) => number;
  flock: (fd: number, operation: number) => number;
}

let libc: Libc | undefined;

function load(): Libc {
  if (libc !== undefined) return libc;
  if (process.platform !== "linux") throw new HostError("SO_PEERCRED and flock need Linux", "host.not-linux");
  const lib = koffi.load("libc.so.6");
  koffi.struct("palisade_ucred", { pid: "int32", uid: "uint32", gid: "uint32" });
  libc = {
    getsockopt: lib.func(
      "int getsockopt(int, int, int, _Out_ palisade_ucred *, _Inout_ uint32_t *)",
    ) as Libc["getsockopt"],
    flock: lib.func("int flock(int, int)") as Libc["flock"],
  };
  return libc;
}

/**
 * The credentials the kernel recorded for the peer of a connected Unix socket: who
 * connected, not what the request says.
 *
 * @throws {HostError} `host.peercred` when the kernel refuses (not a Unix socket)
 */
export function peerCredentials(fd: number): Ucred {
  const out: Partial<Ucred> = {};
  const len = [UCRED_SIZE];
  const rc = load().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, len);
  if (rc !== 0 || out.uid === undefined || out.gid === undefined || out.pid === undefined) {
    throw new HostError(
      `getsockopt(SO_PEERCRED) failed on fd ${fd}: errno ${koffi.errno()}`,
      "host.peercred",
    );
  }
  return { pid: out.pid, uid: out.uid, gid: out.gid };
}

/**
 * Takes an exclusive, non-blocking `flock` on an open file. The kernel drops it when the
 * process dies, `kill -9` included, so a crashed service never leaves a stale lock.
 *
 * @returns `true` when taken, `false` when another open file description holds it
 * @throws {HostError} `host.flock` for other failures
 */
export function tryLockExclusive(fd: number): boolean {
  const rc = load().flock(fd, LOCK_EX | LOCK_NB);
  if (rc === 0) return true;
  const errno = koffi.errno();
  if (errno === 11 /* EWOULDBLOCK */) return false;
  throw new HostError(`flock failed on fd ${fd}: errno ${errno}`, "host.flock");
}
