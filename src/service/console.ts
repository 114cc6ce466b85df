/**
 * `GET /v1/vms/:name/console` with `Upgrade: palisade-console`: the serial console of a
 * running VM over the service's socket. Reading the output needs `vm.console-read`;
 * asking for input (`?input=1`) also needs `vm.console-write`, checked before the
 * upgrade, so a read-only caller gets a 403 for input and can never write. The client
 * first receives the recent output the service kept (a bounded ring), then live output.
 * Each attach is audited.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import { decide, type Operation, type Principal } from "../authz/index.js";
import { errorMessage } from "../util/errors.js";
import type { ServiceCore } from "./core.js";
import { ApiError, ConflictError, NotFoundError, PermissionDeniedError, ValidationError } from "./errors.js";
import { nameSchema } from "./api/schemas.js";

/** The `Upgrade` token of the console protocol. */
export const CONSOLE_UPGRADE = "palisade-console";

const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  500: "Internal Server Error",
};

/** What a console request asks for (pure). */
export function parseConsoleRequest(url: string): { name: string; input: boolean } | null {
  const parsed = new URL(url, "http://service");
  const match = /^\/v1\/vms\/([^/]+)\/console$/.exec(parsed.pathname);
  if (match?.[1] === undefined) return null;
  const name = decodeURIComponent(match[1]);
  if (!nameSchema.safeParse(name).success) return null;
  const input = parsed.searchParams.get("input");
  return { name, input: input === "1" || input === "true" };
}

function refuse(socket: Duplex, error: ApiError): void {
  const body = JSON.stringify({ error: { code: error.code, message: error.message, ...error.extra } });
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_TEXT[error.status] ?? "Error"}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/**
 * Handles one upgrade request on the service's server.
 *
 * @param uidOf the kernel's uid of the connection (SO_PEERCRED)
 */
export function handleConsoleUpgrade(
  core: ServiceCore,
  request: IncomingMessage,
  socket: Duplex,
  uidOf: (socket: Socket) => number,
): void {
  let principal: Principal | null = null;
  let operation: Operation = "vm.console-read";
  let vmName: string | null = null;
  let scope: string | null = null;
  const audit = (result: string, detail: string | null, decision: "allowed" | "denied" | "none"): void => {
    try {
      core.transaction(() => {
        core.record({
          time: new Date().toISOString(),
          kind: "request",
          principal: principal?.user ?? "unknown",
          uid: principal?.uid ?? null,
          operation,
          scope,
          vm: vmName,
          decision,
          result,
          detail,
        });
      });
    } catch (error: unknown) {
      process.stderr.write(`palisade service: cannot audit a console request: ${errorMessage(error)}\n`);
    }
  };
  try {
    principal = core.hostUsers.byUid(uidOf(request.socket));
    if (request.headers.upgrade?.toLowerCase() !== CONSOLE_UPGRADE) {
      throw new ValidationError(`Unsupported upgrade; use Upgrade: ${CONSOLE_UPGRADE}`, null, "api.bad-upgrade");
    }
    const asked = parseConsoleRequest(request.url ?? "");
    if (asked === null) throw new NotFoundError("No such console endpoint", "api.no-route");
    vmName = asked.name;
    const vm = core.vms.get(asked.name);
    scope = vm.scope;
    const who = principal;
    const check = (op: Operation): void => {
      operation = op;
      if (core.authorize && !decide(core.policies.current(), who, op, { scope: vm.scope, vm: vm.name }).allowed) {
        throw new PermissionDeniedError(`Permission denied: ${who.user} may not ${op} on VM ${vm.name}`, op);
      }
    };
    check("vm.console-read");
    if (asked.input) check("vm.console-write");
    const tap = core.runtime.openConsole?.(core.runDir(vm)) ?? null;
    if (tap === null) {
      throw new ConflictError(`VM ${vm.name} is ${vm.state}: no console to attach to`, "vm.bad-state", { state: vm.state });
    }
    audit("ok", asked.input ? "console attached with input" : "console attached read-only", "allowed");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${CONSOLE_UPGRADE}\r\nConnection: Upgrade\r\n\r\n`);
    socket.write(tap.recent());
    const unsubscribe = tap.subscribe(
      (chunk) => socket.write(chunk),
      () => socket.end(),
    );
    socket.on("data", (chunk: Buffer) => {
      // Without console-write the bytes go nowhere: the upgrade promised no input.
      if (asked.input) tap.write(chunk);
    });
    socket.on("close", unsubscribe);
    socket.on("error", unsubscribe);
  } catch (error: unknown) {
    const apiError =
      error instanceof ApiError
        ? error
        : new (class extends ApiError {
            readonly status = 500;
            readonly code = "service.internal";
          })("Internal error");
    audit(apiError.code, apiError.message, apiError instanceof PermissionDeniedError ? "denied" : "none");
    refuse(socket, apiError);
  }
}
