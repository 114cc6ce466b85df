import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseProcStatus,
  parseProcCgroup,
  parseProcLimits,
  formatSandboxDescription,
  describeSandbox,
} from "./describe.js";

test("parseProcStatus: uids, capabilities, no_new_privs and seccomp of a jailed worker", () => {
  const text =
    "Name:\tqemu\nUid:\t64007\t64007\t64007\t64007\nGid:\t64007\t64007\t64007\t64007\nGroups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n";

  const status = parseProcStatus(text);

  assert.deepEqual(status.uid, [64007, 64007, 64007, 64007]);
  assert.deepEqual(status.groups, []);
  assert.equal(status.capabilities.bounding, 0n);
  assert.equal(status.noNewPrivs, true);
  assert.equal(status.seccompMode, 2);
  assert.equal(status.seccompFilters, 2);
});

test("parseProcCgroup: v1 hierarchies by controller, v2 under the empty name", () => {
  assert.deepEqual(parseProcCgroup("8:pids:/palisade/a\n1:cpu,cpuacct:/x\n0::/\n"), {
    pids: "/palisade/a",
    cpu: "/x",
    cpuacct: "/x",
    "": "/",
  });
});

test("parseProcLimits: soft limits, unlimited as null", () => {
  const text =
    "Limit                     Soft Limit           Hard Limit           Units     \nMax core file size        0                    0                    bytes     \nMax processes             96                   96                   processes \nMax open files            1024                 1024                 files     \nMax stack size            8388608              unlimited            bytes     \nMax locked memory         unlimited            unlimited            bytes     \n";

  const limits = parseProcLimits(text);

  assert.equal(limits["Max open files"], 1024);
  assert.equal(limits["Max processes"], 96);
  assert.equal(limits["Max core file size"], 0);
  assert.equal(limits["Max locked memory"], null);
});

test("describeSandbox: this test process shares every namespace with itself and formats readably", () => {
  const description = describeSandbox(process.pid);

  assert.equal(
    Object.values(description.namespaces).some((ns) => ns.own),
    false,
  );
  assert.match(formatSandboxDescription(description), /own namespaces: none/);
});
