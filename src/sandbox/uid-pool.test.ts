import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { allocateUid, releaseUid, parseStatStartTime, type ProcessTable } from "./uid-pool.js";

const range = { first: 64000, count: 3 };
/** A host where only this process exists and no process runs as a pool uid. */
const quietHost: ProcessTable = {
  startTime: (pid) => (pid === process.pid ? "1000" : null),
  uidsInUse: () => new Set([0]),
};

const made: string[] = [];
function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "palisade-uid-pool-"));
  made.push(dir);
  return dir;
}
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

test("allocateUid: two VMs get different uids; asking again returns the same one", async () => {
  const dir = stateDir();

  const a = await allocateUid("a", dir, { range, processes: quietHost });
  const b = await allocateUid("b", dir, { range, processes: quietHost });

  assert.equal(a, 64000);
  assert.equal(b, 64001);
  assert.equal(await allocateUid("a", dir, { range, processes: quietHost }), 64000);
});

test("allocateUid: concurrent allocations never hand out one uid twice", async () => {
  const dir = stateDir();

  const uids = await Promise.all(
    ["a", "b", "c"].map((vm) => allocateUid(vm, dir, { range, processes: quietHost })),
  );

  assert.deepEqual([...uids].sort(), [64000, 64001, 64002]);
});

test("allocateUid: a full pool is refused with a clear error", async () => {
  const dir = stateDir();
  await Promise.all(["a", "b", "c"].map((vm) => allocateUid(vm, dir, { range, processes: quietHost })));

  await assert.rejects(
    allocateUid("d", dir, { range, processes: quietHost }),
    /No free worker uid in 64000–64002/,
  );
});

test("allocateUid: a uid some process already runs as is skipped", async () => {
  const busy: ProcessTable = { ...quietHost, uidsInUse: () => new Set([0, 64000]) };

  assert.equal(await allocateUid("a", stateDir(), { range, processes: busy }), 64001);
});

test("allocateUid: a stale claim (its allocator gone, no process with its uid) is reclaimed", async () => {
  const dir = stateDir();
  await allocateUid("a", dir, { range, processes: quietHost });
  const afterCrash: ProcessTable = {
    startTime: (pid) => (pid === process.pid ? "2000" : null),
    uidsInUse: () => new Set([0]),
  };

  // Allocator restarted (new start time): "a"'s claim is stale, so 64000 is free again.
  const uid = await allocateUid("b", dir, { range, processes: afterCrash });

  assert.equal(uid, 64000);
});

test("allocateUid: a claim whose worker still runs survives its allocator's crash", async () => {
  const dir = stateDir();
  await allocateUid("a", dir, { range, processes: quietHost });
  const workerAlive: ProcessTable = { startTime: () => null, uidsInUse: () => new Set([0, 64000]) };

  assert.equal(await allocateUid("b", dir, { range, processes: workerAlive }), 64001);
});

test("allocateUid: a half-written claim file does not block its uid forever", async () => {
  const dir = stateDir();
  await allocateUid("a", dir, { range, processes: quietHost });
  writeFileSync(join(dir, "uid-pool", "64001.json"), "{");

  assert.equal(await allocateUid("b", dir, { range, processes: quietHost }), 64001);
});

test("releaseUid: the uid returns to the pool", async () => {
  const dir = stateDir();
  await allocateUid("a", dir, { range, processes: quietHost });

  await releaseUid("a", dir);

  assert.deepEqual(readdirSync(join(dir, "uid-pool")), ["lock"]);
});

test("parseStatStartTime: field 22, even when the command name holds spaces and parentheses", () => {
  const stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";

  assert.equal(parseStatStartTime(stat), "987654");
});
