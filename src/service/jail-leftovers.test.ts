import { test } from "node:test";
import assert from "node:assert/strict";
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { allocateUid } from "../sandbox/index.js";
import { describeJailExit, JailLeftovers, readJailExitCode } from "./jail-leftovers.js";

const isRoot = process.getuid?.() === 0;

test("describeJailExit: code 0 stopped; 128 + N killed by signal N; any other code crashed", () => {
  assert.deepEqual(describeJailExit(0), {
    state: "stopped",
    reason: "worker (QEMU) exited normally (code 0)",
  });
  assert.deepEqual(describeJailExit(137), {
    state: "crashed",
    reason: "worker (QEMU) killed by signal SIGKILL (9)",
  });
  assert.deepEqual(describeJailExit(134).reason, "worker (QEMU) killed by signal SIGABRT (6)");
  assert.deepEqual(describeJailExit(1), { state: "crashed", reason: "worker (QEMU) exited with code 1" });
});

test("readJailExitCode: bwrap's last exit-code document, or undefined without one", () => {
  const runDir = mkdtempSync(join(tmpdir(), "palisade-leftovers-"));
  try {
    assert.equal(readJailExitCode(runDir), undefined);
    mkdirSync(join(runDir, ".jail"));
    writeFileSync(join(runDir, ".jail", "worker-status.json"), '{ "child-pid": 42 }\n');
    assert.equal(readJailExitCode(runDir), undefined);
    writeFileSync(join(runDir, ".jail", "worker-status.json"), '{ "child-pid": 42 }\n{ "exit-code": 137 }\n');
    assert.equal(readJailExitCode(runDir), 137);
  } finally {
    rmSync(runDir, { recursive: true });
  }
});

test(
  "JailLeftovers: the copy kept at re-attach undoes the jail after the run directory is gone (owners, uid claim)",
  { skip: isRoot ? false : "needs root (chown)" },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "palisade-leftovers-"));
    try {
      const runDir = join(dir, "vms", "id-1");
      const stateDir = join(dir, "sandbox");
      mkdirSync(join(runDir, ".jail"), { recursive: true });
      const disk = join(dir, "disk.img");
      writeFileSync(disk, "");
      // As prepareJail leaves it: the disk handed to the worker's uid, its owner recorded.
      await allocateUid("uuid-a", stateDir, { range: { first: 64990, count: 5 } });
      writeFileSync(join(runDir, ".jail", "owners.json"), JSON.stringify([{ path: disk, uid: 0, gid: 0 }]));
      chownSync(disk, 64990, 64990);
      const leftovers = new JailLeftovers(join(dir, "jail-leftovers"), () => null, stateDir);

      leftovers.keep("id-1", runDir, "vm-a", "uuid-a");
      rmSync(runDir, { recursive: true });
      assert.equal(leftovers.has("id-1"), true);
      await leftovers.cleanKept("id-1");

      assert.deepEqual([statSync(disk).uid, statSync(disk).gid], [0, 0]);
      assert.deepEqual(
        readdirSync(join(stateDir, "uid-pool")).filter((f) => f.endsWith(".json")),
        [],
      );
      assert.equal(existsSync(join(dir, "jail-leftovers", "id-1")), false);
      await leftovers.cleanKept("id-1");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
