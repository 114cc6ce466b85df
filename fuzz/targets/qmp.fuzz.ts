/** QMP lines from a (possibly compromised) worker: only QmpProtocolError may escape. */
import { QmpProtocolError, parseQmpLine } from "../../src/engine/qmp/message.js";

const encoder = new TextEncoder();

export function seeds(): Uint8Array[] {
  return [
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}',
    '{"return": {"status": "running", "running": true}, "id": "p3"}',
    '{"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}, "id": "p4"}',
    '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}',
    '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "GUEST_PANICKED", "data": {"action": "pause", "info": {"type": "hyper-v"}}}',
  ].map((line) => encoder.encode(line));
}

export function fuzz(data: Uint8Array): void {
  try {
    parseQmpLine(new TextDecoder().decode(data));
  } catch (error: unknown) {
    if (!(error instanceof QmpProtocolError)) throw error;
  }
}
