/**
 * Real guests for the hostile tests, started the way Palisade starts them: through the
 * `palisade run` CLI (tests/harness/test-vm.ts) or, where a test needs the engine's worker
 * API (graceful stop with a timeout), through the engine's `startVm()`. Either way the QEMU
 * command line is the engine's `qemuArgv()` and the worker's jail is the engine's: what is
 * tested is what ships. Plus what the hostile tests ask of a running worker: its QEMU pid
 * and uid, its cgroups, a console heartbeat, and commands run with its identity.
 */
import { randomUUID } from "node:crypto";
import { after, before } from "node:test";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { probeHost, startVm, parseVmSpec, type Worker, type VmSpecInput } from "../../src/engine/index.js";
import { READY_MARKER, SHELL_PROMPT, type BuiltImage } from "../../src/image/index.js";
import { jailedProgramPid, readWorkerStatus } from "../../src/sandbox/index.js";
import { BOOT_TIMEOUT_MS, TestVm, type TestVmOptions } from "../harness/test-vm.js";
import { QEMU, skipReason } from "./sandbox-harness.js";

/**
 * Trust placement is host-wide: VMs that other test suites run at the same time (of
 * another trust level) would refuse ours. A private placement directory for this process
 * and the `palisade run`s it starts keeps the suites apart; the two VMs a test runs side
 * by side still meet the placement check.
 */
export function privatePlacement(): () => void {
  const dir = mkdtempSync(join(tmpdir(), "palisade-hostile-placement-"));
  process.env.PALISADE_PLACEMENT_DIR = dir;
  return () => {
    rmSync(dir, { recursive: true, force: true });
  };
}

/** Registers this file's hooks for a private placement directory (none when the tests are skipped). */
export function usePrivatePlacement(): void {
  let cleanup = (): void => undefined;
  before(() => {
    if (skipReason() === null) cleanup = privatePlacement();
  });
  after(() => {
    cleanup();
  });
}

/** Polls `done` every 50 ms until it holds; throws with `what` and `context()` after `timeoutMs`. */
export async function waitUntil(done: () => boolean, timeoutMs: number, what: string, context: () => string = () => ""): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what} not seen in ${String(timeoutMs)} ms${context() === "" ? "" : `; ${context()}`}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `palisade run` of `image` (default: the default image) with the test's flags. */
export function runGuest(image: Pick<BuiltImage, "kernelPath" | "initrdPath"> | null, options: TestVmOptions = {}): Promise<TestVm> {
  const imageArgs = image === null ? [] : ["--kernel", image.kernelPath, "--initrd", image.initrdPath];
  // Later flags win in commander: the test's image replaces the harness's default one.
  return TestVm.start({ ...options, extraArgs: [...imageArgs, ...(options.extraArgs ?? [])] });
}

/** The lines of a heartbeat: `TICK`, once a second, from a background loop in the guest. */
export const HEARTBEAT = "while :; do echo T''ICK; sleep 1; done &\n";
/** How many heartbeat lines `output` holds. */
export const ticks = (output: string): number => output.match(/^TICK$/gm)?.length ?? 0;

/** A running worker seen from the host: QEMU's pid (host and jail) and the uid/gid it runs as. */
export interface WorkerIdentity {
  readonly runDir: string;
  /** The jail's first process (bwrap reports it); QEMU itself or, for an attached worker, bwrap's reaper above it. */
  readonly jailPid: number;
  /** QEMU's pid on the host. */
  readonly qemuPid: number;
  /** QEMU's pid in the jail's pid namespace (what a compromised worker names it by). */
  readonly qemuPidInJail: number;
  readonly uid: number;
  readonly gid: number;
}

/** The jailed QEMU of a `palisade run` started by TestVm (its run directory is `<runRoot>/<name>`). */
export async function workerOf(vm: TestVm): Promise<WorkerIdentity> {
  return identity(join(vm.runRoot, vm.name));
}

async function identity(runDir: string): Promise<WorkerIdentity> {
  const jailPid = (await readWorkerStatus(runDir)).childPid;
  if (jailPid === undefined) throw new Error(`no jailed worker reported in ${runDir} (is the sandbox on?)`);
  // setpriv becomes QEMU a moment after bwrap reports the jail.
  let qemuPid: number | undefined;
  await waitUntil(() => (qemuPid = jailedProgramPid(jailPid, QEMU) ?? undefined) !== undefined, 10_000, `QEMU under jail pid ${String(jailPid)}`);
  const pid = qemuPid ?? 0;
  const status = readFileSync(`/proc/${String(pid)}/status`, "utf8");
  const field = (name: string): string[] => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  return {
    runDir,
    jailPid,
    qemuPid: pid,
    qemuPidInJail: Number(field("NSpid").at(-1)),
    uid: Number(field("Uid")[0]),
    gid: Number(field("Gid")[0]),
  };
}

/** The worker's cgroup directory of v1 controller `controller` (from /proc/PID/cgroup). */
export function v1CgroupDir(pid: number, controller: string): string {
  const line = readFileSync(`/proc/${String(pid)}/cgroup`, "utf8")
    .split("\n")
    .find((entry) => entry.split(":")[1]?.split(",").includes(controller));
  if (line === undefined) throw new Error(`pid ${String(pid)} is in no v1 ${controller} cgroup`);
  return join("/sys/fs/cgroup", controller, line.split(":").slice(2).join(":"));
}

/**
 * Runs `command` as a compromised worker: in the worker's mount and pid namespaces, as its
 * uid, without capabilities. `program` (a host file) is copied into the worker's run
 * directory first, the one writable directory its jail binds, and run from there.
 */
export function asWorker(worker: WorkerIdentity, program: string, args: readonly string[]): string {
  // Under its own name: busybox picks its applet by it.
  const inJail = join(worker.runDir, basename(program));
  copyFileSync(program, inJail);
  const run = spawnSync(
    "/usr/bin/nsenter",
    ["-t", String(worker.qemuPid), "-m", "-p", "--", "/usr/bin/setpriv", `--reuid=${String(worker.uid)}`, `--regid=${String(worker.gid)}`, "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", inJail, ...args],
    { env: {}, encoding: "utf8", timeout: 60_000 },
  );
  return run.stdout + run.stderr;
}

/**
 * A guest started through the engine's `startVm()` (the call `palisade run` and the
 * service make), console held by the test: for what the CLI does not offer, such as a
 * graceful stop with a timeout.
 */
export class EngineGuest {
  readonly worker: Worker;
  readonly runRoot: string;
  output = "";

  private constructor(worker: Worker, runRoot: string) {
    this.worker = worker;
    this.runRoot = runRoot;
    worker.on("console", (chunk) => {
      this.output += chunk.toString("latin1").replace(/\r/g, "");
    });
  }

  /** Starts `image` with `spec` fields (name, memory, vCPUs, policy …) and waits for its shell. */
  static async start(image: Pick<BuiltImage, "kernelPath" | "initrdPath">, spec: Partial<Omit<VmSpecInput, "kernel">>): Promise<EngineGuest> {
    const runRoot = mkdtempSync(join(tmpdir(), "palisade-hostile-engine-"));
    const parsed = parseVmSpec({
      name: `e${String(process.pid)}-${randomUUID().slice(0, 6)}`,
      uuid: randomUUID(),
      kernel: image.kernelPath,
      initrd: image.initrdPath,
      append: "quiet",
      readyMarker: READY_MARKER,
      bootTimeoutMs: BOOT_TIMEOUT_MS,
      ...spec,
    });
    const worker = await startVm(parsed, probeHost(), { runRoot, detached: false });
    const guest = new EngineGuest(worker, runRoot);
    await worker.holdConsole();
    await waitUntil(() => guest.output.includes(READY_MARKER) && guest.output.includes(SHELL_PROMPT), BOOT_TIMEOUT_MS, `${worker.name}: ready marker and prompt`, () => guest.output.slice(-1500));
    return guest;
  }

  identity(): Promise<WorkerIdentity> {
    return identity(this.worker.record.paths.runDir);
  }

  send(text: string): void {
    this.worker.writeConsole(text);
  }

  /** Kills the worker if it still runs and removes the run root. */
  async dispose(): Promise<void> {
    await this.worker.kill().catch(() => undefined);
    rmSync(this.runRoot, { recursive: true, force: true });
  }
}
