/**
 * Errors the service answers with: each has a stable `code` and the HTTP status it maps to.
 */
import { PalisadeError } from "../util/errors.js";

/** An error with an HTTP status; the API prints `{ error: { code, message, … } }`. */
export abstract class ApiError extends PalisadeError {
  abstract readonly status: number;
  /** Extra fields for the JSON error body (the field at fault, the missing operation, the current state). */
  readonly extra: Readonly<Record<string, unknown>>;
  constructor(message: string, extra: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.extra = extra;
  }
}

/** 400: the request is malformed; `field` names the part at fault (`body.memoryMiB`). */
export class ValidationError extends ApiError {
  readonly status = 400;
  readonly code: string;
  constructor(message: string, field: string | null, code = "api.invalid") {
    super(message, field === null ? {} : { field });
    this.code = code;
  }
}

/** 403: authorization refused; `operation` names the operation the caller lacks. */
export class PermissionDeniedError extends ApiError {
  readonly status = 403;
  readonly code = "authz.denied";
  constructor(message: string, operation: string) {
    super(message, { operation });
  }
}

/** 404: no such VM, role, task, scope, assignment or route. */
export class NotFoundError extends ApiError {
  readonly status = 404;
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}

/** 409: the request conflicts with the current state (name taken, VM running, stale generation). */
export class ConflictError extends ApiError {
  readonly status = 409;
  readonly code: string;
  constructor(message: string, code: string, extra: Record<string, unknown> = {}) {
    super(message, extra);
    this.code = code;
  }
}

/** 413: the body is over the size limit. */
export class BodyTooLargeError extends ApiError {
  readonly status = 413;
  readonly code = "api.body-too-large";
}

/** 501: the service cannot do this yet (VM lifecycle before the engine is wired, TCP). */
export class NotSupportedError extends ApiError {
  readonly status = 501;
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}

/** The service cannot start: the data dir is locked, the socket is in use, a path is bad. */
export class ServiceStartError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
