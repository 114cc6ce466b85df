import { PalisadeError } from "../util/errors.js";

/**
 * A disk image's bytes break its format: a wrong signature, a bad checksum, a field out
 * of range, a BAT entry pointing outside the file. The message names the file, the
 * structure, the field, its offset and its value; `code` is stable (`vhdx.bad-bat`).
 */
export class DiskFormatError extends PalisadeError {
  readonly code: string;
  /** The structure that failed, as the spec names it ("header 1", "BAT"). */
  readonly structure: string;
  /** The field that failed ("SequenceNumber"), or "" for a whole structure. */
  readonly field: string;
  /** Byte offset of the structure or field in the file, when known. */
  readonly offset: number | undefined;

  constructor(
    code: string,
    detail: { structure: string; field?: string; offset?: number; message: string },
    options?: ErrorOptions,
  ) {
    const where = detail.offset === undefined ? "" : ` at 0x${detail.offset.toString(16)}`;
    const field = detail.field === undefined || detail.field === "" ? "" : `: ${detail.field}`;
    super(`${detail.structure}${where}${field}: ${detail.message}`, options);
    this.code = code;
    this.structure = detail.structure;
    this.field = detail.field ?? "";
    this.offset = detail.offset;
  }

  /** The same error with the file's path in front of the message (done once, at open). */
  withPath(path: string): DiskFormatError {
    if (this.message.startsWith(`${path}: `)) return this;
    const copy = new DiskFormatError(this.code, { structure: this.structure, field: this.field, message: "" }, { cause: this.cause });
    Object.defineProperty(copy, "message", { value: `${path}: ${this.message}` });
    Object.defineProperty(copy, "offset", { value: this.offset });
    return copy;
  }
}

/**
 * A disk operation the image cannot do, caused by the user or the host rather than the
 * bytes: writing a read-only image, a size out of range, a missing parent.
 * Codes: `disk.readonly`, `disk.bad-range`, `disk.bad-size`, `disk.parent-missing`,
 * `disk.parent-mismatch`, `disk.parent-loop`, `disk.unsupported`, `disk.io`.
 */
export class DiskError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
