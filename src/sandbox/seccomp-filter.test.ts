import { test } from "node:test";
import assert from "node:assert/strict";
import {
  workerSeccompProgram,
  evaluateSeccomp,
  AUDIT_ARCH_X86_64,
  SECCOMP_RETURN,
} from "./seccomp-filter.js";

const program = workerSeccompProgram();
const x86 = (nr: number, args: number[] = []): number =>
  evaluateSeccomp(program, { nr, arch: AUDIT_ARCH_X86_64, args });

// x86-64 numbers from asm/unistd_64.h.
test("seccomp filter: ordinary calls QEMU makes are allowed (read, mmap, ioctl KVM_RUN, seccomp)", () => {
  assert.equal(x86(0), SECCOMP_RETURN.allow);
  assert.equal(x86(9), SECCOMP_RETURN.allow);
  assert.equal(x86(16, [3, 0xae80]), SECCOMP_RETURN.allow);
  assert.equal(x86(317), SECCOMP_RETURN.allow);
});

test("seccomp filter: unshare, setns, mount, ptrace and process_vm_readv fail with EPERM", () => {
  assert.equal(x86(272), SECCOMP_RETURN.eperm);
  assert.equal(x86(308), SECCOMP_RETURN.eperm);
  assert.equal(x86(165), SECCOMP_RETURN.eperm);
  assert.equal(x86(101), SECCOMP_RETURN.eperm);
  assert.equal(x86(310), SECCOMP_RETURN.eperm);
});

test("seccomp filter: clone for a thread is allowed, clone with CLONE_NEWUSER is refused", () => {
  // CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID = pthread_create's flags.
  assert.equal(x86(56, [0x3d0f00]), SECCOMP_RETURN.allow);
  assert.equal(x86(56, [0x10000000 | 17]), SECCOMP_RETURN.eperm);
});

test("seccomp filter: clone3 reports ENOSYS so glibc falls back to the checked clone", () => {
  assert.equal(x86(435), SECCOMP_RETURN.enosys);
});

test("seccomp filter: TIOCSTI (typing into the terminal) is refused on any fd", () => {
  assert.equal(x86(16, [0, 0x5412]), SECCOMP_RETURN.eperm);
});

test("seccomp filter: io_uring, bpf, perf_event_open and userfaultfd are refused", () => {
  assert.equal(x86(425), SECCOMP_RETURN.eperm);
  assert.equal(x86(321), SECCOMP_RETURN.eperm);
  assert.equal(x86(298), SECCOMP_RETURN.eperm);
  assert.equal(x86(323), SECCOMP_RETURN.eperm);
});

test("seccomp filter: x32 calls are refused and the i386 ABI kills the process", () => {
  assert.equal(x86(0x40000000 + 101), SECCOMP_RETURN.eperm);
  // AUDIT_ARCH_I386
  assert.equal(evaluateSeccomp(program, { nr: 1, arch: 0x40000003 }), SECCOMP_RETURN.kill);
});

test("seccomp filter: the program fits the kernel's 4096-instruction limit and is whole instructions", () => {
  assert.equal(program.byteLength % 8, 0);
  assert.ok(program.byteLength / 8 < 4096);
});
