/**
 * The CLI's client of the management service: HTTP over the service's Unix socket. The
 * socket comes from `--connect unix:PATH`, else `PALISADE_SERVICE`, else the standard
 * socket. The client sends no identity: the service reads it from the kernel.
 */
import { request } from "node:http";
import type { Socket } from "node:net";
import { HostError, PalisadeError } from "../util/errors.js";
import { DEFAULT_SOCKET_PATH, parseListenAddress } from "../service/index.js";
import { NotSupportedError } from "../service/index.js";

/** An error answer of the service, with the service's code (`authz.denied`, `vm.not-found`, …). */
export class ServiceRequestError extends PalisadeError {
  readonly code: string;
  constructor(
    message: string,
    code: string,
    readonly status: number,
    readonly details: Readonly<Record<string, unknown>>,
  ) {
    super(message);
    this.code = code;
  }
}

/**
 * The socket path the CLI talks to.
 *
 * @throws {ConfigError} for a malformed address
 * @throws {NotSupportedError} for tcp://
 */
export function resolveServiceSocket(
  connect: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const value =
    connect ??
    (env.PALISADE_SERVICE !== undefined && env.PALISADE_SERVICE !== "" ? env.PALISADE_SERVICE : undefined);
  if (value === undefined) return DEFAULT_SOCKET_PATH;
  const address = parseListenAddress(value);
  if (address.kind === "tcp")
    throw new NotSupportedError(
      "The service does not listen on TCP in this version (remote access needs TLS and tokens, not implemented yet); use unix:PATH, or ssh -L to reach a remote socket",
      "service.tcp-unsupported",
    );
  return address.path;
}

/** A client bound to one socket. */
export class ServiceClient {
  constructor(
    readonly socketPath: string,
    readonly timeoutMs = 60_000,
  ) {}

  /** See {@link openConsole}. */
  openConsole(name: string, input: boolean): Promise<Socket> {
    return openConsole(this.socketPath, name, input);
  }

  /**
   * Sends one request and returns the parsed JSON answer.
   *
   * @throws {ServiceRequestError} when the service answers with an error
   * @throws {HostError} `service.unreachable` when nothing listens on the socket
   */
  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers:
            payload === undefined
              ? {}
              : { "content-type": "application/json", "content-length": payload.length },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown;
            try {
              parsed = text === "" ? null : JSON.parse(text);
            } catch {
              reject(
                new HostError(
                  `The service answered ${res.statusCode ?? "?"} with a body that is not JSON`,
                  "service.bad-answer",
                ),
              );
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              resolve(parsed as T);
              return;
            }
            const error = (parsed as { error?: { code?: unknown; message?: unknown } } | null)?.error;
            const { code, message, ...details } = (error ?? {}) as Record<string, unknown>;
            reject(
              new ServiceRequestError(
                typeof message === "string" ? message : `The service answered ${status}`,
                typeof code === "string" ? code : `http.${status}`,
                status,
                details,
              ),
            );
          });
        },
      );
      req.on("timeout", () =>
        req.destroy(
          new HostError(`No answer from the service within ${this.timeoutMs} ms`, "service.timeout"),
        ),
      );
      req.on("error", (error: NodeJS.ErrnoException) => {
        if (error instanceof PalisadeError) reject(error);
        else if (error.code === "ENOENT" || error.code === "ECONNREFUSED") {
          reject(
            new HostError(
              `Cannot reach the palisade service at ${this.socketPath}: is it running? (start it with palisade service run, or use --connect / PALISADE_SERVICE)`,
              "service.unreachable",
            ),
          );
        } else if (error.code === "EACCES") {
          reject(new HostError(`No permission to connect to ${this.socketPath}`, "service.unreachable"));
        } else
          reject(
            new HostError(
              `Cannot talk to the service at ${this.socketPath}: ${error.message}`,
              "service.unreachable",
            ),
          );
      });
      req.end(payload);
    });
  }
}

/** What an answer's error body says, as a ServiceRequestError. */
function requestError(status: number, text: string): ServiceRequestError {
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: described by its status alone.
  }
  const error = (parsed as { error?: Record<string, unknown> } | null)?.error ?? {};
  const { code, message, ...details } = error;
  return new ServiceRequestError(
    typeof message === "string" ? message : `The service answered ${status}`,
    typeof code === "string" ? code : `http.${status}`,
    status,
    details,
  );
}

/**
 * Opens VM `name`'s serial console (HTTP upgrade to `palisade-console`): the socket
 * yields the recent output, then live output; what is written to it goes to the guest
 * when `input` was granted.
 *
 * @throws {ServiceRequestError} 403 naming `vm.console-read` or `vm.console-write`,
 *   404, 409 when the VM does not run
 */
export function openConsole(socketPath: string, name: string, input: boolean): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const req = request({
      socketPath,
      method: "GET",
      path: `/v1/vms/${encodeURIComponent(name)}/console${input ? "?input=1" : ""}`,
      headers: { connection: "Upgrade", upgrade: "palisade-console" },
    });
    req.on("upgrade", (_res, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        reject(requestError(res.statusCode ?? 0, Buffer.concat(chunks).toString("utf8")));
      });
    });
    req.on("error", (error: NodeJS.ErrnoException) => {
      reject(
        new HostError(`Cannot reach the palisade service at ${socketPath}: ${error.message}`, "service.unreachable"),
      );
    });
    req.end();
  });
}

/** A client for the socket `--connect` or the environment names. */
export function serviceClient(connect: string | undefined): ServiceClient {
  return new ServiceClient(resolveServiceSocket(connect));
}

/** The `--connect` option's help text. */
export const CONNECT_HELP = `service address: unix:PATH (default: $PALISADE_SERVICE, else unix:${DEFAULT_SOCKET_PATH})`;

/** Left-aligned columns separated by two spaces; the first row is the header. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return (
    rows
      .map((row) =>
        row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  "),
      )
      .join("\n") + "\n"
  );
}

/** Prints `value` as indented JSON. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
