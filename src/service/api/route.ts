/**
 * The shape of one API route: its method and path, the zod schemas of what it accepts,
 * and its handler. The same table drives fastify and /openapi.json, so the document
 * cannot drift from what the service accepts.
 */
import type { z } from "zod";
import type { AuthzObject, Operation, Principal } from "../../authz/index.js";

/** What a handler knows about the request and may do about authorization and the audit. */
export interface RequestContext {
  readonly principal: Principal;
  /** ISO time of the request's arrival. */
  readonly time: string;
  /**
   * Requires `operation` on `object`; records it for the audit entry.
   *
   * @throws {PermissionDeniedError} naming the operation, when the policy denies it
   */
  require(operation: Operation, object: AuthzObject): void;
  /** Whether the caller may do `operation` on `object` (for filtering lists; not recorded). */
  may(operation: Operation, object: AuthzObject): boolean;
  /**
   * Durations (ms) the handler measured, by name, sent in the answer's `Server-Timing`
   * header beside the handler's `total` (the lifecycle routes report `runtime`: the time
   * spent in the VM engine, so the service's own share is `total − runtime`).
   */
  readonly timings: Map<string, number>;
  /** Fields of the request's audit entry; handlers fill in what they learn. */
  readonly audit: {
    operation: string;
    scope: string | null;
    vm: string | null;
    detail: string | null;
    /** Set by `require()`: an authorization decision was made for this request. */
    decided: boolean;
  };
}

/** The validated parts of a request. */
export interface RouteInput<P, Q, B> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
}

/** One route, as declared. */
export interface Route<P = unknown, Q = unknown, B = unknown> {
  readonly method: "GET" | "POST" | "PATCH" | "DELETE";
  /** fastify syntax: `/v1/vms/:name`. */
  readonly url: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: "service" | "vms" | "authz" | "audit";
  /** The operation the audit entry names until the handler says otherwise. */
  readonly operation: string;
  readonly params: z.ZodType<P>;
  readonly query: z.ZodType<Q>;
  /** Absent: the route takes no body. */
  readonly body?: z.ZodType<B>;
  /** HTTP status on success; default 200. */
  readonly status?: number;
  /**
   * `sync`: the handler runs inside one store transaction with its audit entry (all or
   * nothing, even under kill -9). `async`: the handler manages its own transactions.
   */
  readonly mode: "sync" | "async";
  /**
   * The route changes nothing (default: GET routes). Its audit entry is group-committed
   * with others of the same event-loop turn, and the answer waits for that commit.
   */
  readonly readOnly?: boolean;
  handle(ctx: RequestContext, input: RouteInput<P, Q, B>): unknown;
}

/** Declares a route with its types inferred from its schemas. */
export function route<P, Q, B = undefined>(definition: Route<P, Q, B>): Route {
  return definition;
}
