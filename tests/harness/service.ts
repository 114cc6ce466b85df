/**
 * What the service's integration tests and benchmarks share: starting `palisade service
 * run` on a Unix socket, stopping it, and sending it one request as this process (root).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { request, type IncomingHttpHeaders } from "node:http";

/** A response: its status, parsed JSON body (null when empty) and headers. */
export interface Answer {
  status: number;
  body: unknown;
  headers: IncomingHttpHeaders;
}

/** The VM fields the tests read from the API. */
export interface VmBody {
  id: string;
  name: string;
  state: string;
  stateReason: string | null;
}

/** Starts the service from `cli` with its data in `dataDir`; resolves once it listens on `socketPath`. */
export function startServiceAt(cli: string, dataDir: string, socketPath: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cli, "service", "run", "--data-dir", dataDir, "--listen", `unix:${socketPath}`], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`service did not start within 60 s: ${stderr}`));
    }, 60_000);
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes("listening on")) {
        clearTimeout(timer);
        resolvePromise(child);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`service exited ${code}: ${stderr}`));
    });
  });
}

/** One request over the service's socket; `rawBody` is sent as is (for malformed-body tests). */
export function callSocket(
  socketPath: string,
  method: string,
  path: string,
  body: unknown,
  options: { timeoutMs: number; rawBody?: Buffer },
): Promise<Answer> {
  const payload = options.rawBody ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
  return new Promise((resolvePromise, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        timeout: options.timeoutMs,
        headers: payload === undefined ? {} : { "content-type": "application/json", "content-length": payload.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          resolvePromise({ status: res.statusCode ?? 0, body: text === "" ? null : JSON.parse(text), headers: res.headers });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** Kills the service with `signal` and waits for it to exit (SIGKILL after 10 s). */
export function stopService(child: ChildProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  return new Promise((resolvePromise) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolvePromise();
      return;
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolvePromise();
    });
    child.kill(signal);
  });
}

/** The body of a 2xx answer; anything else fails the test, naming the request and the error. */
export function okBody(answer: Answer, method: string, path: string): unknown {
  assert.ok(answer.status >= 200 && answer.status < 300, `${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}
