/**
 * ServiceCore's lifecycle orchestration against a scripted VmRuntime (the engine's stand-in
 * in unit tests: it records calls and answers what each test says; the real worker is
 * exercised by the engine's own tests and, once wired, the service's integration tests).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ServiceCore } from "./core.js";
import { ConflictError } from "./errors.js";
import type { RuntimeStatus, RuntimeVm, VmRuntime } from "./lifecycle.js";
import { dataDirPaths } from "./paths.js";
import type { VmSpec } from "./api/schemas.js";
import { setTimeout as sleep } from "node:timers/promises";

class ScriptedRuntime implements VmRuntime {
  readonly calls: string[] = [];
  startAnswer: () => Promise<RuntimeStatus> = () => Promise.resolve({ state: "running", pid: 4242 });
  attachAnswer: RuntimeStatus | null = null;
  statusAnswer: RuntimeStatus = { state: "stopped" };
  #exit: ((runDir: string, status: RuntimeStatus) => void) | undefined;

  start(vm: RuntimeVm): Promise<RuntimeStatus> {
    this.calls.push(`start ${vm.runDir}`);
    return this.startAnswer();
  }
  stop(runDir: string, options: { timeoutMs: number }): Promise<RuntimeStatus> {
    this.calls.push(`stop ${runDir} ${options.timeoutMs}`);
    return Promise.resolve({ state: "stopped", exitReason: "poweroff" });
  }
  kill(runDir: string): Promise<RuntimeStatus> {
    this.calls.push(`kill ${runDir}`);
    return Promise.resolve({ state: "stopped", exitReason: "killed by signal 9" });
  }
  pause(runDir: string): Promise<RuntimeStatus> {
    this.calls.push(`pause ${runDir}`);
    return Promise.resolve({ state: "paused" });
  }
  resume(runDir: string): Promise<RuntimeStatus> {
    this.calls.push(`resume ${runDir}`);
    return Promise.resolve({ state: "running" });
  }
  status(): Promise<RuntimeStatus> {
    return Promise.resolve(this.statusAnswer);
  }
  attach(runDir: string): Promise<RuntimeStatus | null> {
    this.calls.push(`attach ${runDir}`);
    return Promise.resolve(this.attachAnswer);
  }
  onExit(listener: (runDir: string, status: RuntimeStatus) => void): void {
    this.#exit = listener;
  }
  exit(runDir: string, status: RuntimeStatus): void {
    this.#exit?.(runDir, status);
  }
}

function withCore(
  fn: (core: ServiceCore, runtime: ScriptedRuntime, dir: string) => Promise<void>,
): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "palisade-core-"));
    const runtime = new ScriptedRuntime();
    const core = new ServiceCore({ paths: dataDirPaths(dir), runtime, authorize: true, stopTimeoutMs: 1234 });
    try {
      core.transaction(() =>
        core.vms.create(
          {
            name: "w1",
            memoryMiB: 256,
            vcpus: 1,
            kernel: "/k",
            disks: [],
            nics: [],
            scope: null,
            autostart: false,
            pathsCheckedFor: 0,
          },
          "2026-01-01T00:00:00.000Z",
        ),
      );
      await fn(core, runtime, dir);
    } finally {
      await core.close();
      rmSync(dir, { recursive: true });
    }
  };
}

function stateEvents(core: ServiceCore): string[] {
  return core.audit
    .query({ vm: "w1" })
    .filter((e) => e.operation === "vm.state")
    .map((e) => e.result);
}

test(
  "core.lifecycle: start calls the runtime with the VM's run directory and records each state",
  withCore(async (core, runtime, dir) => {
    const vm = core.vms.get("w1");

    const after = await core.lifecycle("w1", "start");

    assert.deepEqual(runtime.calls, [`start ${join(dir, "vms", vm.id)}`]);
    assert.equal(after.state, "running");
    assert.deepEqual(stateEvents(core), ["stopped->starting", "starting->running"]);
    assert.equal(core.audit.verify().ok, true);
  }),
);

test(
  "core.lifecycle: a second action while a start is in flight is a 409 carrying the state",
  withCore(async (core, runtime) => {
    let finish: (status: RuntimeStatus) => void = () => undefined;
    runtime.startAnswer = () => new Promise((resolve) => (finish = resolve));
    const starting = core.lifecycle("w1", "start");

    await assert.rejects(
      core.lifecycle("w1", "start"),
      (e: unknown) => e instanceof ConflictError && e.code === "vm.busy" && e.extra.state === "starting",
    );
    finish({ state: "running" });
    await starting;
  }),
);

test(
  "core.lifecycle: a failed start returns the VM to what the runtime reports",
  withCore(async (core, runtime) => {
    runtime.startAnswer = () => Promise.reject(new Error("qemu exited 1"));

    await assert.rejects(core.lifecycle("w1", "start"), /qemu exited 1/);

    assert.equal(core.vms.get("w1").state, "stopped");
    assert.deepEqual(stateEvents(core), ["stopped->starting", "starting->stopped"]);
  }),
);

test(
  "core.lifecycle: stop passes the graceful timeout and records the exit reason",
  withCore(async (core, runtime, dir) => {
    await core.lifecycle("w1", "start");

    const after = await core.lifecycle("w1", "stop");

    assert.equal(runtime.calls[1], `stop ${join(dir, "vms", after.id)} 1234`);
    assert.deepEqual([after.state, after.stateReason], ["stopped", "poweroff"]);
  }),
);

test(
  "core.lifecycle: pausing a stopped VM is refused with its state",
  withCore(async (core) => {
    await assert.rejects(
      core.lifecycle("w1", "pause"),
      (e: unknown) => e instanceof ConflictError && e.code === "vm.bad-state" && e.extra.state === "stopped",
    );
  }),
);

test(
  "core.reconcile: a VM the store says is running but whose worker is gone becomes stopped, with the reason",
  withCore(async (core, runtime) => {
    core.transaction(() => {
      core.vms.setState("w1", "running", null, "2026-01-01T00:00:01.000Z");
    });
    runtime.attachAnswer = null;

    await core.reconcile();

    assert.deepEqual(
      [core.vms.get("w1").state, core.vms.get("w1").stateReason],
      ["stopped", "no worker found at service start"],
    );
    assert.equal(runtime.calls.length, 1);
  }),
);

test(
  "core.reconcile: a worker found again keeps its VM running and adds no event",
  withCore(async (core, runtime) => {
    core.transaction(() => {
      core.vms.setState("w1", "running", null, "2026-01-01T00:00:01.000Z");
    });
    runtime.attachAnswer = { state: "running", pid: 99 };

    await core.reconcile();

    assert.equal(core.vms.get("w1").state, "running");
    assert.deepEqual(stateEvents(core), []);
  }),
);

test(
  "core: a worker exit the runtime reports is recorded as a state change with its reason",
  withCore(async (core, runtime) => {
    await core.lifecycle("w1", "start");
    const vm = core.vms.get("w1");

    runtime.exit(core.runDir(vm), { state: "crashed", exitReason: "killed by signal 11" });

    assert.deepEqual(
      [core.vms.get("w1").state, core.vms.get("w1").stateReason],
      ["crashed", "killed by signal 11"],
    );
    assert.deepEqual(stateEvents(core).at(-1), "running->crashed");
  }),
);

function configure(core: ServiceCore, change: Partial<VmSpec>): void {
  core.transaction(() => core.vms.update("w1", { ...core.vms.get("w1").spec, ...change }, new Date().toISOString()));
}

function events(core: ServiceCore, operation: string): string[] {
  return core.audit
    .query({ vm: "w1" })
    .filter((e) => e.operation === operation)
    .map((e) => e.result);
}

/** Waits for what a zero-delay timer scheduled (bounded). */
async function settle(predicate: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !predicate(); i++) await sleep(10);
}

/** w1 with an on-failure policy (no backoff), started; returns its run directory. */
async function startedWithPolicy(core: ServiceCore, maxRetries: number): Promise<string> {
  configure(core, { restartPolicy: { mode: "on-failure", maxRetries, backoffSeconds: 0 } });
  await core.lifecycle("w1", "start");
  return core.runDir(core.vms.get("w1"));
}

const starts = (runtime: ScriptedRuntime): number => runtime.calls.filter((c) => c.startsWith("start")).length;

test(
  "core: restart policy on-failure restarts a crashed worker, not one the guest powered off",
  withCore(async (core, runtime) => {
    const runDir = await startedWithPolicy(core, 2);

    runtime.exit(runDir, { state: "crashed", exitReason: "worker (QEMU) killed by signal SIGKILL (9)" });
    assert.match(core.vms.get("w1").stateReason ?? "", /SIGKILL \(9\); restart 1 of 2 in 0 s/);
    await settle(() => core.vms.get("w1").state === "running");

    assert.equal(starts(runtime), 2);
    assert.deepEqual(events(core, "vm.restart"), ["scheduled", "ok"]);
    assert.deepEqual(core.restartsOf("w1"), { attempts: 1, pending: false });

    runtime.exit(runDir, { state: "stopped", exitReason: "guest powered off" });
    await sleep(30);
    assert.equal(core.vms.get("w1").state, "stopped");
    assert.equal(starts(runtime), 2);
  }),
);

test(
  "core: restart policy gives up after maxRetries and says so; a user start begins a new series",
  withCore(async (core, runtime) => {
    const runDir = await startedWithPolicy(core, 1);
    runtime.exit(runDir, { state: "crashed", exitReason: "guest panicked" });
    await settle(() => core.vms.get("w1").state === "running");
    runtime.exit(runDir, { state: "crashed", exitReason: "guest panicked" });
    await sleep(30);

    const vm = core.vms.get("w1");
    assert.deepEqual([vm.state, vm.stateReason], ["crashed", "guest panicked; restart policy gave up after 1 restart"]);
    assert.deepEqual(events(core, "vm.restart"), ["scheduled", "ok", "gave-up"]);

    await core.lifecycle("w1", "start");
    assert.deepEqual(core.restartsOf("w1"), { attempts: 0, pending: false });
  }),
);

test(
  "core: a restart whose start fails is retried within the policy, then given up, without throwing",
  withCore(async (core, runtime) => {
    const runDir = await startedWithPolicy(core, 2);
    runtime.startAnswer = () => Promise.reject(new Error("qemu exited 1"));
    runtime.exit(runDir, { state: "crashed", exitReason: "guest panicked" });
    await settle(() => events(core, "vm.restart").includes("gave-up"));

    assert.deepEqual(events(core, "vm.restart"), ["scheduled", "failed", "scheduled", "failed", "gave-up"]);
    assert.equal(core.vms.get("w1").state, "crashed");
  }),
);

test(
  "core.autostart: starts the autostart VMs that are not running; a failure is audited and not thrown",
  withCore(async (core, runtime) => {
    configure(core, { autostart: true });
    core.autostart();
    await settle(() => core.vms.get("w1").state === "running");
    assert.deepEqual(events(core, "vm.autostart"), ["ok"]);

    // Already running: nothing to do.
    core.autostart();
    await sleep(30);
    assert.equal(starts(runtime), 1);

    await core.lifecycle("w1", "kill");
    runtime.startAnswer = () => Promise.reject(new Error("no such kernel"));
    core.autostart();
    await settle(() => events(core, "vm.autostart").length === 2);
    assert.deepEqual(events(core, "vm.autostart"), ["ok", "failed"]);
    assert.match(core.audit.query({ vm: "w1" }).at(-1)?.detail ?? "", /no such kernel/);
  }),
);

test(
  "core.reconcile: a worker found dead by a signal restarts under on-failure; one found powered off does not",
  withCore(async (core, runtime) => {
    configure(core, { restartPolicy: { mode: "on-failure", backoffSeconds: 0 } });
    core.transaction(() => {
      core.vms.setState("w1", "running", null, "2026-01-01T00:00:01.000Z");
    });
    runtime.attachAnswer = { state: "crashed", exitReason: "worker (QEMU) killed by signal SIGKILL (9) while the service was down" };

    await core.reconcile();
    assert.deepEqual(core.restartsOf("w1"), { attempts: 1, pending: true });
    await settle(() => core.vms.get("w1").state === "running");
    assert.equal(starts(runtime), 1);

    await core.lifecycle("w1", "kill");
    core.transaction(() => {
      core.vms.setState("w1", "running", null, "2026-01-01T00:00:02.000Z");
    });
    runtime.attachAnswer = { state: "stopped", exitReason: "worker (QEMU) exited normally (code 0) while the service was down" };
    await core.reconcile();
    await sleep(30);
    assert.equal(core.vms.get("w1").state, "stopped");
    assert.equal(starts(runtime), 1);
  }),
);

test(
  "core.reconcile: a restart pending when the service stopped is made at its next start; a given-up VM stays crashed",
  withCore(async (core, runtime) => {
    configure(core, { restartPolicy: { mode: "on-failure", backoffSeconds: 0 } });
    core.transaction(() => {
      core.vms.setState("w1", "crashed", "guest panicked; restart 2 of 3 in 2 s", "2026-01-01T00:00:01.000Z");
    });
    await core.reconcile();
    await settle(() => core.vms.get("w1").state === "running");
    assert.equal(starts(runtime), 1);
    assert.match(core.audit.query({ vm: "w1" }).find((e) => e.operation === "vm.restart")?.detail ?? "", /^guest panicked; restart 1 of 3/);

    await core.lifecycle("w1", "kill");
    core.transaction(() => {
      core.vms.setState("w1", "crashed", "guest panicked; restart policy gave up after 3 restarts", "2026-01-01T00:00:02.000Z");
    });
    await core.reconcile();
    await sleep(30);
    assert.equal(core.vms.get("w1").state, "crashed");
    assert.equal(starts(runtime), 1);
  }),
);
