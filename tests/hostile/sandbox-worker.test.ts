/**
 * QEMU itself in the jail, with the engine's command line (`planVm`; no guest needed: `-S`
 * stops it before the first instruction):
 * it starts with only what the jail holds, answers QMP on a socket in its run directory
 * from the host, runs as its own uid under two seccomp filters (Palisade's and its own
 * `-sandbox`), and as a detached worker reports its exit status through the status file.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { join } from "node:path";
import { jailArgv, describeSandbox } from "../../src/sandbox/index.js";
import { skipReason, useJailWorld, type TestJail } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
const world = useJailWorld();

/** Sends QMP commands on a fresh connection and returns every reply line (at most `timeoutMs`). */
async function qmp(socketPath: string, commands: string[], timeoutMs = 10_000): Promise<string[]> {
  const socket = connect(socketPath);
  socket.setEncoding("utf8");
  let buffer = "";
  const timer = setTimeout(
    () => socket.destroy(new Error(`QMP on ${socketPath}: no answer in ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    await new Promise<void>((resolve, reject) => {
      socket.on("error", (error) => {
        // QEMU may reset the connection as it quits: what it answered before still counts.
        if (buffer.includes('"return"')) resolve();
        else reject(error);
      });
      socket.on("close", () => {
        resolve();
      });
      socket.on("data", (chunk: string) => {
        const greeted = buffer !== "";
        buffer += chunk;
        // QMP answers in order: send everything after the greeting, hang up after the last reply.
        if (!greeted) socket.write(commands.map((command) => `${command}\n`).join(""));
        const replies = buffer
          .split("\n")
          .filter((line) => line.includes('"return"') || line.includes('"error"')).length;
        if (replies >= commands.length) socket.end();
      });
    });
  } finally {
    clearTimeout(timer);
  }
  return buffer.split("\n").filter((line) => line.startsWith("{"));
}

/** Starts the engine's QEMU command line for a VM stopped before its first instruction (-S), in `jail`. */
async function startQemu(jail: TestJail, host = world().host): Promise<number> {
  const qmpSocket = join(jail.spec.runDir, "qmp.sock");
  const argv = jailArgv(jail.spec, world().engineQemuArgs(jail), host);
  const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: "ignore", detached: true });
  child.unref();
  const status = await jail.waitStatus((s) => s.childPid !== undefined, 10_000);
  // QEMU creates its socket a moment after it starts.
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await qmp(qmpSocket, ['{"execute":"qmp_capabilities"}'], 2000);
      break;
    } catch (error: unknown) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return status.childPid ?? 0;
}

test(
  "sandbox: QEMU starts in the jail, answers QMP from the host, and its exit reaches the status file",
  { skip },
  async () => {
    const jail = await world().jail("qemu", { withKernel: true, limits: { memoryBytes: 256n * 1024n * 1024n, pids: 64 } });
    const pid = await startQemu(jail);

    const replies = await qmp(join(jail.spec.runDir, "qmp.sock"), [
      '{"execute":"qmp_capabilities"}',
      '{"execute":"query-status"}',
      '{"execute":"quit"}',
    ]);
    const status = await jail.waitStatus((s) => s.exitCode !== undefined, 15_000);

    assert.ok(pid > 0);
    assert.ok(
      replies.some((line) => line.includes('"status": "prelaunch"')),
      replies.join("\n"),
    );
    assert.equal(status.exitCode, 0);
  },
);

test(
  "sandbox: without a runtime tree (files bound one by one) QEMU starts in the jail too",
  { skip },
  async () => {
    const jail = await world().jail("qemu-files", { withKernel: true, limits: { memoryBytes: 256n * 1024n * 1024n, pids: 64 } });
    await startQemu(jail, { ...world().host, runtimeTree: null });

    const replies = await qmp(join(jail.spec.runDir, "qmp.sock"), [
      '{"execute":"qmp_capabilities"}',
      '{"execute":"query-status"}',
      '{"execute":"quit"}',
    ]);

    assert.ok(
      replies.some((line) => line.includes('"status": "prelaunch"')),
      replies.join("\n"),
    );
  },
);

test(
  "sandbox: QEMU in the jail runs as the VM's uid with no capabilities under two seccomp filters",
  { skip },
  async () => {
    const jail = await world().jail("qemu-describe", {
      withKernel: true,
      limits: { memoryBytes: 256n * 1024n * 1024n, pids: 64 },
    });
    const pid = await startQemu(jail);

    const description = describeSandbox(pid);
    await qmp(join(jail.spec.runDir, "qmp.sock"), ['{"execute":"qmp_capabilities"}', '{"execute":"quit"}']);

    assert.deepEqual(description.uid, [jail.spec.uid, jail.spec.uid, jail.spec.uid, jail.spec.uid]);
    assert.equal(description.capabilities.permitted, 0n);
    assert.equal(description.noNewPrivs, true);
    assert.equal(description.seccompMode, 2);
    // Palisade's filter (bwrap --seccomp) and QEMU's own (-sandbox on,…).
    assert.equal(description.seccompFilters, 2);
  },
);

test("sandbox: a killed detached worker's exit is reported as 128 + signal", { skip }, async () => {
  const jail = await world().jail("killed");
  const { pid } = await jail.start("while :; do sleep 1; done");

  process.kill(pid, "SIGKILL");
  const status = await jail.waitStatus((s) => s.exitCode !== undefined, 10_000);

  assert.equal(status.exitCode, 137);
});

test(
  "sandbox: the worker cannot forge its own exit status (the status file is root's, in a root-owned directory)",
  { skip },
  async () => {
    const jail = await world().jail("forger");

    const run = jail.sh(
      `echo '{"exit-code": 0}' > ${jail.spec.runDir}/.jail/worker-status.json; rm -f ${jail.spec.runDir}/.jail/worker-status.json; mv ${jail.spec.runDir}/.jail ${jail.spec.runDir}/x; echo done`,
    );

    assert.match(run.stderr, /Permission denied/);
    const status = await jail.waitStatus((s) => s.exitCode !== undefined, 10_000);
    assert.equal(status.exitCode, 0);
    assert.equal(jail.statusText().match(/"exit-code"/g)?.length, 1);
  },
);
