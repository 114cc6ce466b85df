import { test } from "node:test";
import assert from "node:assert/strict";
import { checkTrustPlacement } from "./trust.js";

test("checkTrustPlacement: an empty host accepts any trust level", () => {
  assert.deepEqual(checkTrustPlacement({ name: "a", trustLevel: "untrusted" }, [], []), { ok: true });
});

test("checkTrustPlacement: the same trust level shares a host", () => {
  const running = [{ name: "b", trustLevel: "standard" }];

  assert.deepEqual(checkTrustPlacement({ name: "a", trustLevel: "standard" }, running, []), { ok: true });
});

test("checkTrustPlacement: a different trust level is refused, naming both VMs and the pair to allow", () => {
  const running = [
    { name: "web", trustLevel: "untrusted" },
    { name: "db", trustLevel: "trusted" },
  ];

  const decision = checkTrustPlacement({ name: "new", trustLevel: "untrusted" }, running, []);

  assert.ok(!decision.ok);
  assert.match(
    decision.reason,
    /VM "new" has trust level "untrusted", but VM "db" .* has "trusted".*\["untrusted", "trusted"\]/,
  );
});

test("checkTrustPlacement: an allowed pair is accepted in either order", () => {
  const running = [{ name: "db", trustLevel: "trusted" }];

  assert.deepEqual(
    checkTrustPlacement({ name: "x", trustLevel: "standard" }, running, [["trusted", "standard"]]),
    { ok: true },
  );
});

test("checkTrustPlacement: allowing one pair does not allow another", () => {
  const running = [
    { name: "db", trustLevel: "trusted" },
    { name: "kiosk", trustLevel: "untrusted" },
  ];

  assert.equal(
    checkTrustPlacement({ name: "x", trustLevel: "standard" }, running, [["trusted", "standard"]]).ok,
    false,
  );
});

test("checkTrustPlacement: the candidate's own earlier entry (a restart) does not conflict", () => {
  assert.deepEqual(
    checkTrustPlacement({ name: "a", trustLevel: "trusted" }, [{ name: "a", trustLevel: "standard" }], []),
    { ok: true },
  );
});
