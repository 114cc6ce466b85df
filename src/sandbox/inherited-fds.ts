/**
 * Descriptors this process inherited without close-on-exec (from a shell, a supervisor,
 * a test harness) would otherwise pass into every worker: libuv's spawn does not close
 * them, and neither bubblewrap nor setpriv does. Node opens its own with O_CLOEXEC.
 */
import { createRequire } from "node:module";

/** `CLOSE_RANGE_CLOEXEC` (linux/close_range.h). */
const CLOSE_RANGE_CLOEXEC = 1 << 2;

type CloseRange = (first: number, last: number, flags: number) => number;
let closeRange: CloseRange | undefined;

/**
 * Marks every descriptor from 3 up close-on-exec, so a spawned worker gets only the
 * stdio it is given. Call once at start-up, before spawning workers (the engine and the
 * service do); harmless to this process, which keeps using them.
 *
 * @returns false when the kernel or libc lacks close_range (Linux < 5.11, glibc < 2.34).
 */
export function markInheritedFdsCloseOnExec(): boolean {
  try {
    if (closeRange === undefined) {
      // Loaded on first use: importing the sandbox must not cost `palisade run` koffi's load.
      const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
      const libc = koffi.load("libc.so.6");
      closeRange = libc.func(
        "int close_range(unsigned int first, unsigned int last, int flags)",
      ) as CloseRange;
    }
    return closeRange(3, 0xffffffff, CLOSE_RANGE_CLOEXEC) === 0;
  } catch {
    return false;
  }
}
