/**
 * The service process: takes the data dir's lock, opens the store, reconciles VM state
 * with the workers it finds, and serves the REST API on a Unix socket that any local
 * user may connect to; the kernel says who connected (SO_PEERCRED), the policy decides.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { dirname } from "node:path";
import fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import * as z from "zod";
import { decide, type AuditEntry, type Principal } from "../authz/index.js";
import { PalisadeError, errorMessage } from "../util/errors.js";
import { openApiDocument } from "./api/openapi.js";
import type { RequestContext, Route } from "./api/route.js";
import { buildRoutes } from "./api/routes.js";
import { handleConsoleUpgrade } from "./console.js";
import { ServiceCore } from "./core.js";
import {
  ApiError,
  BodyTooLargeError,
  NotFoundError,
  NotSupportedError,
  PermissionDeniedError,
  ServiceStartError,
  ValidationError,
} from "./errors.js";
import { HostUsers } from "./host-identity.js";
import { acquireInstanceLock, type InstanceLock } from "./instance-lock.js";
import { peerCredentials } from "./libc.js";
import { unavailableRuntime, type VmRuntime } from "./lifecycle.js";
import { dataDirPaths, type ListenAddress } from "./paths.js";

/** Largest request body accepted, in bytes. */
export const BODY_LIMIT_BYTES = 64 * 1024;

/** Options of {@link startService}. */
export interface ServiceOptions {
  readonly dataDir: string;
  readonly listen: ListenAddress;
  /** The VM engine; default: lifecycle answers 501 until the engine is wired. */
  readonly runtime?: VmRuntime;
  /** `false` skips `decide()` on every request: for the API benchmark only. */
  readonly authorize?: boolean;
  readonly hostUsers?: HostUsers;
  /** Graceful stop timeout (ACPI power button) before a forced stop; default 30 s. */
  readonly stopTimeoutMs?: number;
}

/** A running service. */
export interface RunningService {
  readonly socketPath: string;
  readonly core: ServiceCore;
  readonly app: FastifyInstance;
  /** Stops listening, closes the store, removes the socket, releases the lock; workers keep running. */
  close(): Promise<void>;
}

/** A zod failure as a 400 naming the first field at fault. */
export function validationError(where: "body" | "params" | "query", error: z.ZodError): ValidationError {
  const issue = error.issues[0];
  if (issue === undefined) return new ValidationError(`Invalid ${where}`, where);
  const keys = issue.code === "unrecognized_keys" ? issue.keys : [];
  const path = [where, ...issue.path.map(String), ...(keys.length > 0 ? [keys[0] ?? ""] : [])].join(".");
  const message = issue.code === "unrecognized_keys" ? "unknown field" : issue.message;
  return new ValidationError(`Field ${path}: ${message}`, path);
}

/** A `Server-Timing` header value: the handler's `total` since `startedAt`, then `timings`. */
export function serverTiming(startedAt: number, timings: ReadonlyMap<string, number>): string {
  const entries = [["total", performance.now() - startedAt] as const, ...timings];
  return entries.map(([name, ms]) => `${name};dur=${ms.toFixed(2)}`).join(", ");
}

function errorBody(error: ApiError): Record<string, unknown> {
  return { error: { code: error.code, message: error.message, ...error.extra } };
}

const peerUid = new WeakMap<Socket, number>();

/** The kernel's uid for the peer of `socket`, read once per connection. */
export function uidOf(socket: Socket): number {
  let uid = peerUid.get(socket);
  if (uid === undefined) {
    // Node keeps the fd on its internal handle; there is no public accessor (nodejs/node#8342).
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0)
      throw new NotSupportedError("Cannot identify the caller: no socket fd", "service.no-peer");
    uid = peerCredentials(fd).uid;
    peerUid.set(socket, uid);
  }
  return uid;
}

async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  let exists = false;
  try {
    exists = lstatSync(path).isSocket();
    if (!lstatSync(path).isSocket()) {
      throw new ServiceStartError(
        `${path} exists and is not a socket; refusing to replace it`,
        "service.socket-path",
      );
    }
  } catch (error: unknown) {
    if (error instanceof ServiceStartError) throw error;
  }
  if (!exists) return;
  // A socket file with nobody listening is left over from a crashed service: remove it.
  // One with a listener belongs to a live service on another data dir: refuse.
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    const timer = setTimeout(() => {
      probe.destroy();
      resolve(true);
    }, 2000);
    probe.once("connect", () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (live)
    throw new ServiceStartError(
      `Socket ${path} is in use by another service; use another --listen`,
      "service.socket-in-use",
    );
  unlinkSync(path);
}

/**
 * Starts the service and resolves once it listens.
 *
 * @throws {ServiceStartError} `service.locked` (another service on the data dir),
 *   `service.socket-in-use`, `service.store-failed`, …
 * @throws {NotSupportedError} `service.tcp-unsupported` for tcp:// addresses
 */
export async function startService(options: ServiceOptions): Promise<RunningService> {
  if (options.listen.kind === "tcp") {
    throw new NotSupportedError(
      "Listening on TCP is not supported by this version: remote access needs TLS and tokens, which the service does not implement yet; use unix:PATH (remote callers can reach it through ssh -L)",
      "service.tcp-unsupported",
    );
  }
  const socketPath = options.listen.path;
  const paths = dataDirPaths(options.dataDir);
  mkdirSync(paths.dataDir, { recursive: true, mode: 0o700 });
  mkdirSync(paths.vmsDir, { recursive: true, mode: 0o700 });
  const lock: InstanceLock = acquireInstanceLock(paths.lock, paths.dataDir);
  let core: ServiceCore | undefined;
  try {
    core = new ServiceCore({
      paths,
      runtime: options.runtime ?? unavailableRuntime,
      authorize: options.authorize ?? true,
      ...(options.hostUsers === undefined ? {} : { hostUsers: options.hostUsers }),
      ...(options.stopTimeoutMs === undefined ? {} : { stopTimeoutMs: options.stopTimeoutMs }),
    });
    await core.reconcile();
    const app = buildApp(core);
    const served = core;
    app.server.on("upgrade", (request: IncomingMessage, socket: Duplex) => {
      handleConsoleUpgrade(served, request, socket, uidOf);
    });
    await prepareSocketPath(socketPath);
    await app.listen({ path: socketPath });
    // Any local user may connect; authorization decides what each may do.
    chmodSync(socketPath, 0o666);
    // After the reconcile re-attached the workers that survived: only the others start.
    core.autostart();
    const running = core;
    let closed = false;
    return {
      socketPath,
      core: running,
      app,
      async close(): Promise<void> {
        if (closed) return;
        closed = true;
        await app.close();
        await running.close();
        lock.release();
      },
    };
  } catch (error: unknown) {
    await core?.close();
    lock.release();
    throw error;
  }
}

/** Options of {@link buildApp}. */
export interface AppOptions {
  /**
   * Who sent a request. Default: the kernel's SO_PEERCRED uid of the connection. Only
   * in-process harnesses (the API fuzzer, which has no socket) pass another; the service
   * itself never does.
   */
  readonly identify?: (request: FastifyRequest) => Principal;
}

/** The fastify app over `core`'s routes. */
export function buildApp(core: ServiceCore, options: AppOptions = {}): FastifyInstance {
  const routes = buildRoutes(core);
  const app = fastify({
    bodyLimit: BODY_LIMIT_BYTES,
    logger: false,
    forceCloseConnections: true,
    return503OnClosing: true,
  });
  const openapi = JSON.stringify(openApiDocument(routes, BODY_LIMIT_BYTES));

  const principalOf =
    options.identify ??
    ((request: FastifyRequest): Principal => core.hostUsers.byUid(uidOf(request.raw.socket)));

  const fail = async (
    reply: FastifyReply,
    error: unknown,
    ctx: RequestContext | null,
    operation: string,
    principal: Principal | null,
  ): Promise<FastifyReply> => {
    let apiError: ApiError;
    if (error instanceof ApiError) apiError = error;
    else {
      const code = error instanceof PalisadeError ? error.code : "service.internal";
      apiError = new (class extends ApiError {
        readonly status = 500;
        readonly code = code;
      })(error instanceof PalisadeError ? error.message : "Internal error");
      if (!(error instanceof PalisadeError))
        process.stderr.write(`palisade service: internal error: ${errorMessage(error)}\n`);
    }
    try {
      await core.recordQueued({
        time: ctx?.time ?? new Date().toISOString(),
        kind: "request",
        principal: principal?.user ?? "unknown",
        uid: principal?.uid ?? null,
        operation: ctx?.audit.operation ?? operation,
        scope: ctx?.audit.scope ?? null,
        vm: ctx?.audit.vm ?? null,
        decision:
          apiError instanceof PermissionDeniedError
            ? "denied"
            : ctx?.audit.decided === true
              ? "allowed"
              : "none",
        result: apiError.code,
        detail: apiError.message,
      });
    } catch (auditError: unknown) {
      process.stderr.write(`palisade service: cannot audit a failed request: ${errorMessage(auditError)}\n`);
    }
    return reply.code(apiError.status).send(errorBody(apiError));
  };

  const register = (r: Route): void => {
    app.route({
      method: r.method,
      url: r.url,
      handler: async (request, reply) => {
        const startedAt = performance.now();
        let principal: Principal | null = null;
        let ctx: RequestContext | null = null;
        try {
          principal = principalOf(request);
          const who = principal;
          const audit = {
            operation: r.operation,
            scope: null as string | null,
            vm: null as string | null,
            detail: null as string | null,
            /** Whether an authorization decision was made (an early 400 or 404 has none). */
            decided: false,
          };
          ctx = {
            principal: who,
            time: new Date().toISOString(),
            timings: new Map(),
            audit,
            require(operation, object) {
              audit.operation = operation;
              if (!core.authorize) return;
              const decision = decide(core.policies.current(), who, operation, object);
              audit.decided = true;
              if (!decision.allowed)
                throw new PermissionDeniedError(`Permission denied: ${decision.reason}`, operation);
            },
            may(operation, object) {
              return !core.authorize || decide(core.policies.current(), who, operation, object).allowed;
            },
          };
          const params = r.params.safeParse(request.params);
          if (!params.success) throw validationError("params", params.error);
          const query = r.query.safeParse(request.query);
          if (!query.success) throw validationError("query", query.error);
          let body: unknown = undefined;
          if (r.body !== undefined) {
            const parsed = r.body.safeParse(request.body);
            if (!parsed.success) throw validationError("body", parsed.error);
            body = parsed.data;
          }
          const input = { params: params.data, query: query.data, body };
          const context = ctx;
          const entry = (): AuditEntry => ({
            time: context.time,
            kind: "request",
            principal: who.user,
            uid: who.uid,
            operation: audit.operation,
            scope: audit.scope,
            vm: audit.vm,
            decision: audit.decided ? "allowed" : "none",
            result: "ok",
            detail: audit.detail,
          });
          let result: unknown;
          if (r.mode === "async") {
            result = await r.handle(context, input);
            core.transaction(() => {
              core.record(entry());
            });
          } else if (r.readOnly ?? r.method === "GET") {
            result = r.handle(context, input);
            await core.recordQueued(entry());
          } else {
            // The change and its audit entry commit together or not at all.
            result = core.transaction(() => {
              const value = r.handle(context, input);
              core.record(entry());
              return value;
            });
          }
          if (context.timings.size > 0) reply.header("server-timing", serverTiming(startedAt, context.timings));
          return await reply.code(r.status ?? 200).send(result);
        } catch (error: unknown) {
          return fail(reply, error, ctx, r.operation, principal);
        }
      },
    });
  };
  for (const r of routes) register(r);

  app.get("/openapi.json", (_request, reply) => reply.type("application/json").send(openapi));

  app.setNotFoundHandler((request, reply) => {
    let principal: Principal | null = null;
    try {
      principal = principalOf(request);
    } catch {
      // Identity is best effort for the audit of an unknown route.
    }
    return fail(
      reply,
      new NotFoundError(`No route ${request.method} ${request.url.slice(0, 200)}`, "api.no-route"),
      null,
      "api.unknown-route",
      principal,
    );
  });

  app.setErrorHandler((error: { code?: string; statusCode?: number; message?: string }, request, reply) => {
    let principal: Principal | null = null;
    try {
      principal = principalOf(request);
    } catch {
      // As above.
    }
    let apiError: ApiError;
    if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      apiError = new BodyTooLargeError(`Request body over ${BODY_LIMIT_BYTES} bytes`);
    } else if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      apiError = new ValidationError(
        `Bad request: ${error.message ?? "malformed"}`,
        "body",
        error.code === undefined ? "api.bad-request" : `api.${error.code.toLowerCase()}`,
      );
    } else {
      apiError = new ValidationError("Bad request", null, "api.bad-request");
    }
    return fail(reply, apiError, null, "api.request", principal);
  });
  return app;
}
