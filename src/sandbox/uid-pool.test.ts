import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
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

test("allocateUid: separate processes allocating at once never share a uid", async () => {
  const dir = stateDir();
  const here = import.meta.dirname;
  // Real processes and the real process table: a claim is live while its allocator runs,
  // so each child prints its uid and stays until its stdin closes.
  const script = (vm: string): string =>
    `const { allocateUid } = await import(${JSON.stringify(join(here, "uid-pool.js"))});` +
    `console.log(await allocateUid(${JSON.stringify(vm)}, ${JSON.stringify(dir)}, { range: { first: 64900, count: 50 } }));` +
    `process.stdin.resume();`;
  const children = Array.from({ length: 6 }, (_, index) =>
    spawn(process.execPath, ["--input-type=module", "-e", script(`vm-${index}`)], { stdio: ["pipe", "pipe", "inherit"] }),
  );
  try {
    const uids = await Promise.all(
      children.map(
        (child, index) =>
          new Promise<number>((resolve, reject) => {
            let out = "";
            child.stdout.on("data", (chunk: Buffer) => {
              out += chunk.toString();
              if (out.endsWith("\n")) resolve(Number(out.trim()));
            });
            child.on("exit", (code) => {
              reject(new Error(`child ${index} exited ${String(code)} before printing its uid`));
            });
          }),
      ),
    );
    assert.equal(new Set(uids).size, uids.length, `uids handed out: ${uids.join(", ")}`);
    assert.equal(readdirSync(join(dir, "uid-pool")).filter((name) => name.endsWith(".json")).length, uids.length);
  } finally {
    for (const child of children) child.stdin.end();
  }
});

/** Holds the pool's flock from another process (util-linux's flock, as another Palisade would) while `body` runs. */
async function withLockHeldElsewhere(dir: string, body: () => Promise<void>): Promise<void> {
  mkdirSync(join(dir, "uid-pool"), { recursive: true });
  // Its own process group, so that the sleep under it goes too.
  const holder = spawn("flock", ["--exclusive", "--close", join(dir, "uid-pool", "lock"), "sleep", "30"], { stdio: "ignore", detached: true });
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    await body();
  } finally {
    if (holder.pid !== undefined) process.kill(-holder.pid, "SIGKILL");
  }
}

test("allocateUid: with every claim live no lock is needed; a stale one waits for the lock, and past the timeout names it", async () => {
  const dir = stateDir();
  await allocateUid("a", dir, { range, processes: quietHost });
  await withLockHeldElsewhere(dir, async () => {
    assert.equal(await allocateUid("b", dir, { range, processes: quietHost, lockTimeoutMs: 500 }), 64001);
    // "a" and "b" are stale for a table in which their allocator has restarted.
    const afterCrash: ProcessTable = { startTime: (pid) => (pid === process.pid ? "2000" : null), uidsInUse: () => new Set([0]) };
    await assert.rejects(
      allocateUid("c", dir, { range, processes: afterCrash, lockTimeoutMs: 1000 }),
      /uid pool lock .*uid-pool\/lock is held for more than 1000 ms/,
    );
    // Renewing an existing claim also needs the lock.
    await assert.rejects(allocateUid("a", dir, { range, processes: quietHost, lockTimeoutMs: 500 }), /is held for more than 500 ms/);
  });
});

test("releaseUid: the process that made the claim releases it without the lock; anyone else waits for it", async () => {
  const dir = stateDir();
  await allocateUid("a", dir, { range, processes: quietHost });
  await allocateUid("b", dir, { range, processes: quietHost });
  const restarted: ProcessTable = { ...quietHost, startTime: (pid) => (pid === process.pid ? "2000" : null) };
  await withLockHeldElsewhere(dir, async () => {
    await releaseUid("a", dir, { processes: quietHost, lockTimeoutMs: 500 });
    await assert.rejects(releaseUid("b", dir, { processes: restarted, lockTimeoutMs: 500 }), /is held for more than 500 ms/);
  });
  assert.deepEqual(readdirSync(join(dir, "uid-pool")).filter((name) => name.endsWith(".json")), ["64001.json"]);
  await releaseUid("b", dir, { processes: restarted });
  assert.deepEqual(readdirSync(join(dir, "uid-pool")).filter((name) => name.endsWith(".json")), []);
});
