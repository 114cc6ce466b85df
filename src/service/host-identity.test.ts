import { test } from "node:test";
import assert from "node:assert/strict";
import { parseGroup, parsePasswd, principalFor } from "./host-identity.js";

const passwd = parsePasswd("root:x:0:0:root:/root:/bin/bash\nann:x:1001:1001::/home/ann:/bin/sh\nbad line\n");
const groups = parseGroup("root:x:0:\nann:x:1001:\nstaff:x:50:bob,ann\nops:x:60:bob\n");

test("principalFor: a user gets the primary group first, then the groups listing them", () => {
  assert.deepEqual(principalFor(1001, passwd, groups), { uid: 1001, user: "ann", groups: ["ann", "staff"] });
});

test("principalFor: an unknown uid is #uid with no groups", () => {
  assert.deepEqual(principalFor(4242, passwd, groups), { uid: 4242, user: "#4242", groups: [] });
});

test("parsePasswd: malformed lines are skipped", () => {
  assert.deepEqual(
    passwd.map((p) => p.name),
    ["root", "ann"],
  );
});
