/**
 * Which host process in a jail is the worker's program. bwrap reports the jail's first
 * process (`child-pid`); that is the program itself only when the jail runs it as its pid 1
 * (`--as-pid-1`, detached workers). An attached worker's jail keeps bwrap's own reaper as
 * pid 1 (it re-arms the parent-death signal), running as root without capabilities, and
 * the program is below it. Whoever describes or signals "the worker" must find the program.
 */
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";

/** One process as seen in a /proc tree: its program and its children. */
export interface ProcessNode {
  readonly exe: string | null;
  readonly children: readonly number[];
}

/**
 * The nearest process, `jailPid` itself or below it (breadth first), whose program is
 * `program`; null when none is (yet: setpriv has not exec'd it). Pure.
 */
export function findJailedProgram(jailPid: number, program: string, processes: (pid: number) => ProcessNode | null): number | null {
  const queue = [jailPid];
  const seen = new Set<number>();
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    if (seen.has(pid)) continue;
    seen.add(pid);
    const node = processes(pid);
    if (node === null) continue;
    if (node.exe === program) return pid;
    queue.push(...node.children);
  }
  return null;
}

/** A process as /proc (or a tree shaped like it under `procRoot`) shows it; null when gone. */
export function readProcessNode(pid: number, procRoot = "/proc"): ProcessNode | null {
  const dir = join(procRoot, String(pid));
  let tasks: string[];
  try {
    tasks = readdirSync(join(dir, "task"));
  } catch {
    return null;
  }
  let exe: string | null = null;
  try {
    exe = readlinkSync(join(dir, "exe"));
  } catch {
    // A kernel thread, a zombie, or gone.
  }
  const children = tasks.flatMap((task) => {
    try {
      return readFileSync(join(dir, "task", task, "children"), "utf8")
        .split(" ")
        .filter((entry) => /^\d+$/.test(entry))
        .map(Number);
    } catch {
      return [];
    }
  });
  return { exe, children };
}

/**
 * The host pid of the process running `program` (e.g. QEMU) in the jail whose first
 * process is `jailPid`, or null when it does not run (yet, or any more).
 */
export function jailedProgramPid(jailPid: number, program: string, procRoot = "/proc"): number | null {
  return findJailedProgram(jailPid, program, (pid) => readProcessNode(pid, procRoot));
}
