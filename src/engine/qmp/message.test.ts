import assert from "node:assert/strict";
import { test } from "node:test";
import { QmpProtocolError, parseQmpLine } from "./message.js";

test("qmp message: greeting, return, error and event", () => {
  assert.deepEqual(parseQmpLine('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": []}}'), {
    kind: "greeting",
    version: "7.2.22",
  });
  assert.deepEqual(parseQmpLine('{"return": {}, "id": "p1"}'), { kind: "return", id: "p1", value: {} });
  assert.deepEqual(parseQmpLine('{"error": {"class": "GenericError", "desc": "VM is not paused"}, "id": "p2"}'), {
    kind: "error",
    id: "p2",
    errorClass: "GenericError",
    description: "VM is not paused",
  });
  assert.deepEqual(
    parseQmpLine('{"timestamp": {"seconds": 1700000000, "microseconds": 5000}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}'),
    { kind: "event", event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" }, timestampMs: 1_700_000_000_005 },
  );
});

test("qmp message: garbage from a hostile worker is a protocol error, never a crash", () => {
  for (const line of ["not json", "[]", "42", '{"return"', '{"error": 5}', '{"event": 7}', '{"unknown": 1}']) {
    assert.throws(() => parseQmpLine(line), QmpProtocolError, line);
  }
});
