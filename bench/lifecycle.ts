/**
 * `npm run bench -- lifecycle [--vms 20] [--idle 10] [--memory 128M]`: VMs through the
 * management service, as a user drives them. A real service process (`palisade service
 * run`, engine runtime) on a temp data dir; the default guest image.
 *
 * - Throughput: create + start + ready (PALISADE-READY seen through the console API) +
 *   stop + delete of `--vms` VMs one at a time, then two at a time: VMs per minute.
 * - Service overhead per start: the start request's time (request sent → answer, QEMU
 *   running and its QMP answering, the console held) minus the time a bare QEMU with the
 *   same command line takes from spawn to its first QMP answer, measured in the same run
 *   (the peer). The gap is then split with two more peers, interleaved with the service's
 *   starts: the engine's own start of the same VM in this process (`startVm`, detached,
 *   jailed as the service's workers are, console held), and the same without the jail.
 *   Start request − engine start is what the service itself adds (request handling,
 *   authorization, audit commits, store writes, its checks); engine − unjailed engine is
 *   the jail's preparation and launch; unjailed engine − bare QEMU is the engine's
 *   preflight, plan and worker record.
 * - The service's private memory (smaps_rollup, clean + dirty) with 0, 1 and `--idle`
 *   running idle VMs, and what each VM adds.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseVmSpec, planVm, probeHost, QmpClient, startVm } from "../src/engine/index.js";
import { ensureDefaultImage } from "../src/image/index.js";
import { callSocket, okBody } from "../tests/harness/service.js";
import { CLI } from "../tests/harness/test-vm.js";
import { median, privateMemoryKiB } from "./lib-boot.js";

/** The shipped CLI (the bundle). */
const cliMain = CLI;
const READY = "PALISADE-READY";
const BOOT_TIMEOUT_MS = 120_000;

function flag(args: string[], name: string, fallback: string): string {
  const index = args.indexOf(name);
  return index >= 0 ? (args[index + 1] ?? fallback) : fallback;
}

interface Answer {
  status: number;
  body: unknown;
  /** The `Server-Timing` header: durations by name (ms). */
  timing: Map<string, number>;
}

/** `total;dur=1.2, runtime;dur=0.9` → durations by name. */
function parseServerTiming(header: string | string[] | undefined): Map<string, number> {
  const text = Array.isArray(header) ? header.join(",") : (header ?? "");
  const timing = new Map<string, number>();
  for (const match of text.matchAll(/([\w-]+);dur=([\d.]+)/g)) timing.set(match[1] ?? "", Number(match[2]));
  return timing;
}

class Bench {
  readonly socketPath: string;
  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  async call(method: string, path: string, body?: unknown): Promise<Answer> {
    const answer = await callSocket(this.socketPath, method, path, body, { timeoutMs: 300_000 });
    okBody(answer, method, path);
    return { status: answer.status, body: answer.body, timing: parseServerTiming(answer.headers["server-timing"]) };
  }

  /** Resolves once the console (recent output, then live) shows the ready marker. */
  waitReady(name: string, type?: string, marker = READY): Promise<void> {
    return new Promise((done, fail) => {
      const req = request({
        socketPath: this.socketPath,
        path: `/v1/vms/${name}/console${type === undefined ? "" : "?input=1"}`,
        headers: { connection: "Upgrade", upgrade: "palisade-console" },
      });
      req.on("upgrade", (_res, socket, head) => {
        // Typing: only output after the command counts.
        let tail = type === undefined ? head.toString("latin1") : "";
        if (type !== undefined) socket.write(`${type}\n`);
        const timer = setTimeout(() => {
          socket.destroy();
          fail(new Error(`${name}: no ${marker} within ${BOOT_TIMEOUT_MS} ms`));
        }, BOOT_TIMEOUT_MS);
        const check = (): void => {
          if (!tail.includes(marker)) {
            tail = tail.slice(-200);
            return;
          }
          clearTimeout(timer);
          socket.destroy();
          done();
        };
        socket.on("data", (chunk: Buffer) => {
          tail += chunk.toString("latin1");
          check();
        });
        socket.on("end", () => {
          clearTimeout(timer);
          fail(new Error(`${name}: the VM stopped before ${marker}: ${tail.slice(-200)}`));
        });
        check();
      });
      req.on("response", (res) => {
        fail(new Error(`${name}: console answered ${res.statusCode ?? "?"}`));
      });
      req.on("error", fail);
      req.end();
    });
  }
}

async function startServiceProcess(dataDir: string, socketPath: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cliMain, "service", "run", "--data-dir", dataDir, "--listen", `unix:${socketPath}`, "--stop-timeout", "10"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  await new Promise<void>((done, fail) => {
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes("listening on")) done();
    });
    child.once("exit", (code) => {
      fail(new Error(`service exited ${code}: ${stderr}`));
    });
  });
  return child;
}

interface Cycle {
  /** Start request sent → answered. */
  readonly startMs: number;
  /** Start request sent → ready marker seen through the console API. */
  readonly readyMs: number;
  readonly stopMs: number;
  /** The service's CPU time (user + system, clock ticks) during the start request. */
  readonly startTicks: number;
  /** The service's own time in the start request, as it reports it: its handler's total minus the engine's part. */
  readonly serviceOwnMs: number;
  /** The engine's part (the runtime's start: preflight, jail, QEMU up, console held). */
  readonly engineMs: number;
}

/** utime + stime of `pid`, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** One VM's whole life. */
async function oneVm(bench: Bench, name: string, base: Record<string, unknown>, servicePid: number): Promise<Cycle> {
  await bench.call("POST", "/v1/vms", { ...base, name });
  const ticks0 = cpuTicks(servicePid);
  const t0 = performance.now();
  const started = await bench.call("POST", `/v1/vms/${name}/start`);
  const startMs = performance.now() - t0;
  const engineMs = started.timing.get("runtime") ?? Number.NaN;
  // What the service spent outside the engine, plus the HTTP exchange outside its handler.
  const serviceOwnMs = startMs - engineMs;
  const startTicks = cpuTicks(servicePid) - ticks0;
  await bench.waitReady(name);
  const readyMs = performance.now() - t0;
  // The guest prints its marker before its acpid has surely opened the power button: a
  // power button pressed earlier is lost (and the stop is forced after the timeout).
  await bench.waitReady(name, "until [ -s /run/palisade/acpid.pid ]; do sleep 0.1; done; sleep 0.3; echo ACPI$((1+1))UP", "ACPI2UP");
  const t1 = performance.now();
  await bench.call("POST", `/v1/vms/${name}/stop`);
  const stopMs = performance.now() - t1;
  await bench.call("DELETE", `/v1/vms/${name}`);
  return { startMs, readyMs, stopMs, startTicks, serviceOwnMs, engineMs };
}

/** Bare QEMU, same command line: spawn → first QMP answer, in ms (the peer of a start request). */
async function bareQemuMs(kernel: string, initrd: string, memoryMiB: number, root: string): Promise<number> {
  const uuid = crypto.randomUUID();
  const spec = parseVmSpec({ name: "bare", uuid, kernel, initrd, memoryMiB, vcpus: 1, readyMarker: READY });
  const runDir = join(root, uuid);
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const plan = planVm(spec, probeHost(), root, [], runDir);
  const t0 = performance.now();
  const child = spawn(plan.qemuBinary, plan.argv, { stdio: "ignore" });
  const qmpSocket = join(runDir, "qmp.sock");
  try {
    // As the engine does: poll for the socket, then one client (QEMU's monitor serves one
    // at a time, so an abandoned attempt would block the next).
    for (;;) {
      if (child.exitCode !== null) throw new Error("bare QEMU exited");
      if (performance.now() - t0 > 60_000) throw new Error("bare QEMU: no QMP socket within 60 s");
      if (existsSync(qmpSocket)) {
        try {
          const qmp = await QmpClient.connect(qmpSocket, "bare", 30_000);
          const ms = performance.now() - t0;
          qmp.close();
          return ms;
        } catch {
          // Not accepting yet: poll again.
        }
      }
      await sleep(5);
    }
  } finally {
    child.kill("SIGKILL");
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** The engine alone starting the VM as the service does (detached, console held), jailed or not: ms. */
async function engineStartMs(kernel: string, initrd: string, memoryMiB: number, root: string, jailed: boolean): Promise<number> {
  const uuid = crypto.randomUUID();
  const spec = parseVmSpec({ name: `engine-${uuid.slice(0, 8)}`, uuid, kernel, initrd, memoryMiB, vcpus: 1, readyMarker: READY });
  const t0 = performance.now();
  const worker = await startVm(spec, probeHost(), { runRoot: root, runDir: join(root, uuid), detached: true, noSandbox: !jailed });
  await worker.holdConsole();
  const ms = performance.now() - t0;
  await worker.kill();
  return ms;
}

const fmt = (n: number, digits = 1): string => n.toFixed(digits);

/** The `p` quantile (0–1) of `values`, nearest rank. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? Number.NaN;
}

export async function main(args: string[]): Promise<void> {
  const vms = Number(flag(args, "--vms", "20"));
  const idle = Number(flag(args, "--idle", "10"));
  const memoryMiB = Number(flag(args, "--memory", "128M").replace(/M$/i, ""));
  const image = await ensureDefaultImage();
  const dir = mkdtempSync(join(tmpdir(), "palisade-bench-life-"));
  chmodSync(dir, 0o755);
  const dataDir = join(dir, "data");
  const socketPath = join(dir, "service.sock");
  const base = { kernel: image.kernelPath, initrd: image.initrdPath, memoryMiB, readyMarker: READY };
  const service = await startServiceProcess(dataDir, socketPath);
  const pid = service.pid ?? 0;
  const bench = new Bench(socketPath);
  try {
    console.log(`lifecycle: ${vms} VMs of ${memoryMiB} MiB, default guest image; host load ${(await import("node:os")).loadavg().map((l) => l.toFixed(1)).join(" ")}`);
    // Warm-up: the first start loads the engine and fills caches.
    await oneVm(bench, "warmup", base, pid);
    const bareRoot = join(dir, "bare");
    const bare: number[] = [];
    const engine: number[] = [];
    const unjailed: number[] = [];
    const serviceStarts: number[] = [];

    const sequentialStart = performance.now();
    const cycles: Cycle[] = [];
    for (let i = 0; i < vms; i++) cycles.push(await oneVm(bench, `seq-${i}`, base, pid));
    const sequentialS = (performance.now() - sequentialStart) / 1000;
    console.log(`  one at a time : ${vms} VMs in ${fmt(sequentialS)} s = ${fmt((vms / sequentialS) * 60)} VMs/min (create, start, ready, acpid up, stop, delete)`);
    // The peer, interleaved with service starts so that both see the same host load.
    const engineRoot = join(dir, "engine", "vms");
    mkdirSync(engineRoot, { recursive: true });
    for (let i = 0; i < Math.min(vms, 10); i++) {
      bare.push(await bareQemuMs(image.kernelPath, image.initrdPath, memoryMiB, bareRoot));
      engine.push(await engineStartMs(image.kernelPath, image.initrdPath, memoryMiB, engineRoot, true));
      unjailed.push(await engineStartMs(image.kernelPath, image.initrdPath, memoryMiB, engineRoot, false));
      const cycle = await oneVm(bench, `peer-${i}`, base, pid);
      cycles.push(cycle);
      serviceStarts.push(cycle.startMs);
    }

    const parallelStart = performance.now();
    const lanes = [0, 1].map(async (lane) => {
      for (let i = lane; i < vms; i += 2) await oneVm(bench, `par-${i}`, base, pid);
    });
    await Promise.all(lanes);
    const parallelS = (performance.now() - parallelStart) / 1000;

    const ticksPerSecond = 100;
    console.log(`  two at a time : ${vms} VMs in ${fmt(parallelS)} s = ${fmt((vms / parallelS) * 60)} VMs/min`);
    const m = (key: "startMs" | "readyMs" | "stopMs"): number => median(cycles.map((c) => c[key]));
    console.log(`  per VM (median of ${cycles.length}, one at a time): start request ${fmt(m("startMs"))} ms, start → ready ${fmt(m("readyMs"))} ms, stop ${fmt(m("stopMs"))} ms`);
    console.log(`  bare QEMU spawn → QMP answer (peer, same argv): median ${fmt(median(bare))} ms (n=${bare.length})`);
    console.log(`  start request vs bare QEMU (interleaved, n=${bare.length}): ${fmt(median(serviceStarts))} ms vs ${fmt(median(bare))} ms = ${fmt(median(serviceStarts) - median(bare))} ms`);
    console.log(`    the service (start request − engine start of the same VM in this process, jailed, console held: ${fmt(median(engine))} ms): ${fmt(median(serviceStarts) - median(engine))} ms (two processes: noisy on a busy host; see the Server-Timing figure below)`);
    console.log(`    the worker's jail (engine jailed − unjailed: ${fmt(median(unjailed))} ms): ${fmt(median(engine) - median(unjailed))} ms`);
    console.log(`    the engine's preflight, plan and record (unjailed engine − bare QEMU): ${fmt(median(unjailed) - median(bare))} ms`);
    const own = cycles.map((c) => c.serviceOwnMs);
    console.log(
      `  the service's own time per start (start request − the engine's part it reports in Server-Timing, HTTP included): median ${fmt(median(own))} ms, p90 ${fmt(percentile(own, 0.9))} ms, max ${fmt(Math.max(...own))} ms (target ≤ 20 ms); the engine's part: median ${fmt(median(cycles.map((c) => c.engineMs)))} ms`,
    );
    const cpuMs = (cycles.reduce((sum, c) => sum + c.startTicks, 0) / cycles.length / ticksPerSecond) * 1000;
    console.log(`  service CPU time per start request: ${fmt(cpuMs)} ms (user + system, mean of ${cycles.length}, 10 ms ticks)`);

    const settle = async (): Promise<number> => {
      await sleep(3000);
      return privateMemoryKiB(pid);
    };
    const mem0 = await settle();
    await bench.call("POST", "/v1/vms", { ...base, name: "idle-0" });
    await bench.call("POST", "/v1/vms/idle-0/start");
    await bench.waitReady("idle-0");
    const mem1 = await settle();
    for (let i = 1; i < idle; i++) {
      await bench.call("POST", "/v1/vms", { ...base, name: `idle-${i}` });
      await bench.call("POST", `/v1/vms/idle-${i}/start`);
      await bench.waitReady(`idle-${i}`);
    }
    const memN = await settle();
    console.log(`  service private memory: 0 VMs ${fmt(mem0 / 1024)} MiB, 1 VM ${fmt(mem1 / 1024)} MiB, ${idle} VMs ${fmt(memN / 1024)} MiB`);
    console.log(`  memory added per running VM: ${fmt((memN - mem1) / (idle - 1), 0)} KiB (from 1 to ${idle}); first VM ${fmt(mem1 - mem0, 0)} KiB (target ≤ 1024 KiB)`);
    for (let i = 0; i < idle; i++) await bench.call("POST", `/v1/vms/idle-${i}/kill`);
  } finally {
    service.kill("SIGTERM");
    await new Promise((done) => service.once("exit", done));
    rmSync(dir, { recursive: true, force: true });
  }
}
