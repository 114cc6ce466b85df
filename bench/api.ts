/**
 * `npm run bench -- api [--seconds 20] [--clients 64] [--rounds 1] [--rate 5000|0]`: the management service's API under
 * load. 64 concurrent keep-alive clients over the Unix socket cycle through list VMs, show a
 * VM and authz check, for N seconds, against a service with authorization and one with
 * `decide()` switched off (a benchmark-only option, not reachable from the CLI). The clients
 * run as `nobody`, holding Viewer within the VMs' scope, so every request takes the full
 * authorization path (root would short-circuit it). Every request is audited in both runs.
 * The peer, measured first under the same load: bare fastify answering the same paths with
 * fixed JSON (the floor for any fastify service on this host).
 * Two phases: closed loop (maximum throughput), then paced at `--rate` req/s in total
 * (default 5000, the target's rate; 0 skips it) for the latency at that rate.
 * Prints requests/s and latency percentiles, and the cost of authorization.
 */
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import fastify from "fastify";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { decide, emptyPolicy, type PolicyDocument } from "../src/authz/index.js";
import { startService } from "../src/service/index.js";

/** Nanoseconds per decide() call for the benchmark's principal and policy. */
function decideNs(): number {
  const policy: PolicyDocument = {
    ...emptyPolicy(),
    scopes: [{ name: "bench", description: "" }],
    assignments: [{ id: 1, role: "Viewer", scope: "bench", member: { kind: "user", name: "nobody" } }],
  };
  const who = { uid: 65534, user: "nobody", groups: ["nogroup"] };
  let allowed = 0;
  const n = 1_000_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++)
    if (
      decide(policy, who, i % 2 === 0 ? "vm.view-config" : "vm.start", { scope: "bench", vm: "bench-3" })
        .allowed
    )
      allowed++;
  const ns = Number(process.hrtime.bigint() - t0) / n;
  if (allowed !== n / 2) throw new Error("decide() gave an unexpected answer in the benchmark");
  return ns;
}

const thisFile = fileURLToPath(import.meta.url);
const VMS = 10;
const WARMUP_MS = 2000;

interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Requests including the warm-up. */
  totalRequests: number;
  /** CPU time (user + system) the service process spent per request, warm-up included. */
  serviceCpuUsPerRequest: number;
}

function option(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  const value = index < 0 ? undefined : Number(args[index + 1]);
  return value === undefined || !Number.isFinite(value) || value <= 0 ? fallback : value;
}

function call(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        agent: false,
        headers:
          payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => {
          resolve({ status: res.statusCode ?? 0, text });
        });
        res.on("error", reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * Child mode: the peer — bare fastify on a Unix socket answering the same three paths
 * with fixed JSON: no identity, no authorization, no store, no audit.
 */
async function serveBare(socketPath: string): Promise<void> {
  const app = fastify({ logger: false });
  const vm = {
    name: "bench-3",
    state: "stopped",
    spec: { memoryMiB: 512, vcpus: 1, kernel: "/boot/vmlinuz" },
  };
  app.get("/v1/vms", () => ({ vms: Array.from({ length: VMS }, () => vm) }));
  app.get("/v1/vms/:name", () => vm);
  app.post("/v1/authz/check", () => ({ allowed: true, reason: "bare" }));
  await app.listen({ path: socketPath });
  chmodSync(socketPath, 0o666);
  const cpuBefore = process.cpuUsage();
  process.stdout.write("ready\n");
  await new Promise<void>((resolve) => process.once("SIGTERM", resolve));
  const cpu = process.cpuUsage(cpuBefore);
  process.stdout.write(`cpu ${cpu.user + cpu.system}\n`);
  await app.close();
}

/** Child mode: the service, in its own process, until SIGTERM. */
async function serve(dataDir: string, socketPath: string, authorize: boolean): Promise<void> {
  const running = await startService({ dataDir, listen: { kind: "unix", path: socketPath }, authorize });
  const cpuBefore = process.cpuUsage();
  process.stdout.write("ready\n");
  await new Promise<void>((resolve) => process.once("SIGTERM", resolve));
  const cpu = process.cpuUsage(cpuBefore);
  process.stdout.write(`cpu ${cpu.user + cpu.system}\n`);
  await running.close();
}

/**
 * One keep-alive connection speaking just enough HTTP/1.1 (like wrk): a Node http.Agent
 * costs the client more CPU per request than the service spends, and on a 2-core host
 * the load generator would then measure itself.
 */
class RawClient {
  readonly #socket: Socket;
  #buffer: Buffer = Buffer.alloc(0);
  #pending: { resolve: (status: number) => void; reject: (error: Error) => void } | undefined;

  constructor(socketPath: string) {
    this.#socket = connect(socketPath);
    this.#socket.on("data", (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#parse();
    });
    this.#socket.on("error", (error) => this.#pending?.reject(error));
    this.#socket.on("close", () => this.#pending?.reject(new Error("connection closed")));
  }

  #parse(): void {
    const headerEnd = this.#buffer.indexOf("\r\n\r\n");
    if (headerEnd < 0 || this.#pending === undefined) return;
    const head = this.#buffer.subarray(0, headerEnd).toString("latin1");
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? "0");
    if (this.#buffer.length < headerEnd + 4 + length) return;
    const status = Number(head.slice(9, 12));
    this.#buffer = this.#buffer.subarray(headerEnd + 4 + length);
    const pending = this.#pending;
    this.#pending = undefined;
    pending.resolve(status);
  }

  send(raw: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.#socket.write(raw);
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}

function rawRequest(method: string, path: string, body?: unknown): string {
  if (body === undefined) return `${method} ${path} HTTP/1.1\r\nhost: palisade\r\n\r\n`;
  const payload = JSON.stringify(body);
  return `${method} ${path} HTTP/1.1\r\nhost: palisade\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`;
}

/** Child mode: the load generator (run as nobody). */
async function load(socketPath: string, seconds: number, clients: number, rate: number): Promise<void> {
  const requests = [
    rawRequest("GET", "/v1/vms"),
    rawRequest("GET", "/v1/vms/bench-3"),
    rawRequest("POST", "/v1/authz/check", { operation: "vm.start", vm: "bench-5" }),
  ];
  const latencies: number[] = [];
  let errors = 0;
  let total = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const warmEnd = started + WARMUP_MS;
  const end = warmEnd + seconds * 1000;
  // Paced (rate > 0): each client sends on a fixed schedule, and latency counts from the
  // scheduled time, so a stall is charged to every request it delayed (no coordinated
  // omission). Closed loop (rate 0): each client sends as soon as its answer came.
  const intervalMs = rate > 0 ? (clients * 1000) / rate : 0;
  const loop = async (id: number): Promise<void> => {
    const client = new RawClient(socketPath);
    let n = id;
    let scheduled = started + (intervalMs * id) / clients;
    try {
      for (;;) {
        let t0 = performance.now();
        if (t0 >= end) return;
        if (intervalMs > 0) {
          if (scheduled > t0) await new Promise((resolve) => setTimeout(resolve, scheduled - t0));
          t0 = scheduled;
          scheduled += intervalMs;
          if (t0 >= end) return;
        }
        let ok = false;
        try {
          const status = await client.send(requests[n++ % requests.length] ?? "");
          ok = status === 200;
          if (!ok) firstError ??= `status ${status}`;
        } catch (error: unknown) {
          firstError ??= String(error);
          return;
        } finally {
          total++;
        }
        const t1 = performance.now();
        if (t0 >= warmEnd) {
          latencies.push(t1 - t0);
          if (!ok) errors++;
        }
      }
    } finally {
      client.close();
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, i) => loop(i)));
  latencies.sort((a, b) => a - b);
  const at = (q: number): number =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  const measured = (performance.now() - warmEnd) / 1000;
  const result: LoadResult = {
    requests: latencies.length,
    totalRequests: total,
    errors,
    seconds: measured,
    rps: latencies.length / measured,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    maxMs: latencies.at(-1) ?? NaN,
    serviceCpuUsPerRequest: NaN,
  };
  if (firstError !== undefined) process.stderr.write(`bench api: first error: ${firstError}\n`);
  process.stdout.write(JSON.stringify(result) + "\n");
}

function runChild(
  args: string[],
  options: { uid?: number; gid?: number; untilLine?: string },
): Promise<{ child: ReturnType<typeof spawn>; output: Promise<string> }> {
  const child = spawn(process.execPath, [thisFile, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    cwd: "/",
    ...(options.uid === undefined ? {} : { uid: options.uid }),
    ...(options.gid === undefined ? {} : { gid: options.gid }),
  });
  let stdout = "";
  const output = new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.once("exit", (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`bench child ${args[0] ?? ""} exited ${code}`));
    });
  });
  if (options.untilLine === undefined) return Promise.resolve({ child, output });
  const marker = options.untilLine;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("service did not start within 30 s"));
    }, 30_000);
    child.stdout.on("data", () => {
      if (stdout.includes(marker)) {
        clearTimeout(timer);
        resolve({ child, output });
      }
    });
    output.catch((error: unknown) => {
      clearTimeout(timer);
      reject(error instanceof Error ? error : new Error(String(error)));
    });
  });
}

async function measure(
  roundDir: string,
  mode: "authz" | "noauthz" | "bare",
  seconds: number,
  clients: number,
  rate: number,
): Promise<LoadResult> {
  mkdirSync(roundDir, { recursive: true, mode: 0o755 });
  const socketPath = join(roundDir, `${mode}.sock`);
  const args =
    mode === "bare"
      ? ["--serve-bare", socketPath]
      : ["--serve", join(roundDir, mode), socketPath, String(mode === "authz")];
  const { child, output } = await runChild(args, { untilLine: "ready" });
  try {
    if (mode === "bare") {
      const loader = await runChild(["--load", socketPath, String(seconds), String(clients), String(rate)], {
        uid: 65534,
        gid: 65534,
      });
      const result = JSON.parse(await loader.output) as LoadResult;
      child.kill("SIGTERM");
      result.serviceCpuUsPerRequest = Number(/cpu (\d+)/.exec(await output)?.[1]) / result.totalRequests;
      return result;
    }
    // Set up as root: a scope, VMs in it, and Viewer for nobody within that scope.
    await call(socketPath, "POST", "/v1/authz/scopes", { name: "bench" });
    for (let i = 0; i < VMS; i++)
      await call(socketPath, "POST", "/v1/vms", {
        name: `bench-${i}`,
        kernel: "/boot/vmlinuz",
        scope: "bench",
      });
    await call(socketPath, "POST", "/v1/vms", { name: "elsewhere", kernel: "/boot/vmlinuz" });
    await call(socketPath, "POST", "/v1/authz/assignments", {
      role: "Viewer",
      scope: "bench",
      user: "nobody",
    });
    const loader = await runChild(["--load", socketPath, String(seconds), String(clients), String(rate)], {
      uid: 65534,
      gid: 65534,
    });
    const result = JSON.parse(await loader.output) as LoadResult;
    child.kill("SIGTERM");
    const cpuUs = Number(/cpu (\d+)/.exec(await output)?.[1]);
    result.serviceCpuUsPerRequest = cpuUs / result.totalRequests;
    return result;
  } finally {
    child.kill("SIGTERM");
    await output.catch(() => "");
  }
}

function line(label: string, r: LoadResult): string {
  return `${label.padEnd(23)} ${r.rps.toFixed(0).padStart(7)} req/s   p50 ${r.p50Ms.toFixed(2)} ms   p99 ${r.p99Ms.toFixed(2)} ms   max ${r.maxMs.toFixed(1)} ms   service CPU ${r.serviceCpuUsPerRequest.toFixed(0)} µs/request   ${r.requests} requests, ${r.errors} errors`;
}

/** Entry point for `npm run bench -- api`. */
export async function main(args: string[]): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("bench api: run as root (the clients run as nobody, the service as root)");
    process.exitCode = 2;
    return;
  }
  const seconds = option(args, "--seconds", 20);
  const clients = option(args, "--clients", 64);
  const rounds = option(args, "--rounds", 1);
  const rateIndex = args.indexOf("--rate");
  const rate = rateIndex < 0 ? 5000 : Number(args[rateIndex + 1] ?? "0") || 0;
  const dir = mkdtempSync(join(tmpdir(), "palisade-bench-api-"));
  chmodSync(dir, 0o755);
  try {
    console.log(
      `API benchmark: ${clients} clients (as nobody, Viewer in scope), ${seconds} s each after ${WARMUP_MS / 1000} s warm-up; list / show / authz-check round robin; every request audited`,
    );
    // Rounds interleave the three servers so that load from elsewhere on the host hits
    // each alike; the median round (by req/s) of each is reported.
    const labels = {
      bare: "peer: bare fastify",
      noauthz: "without authorization",
      authz: "with authorization",
    } as const;
    const median = (results: LoadResult[]): LoadResult => {
      const sorted = [...results].sort((x, y) => x.p99Ms - y.p99Ms);
      const middle = sorted[Math.floor(sorted.length / 2)];
      if (middle === undefined) throw new Error("no benchmark rounds");
      return middle;
    };
    const phase = async (
      title: string,
      phaseRate: number,
    ): Promise<Record<"bare" | "noauthz" | "authz", LoadResult>> => {
      console.log(title);
      const runs: Record<"bare" | "noauthz" | "authz", LoadResult[]> = { bare: [], noauthz: [], authz: [] };
      for (let round = 1; round <= rounds; round++) {
        for (const mode of ["bare", "noauthz", "authz"] as const) {
          const result = await measure(
            join(dir, `${phaseRate}-r${round}`),
            mode,
            seconds,
            clients,
            phaseRate,
          );
          runs[mode].push(result);
          if (rounds > 1) console.log(`  round ${round}: ${line(labels[mode], result)}`);
        }
      }
      if (rounds > 1) console.log(`  median of ${rounds} rounds (by p99):`);
      const result = { bare: median(runs.bare), noauthz: median(runs.noauthz), authz: median(runs.authz) };
      for (const mode of ["bare", "noauthz", "authz"] as const)
        console.log(`  ${line(labels[mode], result[mode])}`);
      return result;
    };
    const closed = await phase("closed loop (each client sends when answered): maximum throughput", 0);
    if (rate > 0) await phase(`paced at ${rate} req/s in total (latency from the scheduled send time)`, rate);
    const off = closed.noauthz;
    const on = closed.authz;
    const perRequestOn = 1000 / on.rps;
    const perRequestOff = 1000 / off.rps;
    const pct = (a: number, b: number): string => `${(((a - b) / b) * 100).toFixed(1)}%`;
    console.log(
      `authorization adds (closed loop): ${pct(perRequestOn, perRequestOff)} to wall time per request (1/throughput), ${pct(on.p99Ms, off.p99Ms)} to p99, ${pct(on.serviceCpuUsPerRequest, off.serviceCpuUsPerRequest)} to service CPU per request`,
    );
    const ns = decideNs();
    // decide() calls per request of the round robin: list = one per VM (11), show = 1,
    // check = 2 (view the VM, then the question asked).
    const callsPerRequest = (VMS + 1 + 1 + 2) / 3;
    const decideUs = (callsPerRequest * ns) / 1000;
    console.log(
      `decide() alone: ${ns.toFixed(0)} ns per call (in process, 1e6 calls); ${callsPerRequest.toFixed(1)} calls per request = ${decideUs.toFixed(1)} µs = ${((decideUs / on.serviceCpuUsPerRequest) * 100).toFixed(1)}% of the service's CPU per request`,
    );
    console.log(`targets: p99 <= 10 ms at >= 5000 req/s; authorization <= 5%`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === thisFile) {
  const [mode, a = "", b = "", c = ""] = process.argv.slice(2);
  if (mode === "--serve") await serve(a, b, c === "true");
  else if (mode === "--serve-bare") await serveBare(a);
  else if (mode === "--load") await load(a, Number(b), Number(c), Number(process.argv[6] ?? "0"));
}
