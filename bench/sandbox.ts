/**
 * `npm run bench -- sandbox [--runs N]` (as root): what the worker jail costs.
 *
 * 1. `/usr/bin/true` plain vs in the worker's jail (the jail's own start cost), with the
 *    runtime tree (the default) and with every file bound on its own;
 * 2. `prepareJail()` + `cleanup()` (directories, seccomp program, cgroups);
 * 3. QEMU from spawn to its QMP greeting (`-S`, no guest), plain vs jailed; then the same
 *    guest (the default image, q35, TCG) from spawn to its ready marker (`--no-guest` skips);
 * 4. memory the jail adds per VM: the private memory of bwrap's monitor process, the only
 *    process the jail adds (QEMU runs as the jail's pid 1).
 * Runs are interleaved (plain, jailed, plain, …) so drift hits both sides alike.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { ensureDefaultImage, READY_MARKER } from "../src/image/index.js";
import { compilePolicy, resolvePolicy } from "../src/policy/index.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  QEMU_SECCOMP_ARGS,
  jailArgv,
  jailCommandArgv,
  jailPaths,
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

/** Boots a guest (argv) until its ready marker on the console, then kills it; returns ms to the marker. */
async function guestToReady(argv: string[]): Promise<number> {
  const started = performance.now();
  const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: ["ignore", "pipe", "ignore"] });
  let output = "";
  const readyMs = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error("guest not ready in 120 s"));
    }, 120_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      if (output.includes(READY_MARKER)) {
        clearTimeout(timer);
        resolve(performance.now() - started);
      }
    });
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
  return readyMs;
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
  const spec: JailSpec = {
    vmId: "bench",
    uid: 64999,
    gid: 64999,
    runDir: join(root, "run"),
    binds: [],
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
    const qemuArgs = [
      "-M",
      "microvm",
      "-accel",
      "tcg",
      "-m",
      "64",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-S",
      "-qmp",
      `unix:${socket},server=on,wait=off`,
      ...QEMU_SECCOMP_ARGS,
    ];
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
      // The measure: the same guest from spawn to its ready marker, plain vs jailed.
      const image = await ensureDefaultImage();
      const guestSpec: JailSpec = {
        ...spec,
        vmId: "bench-guest",
        runDir: join(root, "run-guest"),
        // Killing bwrap after the marker must take the guest with it.
        dieWithParent: true,
        limits: { ...spec.limits, memoryBytes: 768n * 1024n * 1024n },
        binds: [
          { hostPath: image.kernelPath, readonly: true },
          { hostPath: image.initrdPath, readonly: true },
        ],
      };
      const guestJail = await prepareJail(guestSpec, host);
      const cpu = compilePolicy(resolvePolicy("default"), { accel: "tcg", hostCpuVendor: "other" }).cpuArg;
      const guestArgs = [
        "-M",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        cpu,
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        image.kernelPath,
        "-initrd",
        image.initrdPath,
        "-append",
        "console=ttyS0 quiet panic=-1 palisade.net=none",
        "-no-reboot",
        ...QEMU_SECCOMP_ARGS,
      ];
      const plainGuest: number[] = [];
      const jailedGuest: number[] = [];
      for (let run = 0; run < runs; run++) {
        plainGuest.push(await guestToReady([QEMU, ...guestArgs]));
        jailedGuest.push(await guestToReady(jailArgv(guestSpec, guestArgs, host)));
      }
      await guestJail.cleanup();
      console.log(
        `guest spawn → ready    plain ${median(plainGuest).toFixed(0)} ms   jailed ${median(jailedGuest).toFixed(0)} ms   difference ${(median(jailedGuest) - median(plainGuest)).toFixed(0)} ms (q35 TCG boot; its spread: plain ${Math.min(...plainGuest).toFixed(0)}–${Math.max(...plainGuest).toFixed(0)} ms)`,
      );
    }

    // Memory: a jailed QEMU left running; bwrap's monitor is the jail's only extra process.
    rmSync(socket, { force: true });
    // The status file holds every earlier run's documents: start it afresh for this worker.
    writeFileSync(jailPaths(spec.runDir).statusFile, "");
    const argv = jailArgv(spec, qemuArgs, host);
    const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: "ignore" });
    let qemuPid: number | undefined;
    for (let tries = 0; tries < 500 && qemuPid === undefined; tries++) {
      qemuPid = (await readWorkerStatus(spec.runDir)).childPid;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const monitorPid = Number(
      /^PPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${String(qemuPid)}/status`, "utf8"))?.[1],
    );
    console.log(
      `memory per VM          bwrap monitor private ${privateKiB(monitorPid)} KiB; jailed QEMU private ${privateKiB(qemuPid ?? 0)} KiB (guest RAM untouched under -S)`,
    );
    child.kill("SIGKILL");
    if (qemuPid !== undefined) process.kill(qemuPid, "SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    await prepared.cleanup();
    console.log("targets (issue 7): ≤ 50 ms per start, ≤ 2 MiB per VM");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
