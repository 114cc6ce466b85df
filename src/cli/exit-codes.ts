/**
 * Exit codes of `palisade`, documented in `--help`. Stable: scripts match on them.
 */
export const EXIT = {
  /** Success; for `palisade run`, the guest powered off. */
  ok: 0,
  /** An unexpected failure (a bug, or an error Palisade could not classify). */
  failure: 1,
  /** Bad flags, a bad spec or a bad file given by the user. */
  config: 2,
  /** The host lacks something: a package, /dev/kvm, a permission. */
  host: 3,
  /** The guest kernel panicked (pvpanic). */
  guestPanic: 4,
  /** The guest reset and `--on-reboot exit` was asked for, or it reset in a loop (triple faults). */
  guestReset: 5,
  /** The worker (QEMU) died or failed: crash, kill, start error, KVM internal error. */
  workerCrash: 6,
  /** The guest made no progress: boot timeout or hang. */
  guestHang: 7,
  /** The user detached from the console (escape key) and the VM was stopped. */
  detached: 8,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export const EXIT_CODES_HELP = `Exit codes:
  0  guest powered off (or the command succeeded)
  1  unexpected failure
  2  configuration error (bad flag, spec or file)
  3  the host lacks something (package, /dev/kvm, permission)
  4  guest kernel panic
  5  guest reset with --on-reboot exit, or a reset loop (triple faults)
  6  worker (QEMU) crashed, was killed or failed to start
  7  guest hung: no progress before the timeout
  8  detached from the console; the VM was stopped`;
