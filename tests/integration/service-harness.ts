/**
 * What the service's integration tests share: starting `palisade service run` on a Unix
 * socket and sending it one request as this process (root).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";

/** A response: its status and parsed JSON body (null when empty). */
export interface Answer {
  status: number;
  body: unknown;
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
          resolvePromise({ status: res.statusCode ?? 0, body: text === "" ? null : JSON.parse(text) });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(payload);
  });
}
