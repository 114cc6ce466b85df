/**
 * Errors caused by a host, a user or a file: each has a stable `code` that the API and
 * the CLI print, so scripts can match on it.
 */
export abstract class PalisadeError extends Error {
  abstract readonly code: string;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad user input: a flag, a spec field, an API body. */
export class ConfigError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code = "config.invalid", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The host lacks something Palisade needs (a package, a device, a permission). */
export class HostError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code = "host.missing", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** An invariant broke; never for guest, user or file input. */
export class BugError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BugError";
  }
}

/** The message of anything thrown, for one-line reports. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
