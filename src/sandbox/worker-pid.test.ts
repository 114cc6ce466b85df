import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findJailedProgram, jailedProgramPid, type ProcessNode } from "./worker-pid.js";

const QEMU = "/usr/bin/qemu-system-x86_64";

test("findJailedProgram: QEMU as the jail's pid 1 (detached) is the jail's first process", () => {
  const table = new Map<number, ProcessNode>([[10, { exe: QEMU, children: [] }]]);
  assert.equal(findJailedProgram(10, QEMU, (pid) => table.get(pid) ?? null), 10);
});

test("findJailedProgram: below bwrap's reaper (attached), QEMU is found, not the reaper", () => {
  const table = new Map<number, ProcessNode>([
    [10, { exe: "/usr/bin/bwrap", children: [11] }],
    [11, { exe: QEMU, children: [] }],
  ]);
  assert.equal(findJailedProgram(10, QEMU, (pid) => table.get(pid) ?? null), 11);
});

test("findJailedProgram: before setpriv has exec'd QEMU, or with a cycle in a bad table, null", () => {
  const starting = new Map<number, ProcessNode>([
    [10, { exe: "/usr/bin/bwrap", children: [11] }],
    [11, { exe: "/usr/bin/setpriv", children: [] }],
  ]);
  assert.equal(findJailedProgram(10, QEMU, (pid) => starting.get(pid) ?? null), null);
  const cycle = new Map<number, ProcessNode>([[10, { exe: "/usr/bin/bwrap", children: [10] }]]);
  assert.equal(findJailedProgram(10, QEMU, (pid) => cycle.get(pid) ?? null), null);
});

test("jailedProgramPid: reads a /proc-shaped tree (children of every task, exe links)", () => {
  const root = mkdtempSync(join(tmpdir(), "palisade-proc-"));
  try {
    const proc = (pid: number, exe: string, tasks: Record<number, string>): void => {
      for (const [task, children] of Object.entries(tasks)) {
        mkdirSync(join(root, String(pid), "task", task), { recursive: true });
        writeFileSync(join(root, String(pid), "task", task, "children"), children);
      }
      symlinkSync(exe, join(root, String(pid), "exe"));
    };
    proc(100, "/usr/bin/bwrap", { 100: "", 101: "200 " });
    proc(200, QEMU, { 200: "" });

    assert.equal(jailedProgramPid(100, QEMU, root), 200);
    assert.equal(jailedProgramPid(999, QEMU, root), null);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
