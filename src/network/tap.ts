/**
 * Opening TAP devices through /dev/net/tun with `TUNSETIFF`, via koffi (Node has no
 * ioctl). The interface is created by the open and lives exactly as long as some process
 * holds its file descriptor: once Palisade has handed the fd to QEMU and closed its own
 * copy, a crashed or killed worker leaves no TAP behind.
 */
import koffi from "koffi";
import { HostError } from "../util/errors.js";

// <linux/if_tun.h>
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
// <fcntl.h>, <sched.h>
const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;
/** sizeof(struct ifreq) on Linux x86-64; ifr_flags sits right after the 16-byte name. */
const IFREQ_SIZE = 40;
const IFNAMSIZ = 16;

interface Libc {
  open: (path: string, flags: number) => number;
  ioctl: (fd: number, request: number, type: string, argument: Buffer) => number;
  setns: (fd: number, nstype: number) => number;
  close: (fd: number) => number;
}

let libc: Libc | undefined;

function loadLibc(): Libc {
  if (libc === undefined) {
    const lib = koffi.load("libc.so.6");
    libc = {
      open: lib.func("int open(const char *path, int flags)") as Libc["open"],
      ioctl: lib.func("int ioctl(int fd, unsigned long request, ...)") as Libc["ioctl"],
      setns: lib.func("int setns(int fd, int nstype)") as Libc["setns"],
      close: lib.func("int close(int fd)") as Libc["close"],
    };
  }
  return libc;
}

function fail(what: string): never {
  throw new HostError(`${what} failed: errno ${koffi.errno()}`, "network.tap-failed");
}

/** Options of {@link openTap}. */
export interface OpenTapOptions {
  /** Network namespace (from `ip netns list`) to create the TAP in; unset: the caller's. */
  readonly netns?: string | undefined;
  /** Prefix frames with a virtio-net header (QEMU's `vnet_hdr`, for offloads). Default true. */
  readonly vnetHdr?: boolean;
  /** Open non-blocking (for tests that read frames from Node). Default false. */
  readonly nonBlocking?: boolean;
}

/**
 * Creates (or attaches to) the TAP `ifname` and returns its open file descriptor.
 * @throws {HostError} `network.tap-failed` when /dev/net/tun, the namespace or the ioctl fails.
 * @example const fd = openTap("palp1a2b3c4d", { netns: "test1" });
 */
export function openTap(ifname: string, options: OpenTapOptions = {}): number {
  if (Buffer.byteLength(ifname) >= IFNAMSIZ) throw new HostError(`TAP name "${ifname}" is longer than 15 bytes`, "network.tap-failed");
  const c = loadLibc();
  let restore = -1;
  if (options.netns !== undefined) {
    // setns() moves only this thread; the TAP is created in the thread's namespace, and the
    // thread goes back before any other JavaScript runs.
    restore = c.open("/proc/thread-self/ns/net", O_CLOEXEC);
    if (restore < 0) fail("Opening /proc/thread-self/ns/net");
    const target = c.open(`/run/netns/${options.netns}`, O_CLOEXEC);
    if (target < 0) {
      c.close(restore);
      throw new HostError(`Network namespace "${options.netns}" does not exist`, "network.no-netns");
    }
    const entered = c.setns(target, CLONE_NEWNET);
    c.close(target);
    if (entered !== 0) {
      c.close(restore);
      fail(`Entering network namespace "${options.netns}"`);
    }
  }
  try {
    const fd = c.open("/dev/net/tun", O_RDWR | O_CLOEXEC | (options.nonBlocking === true ? O_NONBLOCK : 0));
    if (fd < 0) fail("Opening /dev/net/tun");
    const ifreq = Buffer.alloc(IFREQ_SIZE);
    ifreq.write(ifname, 0, "latin1");
    ifreq.writeUInt16LE(IFF_TAP | IFF_NO_PI | (options.vnetHdr === false ? 0 : IFF_VNET_HDR), IFNAMSIZ);
    if (c.ioctl(fd, TUNSETIFF, "void *", ifreq) !== 0) {
      const errno = koffi.errno();
      c.close(fd);
      throw new HostError(`TUNSETIFF for TAP "${ifname}" failed: errno ${errno}`, "network.tap-failed");
    }
    return fd;
  } finally {
    if (restore >= 0) {
      const back = c.setns(restore, CLONE_NEWNET);
      c.close(restore);
      // INVARIANT: the main thread must never stay in another namespace; if it cannot
      // return, nothing this process does next would be in the right place.
      if (back !== 0) {
        process.stderr.write(`palisade: setns back to the original network namespace failed: errno ${koffi.errno()}\n`);
        process.abort();
      }
    }
  }
}

/** Closes a file descriptor returned by {@link openTap}. */
export function closeFd(fd: number): void {
  loadLibc().close(fd);
}
