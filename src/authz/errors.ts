import { PalisadeError } from "../util/errors.js";

/** A policy refers to something that does not exist or is malformed (code `authz.*`). */
export class AuthzPolicyError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The audit log could not be read or written (code `audit.*`). */
export class AuditLogError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code = "audit.failed", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
