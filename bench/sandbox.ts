/**
 * `npm run bench -- sandbox [--runs N]` (as root): what the worker jail costs.
 *
 * 1. `/usr/bin/true` plain vs in the worker's jail (the jail's own start cost), with the
 *    runtime tree (the default) and with every file bound on its own;
 * 2. `prepareJail()` + `cleanup()` (directories, seccomp program, cgroups);
 * 3. QEMU from spawn to its QMP greeting (the engine's command line for a microvm of the
 *    default kernel, `-S`: no guest runs), plain vs jailed; then the issue's measure: the
 *    same guest (the default image, TCG) started by the engine (`startVm`, what `palisade
 *    run` and the service call) to its ready marker, with and without the worker's jail
 *    (`--no-guest` skips);
 * 4. memory the jail adds per VM: the private memory of the processes the jail adds
 *    (bwrap's monitor; for an attached worker also bwrap's reaper, the jail's pid 1), and
 *    QEMU's own private memory plain vs jailed.
 * Runs are interleaved (plain, jailed, plain, …) so drift hits both sides alike.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { randomUUID } from "node:crypto";
import { describeOutcome, parseVmSpec, planVm, probeHost, startVm, type HostFacts } from "../src/engine/index.js";
import { ensureDefaultImage, READY_MARKER } from "../src/image/index.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  jailArgv,
  jailCommandArgv,
  jailPaths,
  jailedProgramPid,
  markInheritedFdsCloseOnExec,
  prepareJail,
  prepareRuntimeTree,
  probeSandboxHost,
  readWorkerStatus,
  sandboxGaps,
  type JailSpec,
} from "../src/sandbox/index.js";

const QEMU = "/usr/bin/qemu-system-x86_64";

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function timeSync(argv: string[]): number {
  const started = performance.now();
  const result = spawnSync(argv[0] ?? "", argv.slice(1), { env: {}, stdio: "ignore", timeout: 30_000 });
  if (result.status !== 0) throw new Error(`${argv.join(" ").slice(0, 200)} exited ${String(result.status)}`);
  return performance.now() - started;
}

/** Spawns QEMU (argv), waits for the QMP greeting on `socket`, says quit; returns ms to the greeting. */
async function qemuToReady(argv: string[], socket: string): Promise<number> {
  const started = performance.now();
  const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: "ignore" });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const greeted = await new Promise<boolean>((resolve) => {
      const connection = connect(socket);
      connection.once("data", () => {
        connection.end('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n');
        resolve(true);
      });
      connection.once("error", () => {
        resolve(false);
      });
    });
    if (greeted) break;
    if (Date.now() > deadline) throw new Error(`QEMU did not greet on ${socket}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const readyMs = performance.now() - started;
  await exited;
  return readyMs;
}

/**
 * Starts the default image through the engine and waits for its ready marker; returns ms
 * from the call to the marker, then kills the VM.
 */
async function engineToReady(
  image: { kernelPath: string; initrdPath: string },
  host: HostFacts,
  runRoot: string,
  noSandbox: boolean,
): Promise<number> {
  const spec = parseVmSpec({
    name: `bench-${randomUUID().slice(0, 8)}`,
    uuid: randomUUID(),
    kernel: image.kernelPath,
    initrd: image.initrdPath,
    append: "quiet",
    memoryMiB: 256,
    vcpus: 1,
    readyMarker: READY_MARKER,
    bootTimeoutMs: 120_000,
  });
  const started = performance.now();
  const worker = await startVm(spec, host, { runRoot, detached: false, noSandbox });
  const ready = new Promise<void>((resolve) => {
    worker.on("event", (event) => {
      if (event.event === "ready") resolve();
    });
  });
  await worker.holdConsole();
  const outcome = worker.outcome.then((end) => {
    throw new Error(`guest ended before its ready marker: ${describeOutcome(end)}`);
  });
  await Promise.race([ready, outcome]);
  const readyMs = performance.now() - started;
  await worker.kill();
  return readyMs;
}

/** Waits (up to 20 s) until a QMP socket accepts a connection. */
async function waitForSocket(path: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const connected = await new Promise<boolean>((resolve) => {
      const client = connect(path);
      client.once("connect", () => {
        client.destroy();
        resolve(true);
      });
      client.once("error", () => {
        resolve(false);
      });
    });
    if (connected) return;
    if (Date.now() > deadline) throw new Error(`QMP socket ${path} not ready in 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function privateKiB(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(text)?.[1] ?? "0");
  return field("Private_Clean") + field("Private_Dirty");
}

export async function main(args: string[]): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.log("sandbox bench: needs root (the jail drops from root to a per-VM uid)");
    return;
  }
  markInheritedFdsCloseOnExec();
  const runsFlag = args.indexOf("--runs");
  const runs = runsFlag >= 0 ? Number(args[runsFlag + 1]) : 10;
  const root = mkdtempSync(join(tmpdir(), "palisade-bench-sandbox-"));
  const perFile = probeSandboxHost(QEMU);
  const host = await prepareRuntimeTree(perFile, QEMU, join(root, "runtime"), ["/usr/bin/true"]);
  const image = await ensureDefaultImage();
  const spec: JailSpec = {
    vmId: "bench",
    uid: 64999,
    gid: 64999,
    runDir: join(root, "run"),
    // QEMU loads the kernel even stopped (-S).
    binds: [{ hostPath: image.kernelPath, readonly: true }],
    devices: [],
    shareHostNetwork: false,
    limits: { memoryBytes: 512n * 1024n * 1024n, pids: 64, cpuPercent: 200, openFiles: 1024 },
    qemuBinary: QEMU,
  };
  try {
    console.log(
      `host gaps: ${sandboxGaps(host).join("; ") || "none"}; ${runs} interleaved runs each, medians`,
    );
    const jail = await prepareJail(spec, host);

    const plainTrue: number[] = [];
    const jailedTrue: number[] = [];
    const perFileTrue: number[] = [];
    const jailedArgv = jailCommandArgv(spec, ["/usr/bin/true"], host);
    const perFileArgv = jailCommandArgv(spec, ["/usr/bin/true"], perFile);
    for (let run = 0; run < runs; run++) {
      plainTrue.push(timeSync(["/usr/bin/true"]));
      jailedTrue.push(timeSync(jailedArgv));
      perFileTrue.push(timeSync(perFileArgv));
    }
    console.log(
      `/usr/bin/true          plain ${median(plainTrue).toFixed(1)} ms   jailed ${median(jailedTrue).toFixed(1)} ms   jail adds ${(median(jailedTrue) - median(plainTrue)).toFixed(1)} ms (files bound one by one, no tree: ${median(perFileTrue).toFixed(1)} ms)`,
    );

    const prepare: number[] = [];
    await jail.cleanup();
    for (let run = 0; run < runs; run++) {
      const started = performance.now();
      const again = await prepareJail(spec, host);
      await again.cleanup();
      prepare.push(performance.now() - started);
    }
    console.log(`prepareJail + cleanup  ${median(prepare).toFixed(1)} ms`);

    const prepared = await prepareJail(spec, host);
    const socket = join(spec.runDir, "qmp.sock");
    const engineHost = probeHost();
    // The engine's command line for a small TCG microvm of the default kernel, stopped before its first instruction.
    const qemuSpec = parseVmSpec({ name: "bench", uuid: randomUUID(), kernel: image.kernelPath, memoryMiB: 64, vcpus: 1, accel: "tcg", machine: "microvm" });
    const qemuArgs = [...planVm(qemuSpec, engineHost, join(root, "vms"), [], spec.runDir).argv, "-S"];
    const plainQemu: number[] = [];
    const jailedQemu: number[] = [];
    for (let run = 0; run < runs; run++) {
      rmSync(socket, { force: true });
      plainQemu.push(await qemuToReady([QEMU, ...qemuArgs], socket));
      rmSync(socket, { force: true });
      jailedQemu.push(await qemuToReady(jailArgv(spec, qemuArgs, host), socket));
    }
    console.log(
      `QEMU spawn → QMP ready plain ${median(plainQemu).toFixed(1)} ms   jailed ${median(jailedQemu).toFixed(1)} ms   jail adds ${(median(jailedQemu) - median(plainQemu)).toFixed(1)} ms`,
    );

    if (!args.includes("--no-guest")) {
      // The issue's measure: the same guest, started by the engine, to its ready marker, with and without the jail.
      const runRoot = join(root, "vms");
      const plainGuest: number[] = [];
      const jailedGuest: number[] = [];
      for (let run = 0; run < runs; run++) {
        plainGuest.push(await engineToReady(image, engineHost, runRoot, true));
        jailedGuest.push(await engineToReady(image, engineHost, runRoot, false));
      }
      console.log(
        `startVm → ready        plain ${median(plainGuest).toFixed(0)} ms   jailed ${median(jailedGuest).toFixed(0)} ms   difference ${(median(jailedGuest) - median(plainGuest)).toFixed(0)} ms (microvm TCG boot; its spread: plain ${Math.min(...plainGuest).toFixed(0)}–${Math.max(...plainGuest).toFixed(0)} ms)`,
      );
    }

    // Memory: the same QEMU plain and jailed, left running (-S). The jail adds bwrap's
    // monitor (outside) and, for an attached worker (`palisade run`), bwrap's reaper as the
    // jail's pid 1; a detached worker's QEMU is itself pid 1. Also compared: QEMU's own
    // private memory plain vs jailed (the runtime tree shares its pages with the host's files).
    // A killed QEMU leaves its sockets; root's would block the jailed QEMU (sticky run dir).
    const removeSockets = (): void => {
      for (const name of ["qmp.sock", "console.sock"]) rmSync(join(spec.runDir, name), { force: true });
    };
    removeSockets();
    const plainChild = spawn(QEMU, qemuArgs, { env: {}, stdio: "ignore" });
    await waitForSocket(socket);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const plainQemuKiB = privateKiB(plainChild.pid ?? 0);
    plainChild.kill("SIGKILL");
    await new Promise((resolve) => plainChild.once("exit", resolve));
    for (const attached of [false, true]) {
      removeSockets();
      // The status file holds every earlier run's documents: start it afresh for this worker.
      writeFileSync(jailPaths(spec.runDir).statusFile, "");
      const argv = jailArgv({ ...spec, dieWithParent: attached }, qemuArgs, host);
      const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: "ignore" });
      let jailPid: number | undefined;
      for (let tries = 0; tries < 500 && jailPid === undefined; tries++) {
        jailPid = (await readWorkerStatus(spec.runDir)).childPid;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await waitForSocket(socket);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const qemuPid = jailPid === undefined ? undefined : (jailedProgramPid(jailPid, QEMU) ?? jailPid);
      const monitorPid = Number(/^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${String(jailPid)}/status`, "utf8"))?.[1]);
      const monitorKiB = privateKiB(monitorPid);
      const reaperKiB = attached && jailPid !== undefined && jailPid !== qemuPid ? privateKiB(jailPid) : 0;
      const qemuKiB = privateKiB(qemuPid ?? 0);
      console.log(
        `memory per VM (${attached ? "attached" : "detached"}) bwrap monitor ${monitorKiB} KiB${attached ? ` + reaper ${reaperKiB} KiB` : ""} = ${monitorKiB + reaperKiB} KiB of extra processes; QEMU private plain ${plainQemuKiB} KiB, jailed ${qemuKiB} KiB (guest RAM untouched under -S)`,
      );
      child.kill("SIGKILL");
      if (qemuPid !== undefined) process.kill(qemuPid, "SIGKILL");
      await new Promise((resolve) => child.once("exit", resolve));
    }
    await prepared.cleanup();
    console.log("targets (issue 7): ≤ 50 ms per start, ≤ 2 MiB per VM");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
