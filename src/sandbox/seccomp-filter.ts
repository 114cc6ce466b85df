/**
 * Palisade's own seccomp filter for the worker, applied by bubblewrap (`--seccomp FD`)
 * before QEMU starts, under QEMU's own `-sandbox`. QEMU's filter is a deny-list of what
 * QEMU never needs; this one adds what QEMU's list leaves open and a compromised worker
 * would want first: new namespaces (a user namespace is the usual first step of a local
 * kernel exploit), ptrace and cross-process memory, mount, io_uring, bpf, perf, keyrings,
 * userfaultfd and terminal injection. It also covers the moments before QEMU installs
 * `-sandbox` and any program that is not QEMU (the hostile tests' shell).
 *
 * Pure: builds the classic-BPF program as bytes (struct sock_filter[], little-endian), the
 * format `bwrap --seccomp` reads. Only x86-64 is described; other architectures get no
 * filter and `sandboxGaps()` says so.
 */

/** `struct seccomp_data` offsets (linux/seccomp.h). */
const DATA_NR = 0;
const DATA_ARCH = 4;
const DATA_ARG0_LOW = 16;
const DATA_ARG1_LOW = 24;

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS = 0x20;
const BPF_JMP_JEQ_K = 0x15;
const BPF_JMP_JGE_K = 0x35;
const BPF_JMP_JSET_K = 0x45;
const BPF_RET_K = 0x06;

// Return values (linux/seccomp.h).
const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;

/** `AUDIT_ARCH_X86_64` (linux/audit.h). */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** x32 system calls on x86-64 have this bit set; the worker has no use for them. */
const X32_SYSCALL_BIT = 0x40000000;

/** Namespace flags of clone(2): CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. */
export const CLONE_NAMESPACE_FLAGS =
  0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

/** ioctl requests refused on any fd: TIOCSTI (type into a terminal) and TIOCLINUX. */
export const DENIED_IOCTLS = { TIOCSTI: 0x5412, TIOCLINUX: 0x541c } as const;

/**
 * System calls refused with EPERM, by x86-64 number (asm/unistd_64.h), grouped by why.
 * QEMU 7.2 with the device classes of `policy/` uses none of them (io_uring: QEMU's event
 * loop falls back to epoll when io_uring_setup fails).
 */
export const DENIED_SYSCALLS_X86_64: Readonly<Record<string, number>> = {
  // other processes' memory and control
  ptrace: 101,
  process_vm_readv: 310,
  process_vm_writev: 311,
  // namespaces and mounts
  unshare: 272,
  setns: 308,
  mount: 165,
  umount2: 166,
  pivot_root: 155,
  chroot: 161,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  mount_setattr: 442,
  // large kernel attack surfaces QEMU does not need here
  bpf: 321,
  perf_event_open: 298,
  userfaultfd: 323,
  keyctl: 250,
  add_key: 248,
  request_key: 249,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  // host administration (also refused for lack of capabilities; refused twice)
  kexec_load: 246,
  kexec_file_load: 320,
  init_module: 175,
  finit_module: 313,
  delete_module: 176,
  reboot: 169,
  swapon: 167,
  swapoff: 168,
  acct: 163,
  syslog: 103,
  quotactl: 179,
  lookup_dcookie: 212,
  open_by_handle_at: 304,
  name_to_handle_at: 303,
  vhangup: 153,
  uselib: 134,
  iopl: 172,
  ioperm: 173,
};

const NR_CLONE = 56;
const NR_CLONE3 = 435;
const NR_IOCTL = 16;

interface Instruction {
  code: number;
  jt: number | string;
  jf: number | string;
  k: number;
}

/** One instruction; `jt`/`jf` may name a label, resolved by `assemble()`. */
function op(code: number, k: number, jt: number | string = 0, jf: number | string = 0): Instruction {
  return { code, jt, jf, k };
}

function assemble(program: (Instruction | { label: string })[]): Uint8Array {
  const labels = new Map<string, number>();
  const instructions: Instruction[] = [];
  for (const item of program) {
    if ("label" in item) labels.set(item.label, instructions.length);
    else instructions.push(item);
  }
  const bytes = new Uint8Array(instructions.length * 8);
  const view = new DataView(bytes.buffer);
  instructions.forEach((instruction, index) => {
    const offset = (target: number | string): number => {
      if (typeof target === "number") return target;
      const at = labels.get(target);
      // INVARIANT: every label used below is defined once after its users; jumps go forward only.
      if (at === undefined || at <= index || at - index - 1 > 255)
        throw new Error(`seccomp filter: bad jump to ${target}`);
      return at - index - 1;
    };
    view.setUint16(index * 8, instruction.code, true);
    view.setUint8(index * 8 + 2, offset(instruction.jt));
    view.setUint8(index * 8 + 3, offset(instruction.jf));
    view.setUint32(index * 8 + 4, instruction.k >>> 0, true);
  });
  return bytes;
}

/**
 * The worker's seccomp program for x86-64: other architectures (the i386 ABI through
 * `int 0x80`) kill the process; x32 calls, the {@link DENIED_SYSCALLS_X86_64}, clone(2)
 * with a namespace flag and the {@link DENIED_IOCTLS} fail with EPERM; clone3(2) fails
 * with ENOSYS (its flags sit in memory BPF cannot read, and glibc then falls back to
 * clone(2), whose flags are checked); everything else is allowed and left to QEMU's
 * `-sandbox`.
 */
export function workerSeccompProgram(): Uint8Array {
  const deny = Object.values(DENIED_SYSCALLS_X86_64).map((nr) => op(BPF_JMP_JEQ_K, nr, "eperm"));
  return assemble([
    op(BPF_LD_W_ABS, DATA_ARCH),
    op(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    op(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    op(BPF_LD_W_ABS, DATA_NR),
    op(BPF_JMP_JGE_K, X32_SYSCALL_BIT, "eperm"),
    ...deny,
    op(BPF_JMP_JEQ_K, NR_CLONE, "clone"),
    op(BPF_JMP_JEQ_K, NR_IOCTL, "ioctl"),
    op(BPF_JMP_JEQ_K, NR_CLONE3, "enosys"),
    op(BPF_RET_K, SECCOMP_RET_ALLOW),
    { label: "clone" },
    op(BPF_LD_W_ABS, DATA_ARG0_LOW),
    op(BPF_JMP_JSET_K, CLONE_NAMESPACE_FLAGS, "eperm", "allow"),
    { label: "ioctl" },
    // The kernel truncates the request to 32 bits, so the low word is the whole request.
    op(BPF_LD_W_ABS, DATA_ARG1_LOW),
    op(BPF_JMP_JEQ_K, DENIED_IOCTLS.TIOCSTI, "eperm"),
    op(BPF_JMP_JEQ_K, DENIED_IOCTLS.TIOCLINUX, "eperm", "allow"),
    { label: "allow" },
    op(BPF_RET_K, SECCOMP_RET_ALLOW),
    { label: "enosys" },
    op(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS),
    { label: "eperm" },
    op(BPF_RET_K, SECCOMP_RET_ERRNO | EPERM),
  ]);
}

/** What the program returns for one system call, by running it (the tests' oracle; pure). */
export function evaluateSeccomp(
  program: Uint8Array,
  data: { nr: number; arch: number; args?: readonly number[] },
): number {
  const view = new DataView(program.buffer, program.byteOffset, program.byteLength);
  const load = (offset: number): number => {
    if (offset === DATA_NR) return data.nr >>> 0;
    if (offset === DATA_ARCH) return data.arch >>> 0;
    const arg = (offset - 16) / 8;
    return (data.args?.[arg] ?? 0) >>> 0;
  };
  let accumulator = 0;
  for (let pc = 0; pc * 8 < program.byteLength; pc++) {
    const code = view.getUint16(pc * 8, true);
    const jt = view.getUint8(pc * 8 + 2);
    const jf = view.getUint8(pc * 8 + 3);
    const k = view.getUint32(pc * 8 + 4, true);
    switch (code) {
      case BPF_LD_W_ABS:
        accumulator = load(k);
        break;
      case BPF_JMP_JEQ_K:
        pc += accumulator === k ? jt : jf;
        break;
      case BPF_JMP_JGE_K:
        pc += accumulator >= k ? jt : jf;
        break;
      case BPF_JMP_JSET_K:
        pc += (accumulator & k) !== 0 ? jt : jf;
        break;
      case BPF_RET_K:
        return k;
      default:
        throw new Error(`seccomp filter: unknown opcode 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error("seccomp filter: fell off the end");
}

/** Return values, for tests and `describeSandbox()` readers. */
export const SECCOMP_RETURN = {
  allow: SECCOMP_RET_ALLOW,
  eperm: SECCOMP_RET_ERRNO | EPERM,
  enosys: SECCOMP_RET_ERRNO | ENOSYS,
  kill: SECCOMP_RET_KILL_PROCESS,
} as const;
