/**
 * QMP wire messages (QEMU's docs/interop/qmp-spec.rst), parsed from the worker's bytes.
 * The worker is untrusted (a guest may have taken it over): every line is bounded and
 * checked before use, and anything malformed is a QmpProtocolError, never a crash.
 */
import { PalisadeError } from "../../util/errors.js";

/** A QMP line longer than this ends the connection: no reply Palisade uses is near it. */
export const MAX_QMP_LINE_BYTES = 1 << 20;

export class QmpProtocolError extends PalisadeError {
  readonly code = "qmp.protocol";
}

export type QmpMessage =
  | { readonly kind: "greeting"; readonly version: string }
  | { readonly kind: "return"; readonly id: string | null; readonly value: unknown }
  | { readonly kind: "error"; readonly id: string | null; readonly errorClass: string; readonly description: string }
  | { readonly kind: "event"; readonly event: string; readonly data: Readonly<Record<string, unknown>>; readonly timestampMs: number };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function idOf(message: Record<string, unknown>): string | null {
  const id = message.id;
  return typeof id === "string" ? id : null;
}

function boundedString(value: unknown, field: string, max = 4096): string {
  if (typeof value !== "string") throw new QmpProtocolError(`QMP message: ${field} is not a string`);
  return value.length > max ? value.slice(0, max) : value;
}

/**
 * Parses one QMP line; pure.
 * @throws {QmpProtocolError} when the line is not a QMP message.
 */
export function parseQmpLine(line: string): QmpMessage {
  if (line.length > MAX_QMP_LINE_BYTES) throw new QmpProtocolError(`QMP message of ${line.length} bytes is over the limit`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw new QmpProtocolError(`QMP message is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  if (!isRecord(parsed)) throw new QmpProtocolError("QMP message is not a JSON object");
  if ("QMP" in parsed) {
    const qmp = parsed.QMP;
    const version = isRecord(qmp) && isRecord(qmp.version) && isRecord(qmp.version.qemu) ? qmp.version.qemu : null;
    const text =
      version === null ? "unknown" : [version.major, version.minor, version.micro].map((n) => (typeof n === "number" ? n : "?")).join(".");
    return { kind: "greeting", version: text };
  }
  if ("return" in parsed) return { kind: "return", id: idOf(parsed), value: parsed.return };
  if ("error" in parsed) {
    const error = parsed.error;
    if (!isRecord(error)) throw new QmpProtocolError("QMP error reply has no error object");
    return {
      kind: "error",
      id: idOf(parsed),
      errorClass: boundedString(error.class, "error.class", 128),
      description: boundedString(error.desc, "error.desc"),
    };
  }
  if ("event" in parsed) {
    const timestamp = parsed.timestamp;
    const seconds = isRecord(timestamp) && typeof timestamp.seconds === "number" ? timestamp.seconds : 0;
    const micros = isRecord(timestamp) && typeof timestamp.microseconds === "number" ? timestamp.microseconds : 0;
    return {
      kind: "event",
      event: boundedString(parsed.event, "event", 128),
      data: isRecord(parsed.data) ? parsed.data : {},
      timestampMs: seconds * 1000 + Math.floor(micros / 1000),
    };
  }
  throw new QmpProtocolError("QMP message is neither a greeting, a reply nor an event");
}
