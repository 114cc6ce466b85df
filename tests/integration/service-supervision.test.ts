/**
 * The service supervising real workers: autostart at service start (after the workers
 * that survived it are re-attached; a failing autostart audited, the service up), the
 * restart policy (a worker killed with -9 is started again, a guest poweroff is not), and
 * the end of workers the service did not launch itself — one that died while the service
 * was down, one re-attached that dies later — reported with their signal and their jail
 * (cgroups, per-VM uid, disk owner, run directory) undone. Real guests, a real service
 * process (`palisade service run`): each boot is 2-10 s here, so a few VMs only.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, type ChildProcess } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureDefaultImage } from "../../src/image/index.js";
import { callSocket, okBody, startServiceAt, stopService, type Answer, type VmBody } from "../harness/service.js";
import { CLI } from "../harness/test-vm.js";
import { sandboxStateDir } from "../../src/engine/worker-jail.js";

/** The shipped CLI (the bundle). */
const cliMain = CLI;
const isRoot = process.getuid?.() === 0;
const hasTools = spawnSync("sh", ["-c", "command -v qemu-system-x86_64"]).status === 0;
const skip = !isRoot || !hasTools ? "needs root and QEMU" : false;
const READY = "PALISADE-READY";
/** Generous: a TCG boot takes 2-10 s on this busy 2-core machine. */
const BOOT_MS = 120_000;


const dir = mkdtempSync(join(tmpdir(), "palisade-sup-test-"));
chmodSync(dir, 0o755);
const dataDir = join(dir, "data");
const socketPath = join(dir, "service.sock");
let service: ChildProcess | undefined;
let image: { kernelPath: string; initrdPath: string } | undefined;

function startService(): Promise<ChildProcess> {
  return startServiceAt(cliMain, dataDir, socketPath);
}

async function killService(): Promise<void> {
  const child = service;
  assert.ok(child);
  service = undefined;
  await stopService(child);
}

function call(method: string, path: string, body?: unknown): Promise<Answer> {
  return callSocket(socketPath, method, path, body, { timeoutMs: 90_000 });
}

async function ok<T = VmBody>(method: string, path: string, body?: unknown): Promise<T> {
  return okBody(await call(method, path, body), method, path) as T;
}

async function createVm(name: string, extra: Record<string, unknown> = {}): Promise<VmBody> {
  assert.ok(image);
  return ok("POST", "/v1/vms", {
    name,
    kernel: image.kernelPath,
    initrd: image.initrdPath,
    memoryMiB: 128,
    readyMarker: READY,
    ...extra,
  });
}

/** Polls `predicate` until it holds; every wait is bounded. */
async function waitFor<T>(
  what: string,
  probe: () => Promise<T>,
  predicate: (value: T) => boolean,
  timeoutMs = BOOT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (predicate(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value).slice(-500)}`);
    await sleep(200);
  }
}

const recent = async (name: string): Promise<string> =>
  (await ok<{ output: string }>("GET", `/v1/vms/${name}/console/recent`)).output;

const waitReady = (name: string): Promise<string> =>
  waitFor(
    `${name} ready`,
    () => recent(name),
    (text) => text.includes(READY),
  );

const stateOf = async (name: string): Promise<VmBody> => ok("GET", `/v1/vms/${name}`);

/** Opens the console upgrade as this process (root). */
function openConsole(name: string, input: boolean): Promise<Socket> {
  return new Promise((resolvePromise, reject) => {
    const req = request({
      socketPath,
      path: `/v1/vms/${name}/console${input ? "?input=1" : ""}`,
      headers: { connection: "Upgrade", upgrade: "palisade-console" },
    });
    req.on("upgrade", (_res, socket, head) => {
      // Output sent right after the 101 arrives with it, in head.
      if (head.length > 0) socket.unshift(head);
      resolvePromise(socket);
    });
    req.on("response", (res) => {
      reject(new Error(`console answered ${res.statusCode ?? "?"}`));
    });
    req.on("error", reject);
    req.end();
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.includes(") Z ");
  } catch {
    return false;
  }
}

/** QEMU processes of VM `id` (its UUID is on the command line). */
function qemuOf(id: string): number[] {
  const found = spawnSync("pgrep", ["-f", `uuid ${id}`], { encoding: "utf8" });
  return found.stdout
    .split("\n")
    .filter((l) => l !== "")
    .map(Number);
}

interface Restarts {
  attempts: number;
  pending: boolean;
}
interface AuditRow {
  operation: string;
  vm: string | null;
  result: string;
  detail: string | null;
}

const tag = String(process.pid);

function record(vm: VmBody): { pid: number; qemuPid?: number } {
  return JSON.parse(readFileSync(join(dataDir, "vms", vm.id, "worker.json"), "utf8")) as {
    pid: number;
    qemuPid?: number;
  };
}

/** kill -9 of the VM's QEMU itself (inside its jail), as a crash would end it. */
function killQemu(vm: VmBody): number {
  const { pid, qemuPid } = record(vm);
  const target = qemuPid ?? pid;
  process.kill(target, "SIGKILL");
  return pid;
}

/** The VM's cgroup directories left on the host (one per v1 hierarchy, or v2's). */
function cgroupsOf(name: string): string[] {
  const found: string[] = [];
  const visit = (base: string, depth: number): void => {
    if (existsSync(join(base, "palisade", name))) found.push(join(base, "palisade", name));
    if (depth === 0) return;
    for (const entry of readdirSync(base, { withFileTypes: true }))
      if (entry.isDirectory()) visit(join(base, entry.name), depth - 1);
  };
  visit("/sys/fs/cgroup", 1);
  return found;
}

/** The VM ids (uuids) holding a claim in the host-wide sandbox uid pool. */
function uidClaims(): string[] {
  const pool = join(sandboxStateDir(dataDir), "uid-pool");
  if (!existsSync(pool)) return [];
  return readdirSync(pool)
    .filter((f) => f.endsWith(".json"))
    .map((f) => (JSON.parse(readFileSync(join(pool, f), "utf8")) as { vmId: string }).vmId);
}

async function audit(vm: string): Promise<AuditRow[]> {
  return (await ok<{ entries: AuditRow[] }>("GET", `/v1/audit?vm=${vm}`)).entries;
}

/** A disk owned by root, mode 0600: the jail hands it to the worker's uid and must give it back. */
function makeDisk(name: string): string {
  const path = join(dir, `${name}.img`);
  writeFileSync(path, Buffer.alloc(1024 * 1024));
  chmodSync(path, 0o600);
  return path;
}

before(async () => {
  if (skip !== false) return;
  image = await ensureDefaultImage();
  service = await startService();
});

after(async () => {
  if (skip !== false) return;
  service ??= await startService().catch(() => undefined);
  if (service !== undefined) {
    const { vms } = (await call("GET", "/v1/vms")).body as { vms: VmBody[] };
    for (const vm of vms) {
      await call("PATCH", `/v1/vms/${vm.name}`, { restartPolicy: null, autostart: false });
      if (vm.state !== "stopped" && vm.state !== "crashed") await call("POST", `/v1/vms/${vm.name}/kill`);
    }
    for (const vm of vms) for (const pid of qemuOf(vm.id)) process.kill(pid, "SIGKILL");
    await killService();
  }
  rmSync(dir, { recursive: true, force: true });
});

test(
  "restart policy: a worker killed with -9 is started again; a guest poweroff is not",
  { skip },
  async () => {
    const name = `phoenix-${tag}`;
    assert.ok(image);
    // Defined through the CLI, whose flags make the restart policy.
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [cliMain, "vm", ...args, "--connect", `unix:${socketPath}`], {
        encoding: "utf8",
        timeout: 30_000,
      });
    const created = cli(
      "create",
      name,
      "--kernel",
      image.kernelPath,
      "--initrd",
      image.initrdPath,
      "--memory",
      "128M",
      "--ready-marker",
      READY,
      "--restart",
      "on-failure:2",
      "--restart-backoff",
      "1",
    );
    assert.equal(created.status, 0, created.stderr);
    assert.match(cli("show", name).stdout, /restart\s+on-failure, at most 2, backoff 1 s doubling/);
    const vm = await stateOf(name);
    await ok("POST", `/v1/vms/${name}/start`);
    await waitReady(name);
    const firstPid = killQemu(vm);

    const restarted = await waitFor(
      "restart",
      () => ok<VmBody & { restarts: Restarts }>("GET", `/v1/vms/${name}`),
      (v) =>
        v.state === "running" &&
        v.restarts.attempts === 1 &&
        existsSync(join(dataDir, "vms", vm.id, "worker.json")) &&
        record(vm).pid !== firstPid,
    );
    assert.equal(alive(firstPid), false);
    const restart = (await audit(name)).filter((e) => e.operation === "vm.restart");
    assert.deepEqual(
      restart.map((e) => e.result),
      ["scheduled", "ok"],
    );
    assert.match(restart[0]?.detail ?? "", /killed by signal SIGKILL \(9\).*restart 1 of 2 in 1 s/);
    assert.equal(restarted.restarts.pending, false);
    await waitReady(name);

    // The guest powers itself off: stopped, and it stays stopped.
    const socket = await openConsole(name, true);
    socket.end("poweroff\n");
    const off = await waitFor(
      "poweroff",
      () => stateOf(name),
      (v) => v.state === "stopped",
      60_000,
    );
    assert.match(off.stateReason ?? "", /powered off/);
    await sleep(3000);
    assert.equal((await stateOf(name)).state, "stopped");
    assert.deepEqual(qemuOf(vm.id), []);
    assert.deepEqual((await audit(name)).filter((e) => e.operation === "vm.restart").length, 2);
    await ok("DELETE", `/v1/vms/${name}`);
  },
);

test(
  "service restart: autostart VMs start after survivors are re-attached; a failed autostart is audited; workers that end unheld are reported and their jails undone",
  { skip },
  async () => {
    assert.ok(image);
    const ghost = `ghost-${tag}`;
    const lazarus = `lazarus-${tag}`;
    const auto = `auto-${tag}`;
    const broken = `broken-${tag}`;
    const disks = { [ghost]: makeDisk(ghost), [lazarus]: makeDisk(lazarus) };
    const ghostVm = await createVm(ghost, { disks: [{ path: disks[ghost] }] });
    const lazarusVm = await createVm(lazarus, { disks: [{ path: disks[lazarus] }], autostart: true });
    const autoVm = await createVm(auto, { autostart: true, autostartDelaySeconds: 1 });
    const kernelCopy = join(dir, "vanishing-vmlinuz");
    copyFileSync(image.kernelPath, kernelCopy);
    await createVm(broken, { kernel: kernelCopy, autostart: true });
    for (const name of [ghost, lazarus]) {
      await ok("POST", `/v1/vms/${name}/start`);
      await waitReady(name);
    }
    const workerUid = statSync(disks[ghost] ?? "").uid;
    assert.ok(workerUid >= 64000, `the jail hands the disk to the worker's uid (owner ${workerUid})`);
    const lazarusPid = record(lazarusVm).pid;
    assert.ok(uidClaims().includes(ghostVm.id), `a running worker holds a uid claim: ${uidClaims().join(", ")}`);

    // The service dies; so does one worker while nobody watches.
    await killService();
    const ghostPid = killQemu(ghostVm);
    await waitFor(
      "ghost's jail to end",
      () => Promise.resolve(alive(ghostPid)),
      (a) => !a,
      30_000,
    );
    rmSync(kernelCopy);
    service = await startService();

    // Died while the service was down: its signal reported, its jail undone.
    const ghostNow = await stateOf(ghost);
    assert.equal(ghostNow.state, "crashed");
    assert.match(ghostNow.stateReason ?? "", /killed by signal SIGKILL \(9\) while the service was down/);
    assert.deepEqual(cgroupsOf(ghost), []);
    assert.ok(!uidClaims().includes(ghostVm.id), `uid claims: ${uidClaims().join(", ")}`);
    assert.equal(statSync(disks[ghost] ?? "").uid, 0, "the disk's owner is given back");
    assert.equal(existsSync(join(dataDir, "vms", ghostVm.id)), false);

    // Survived: re-attached, not started twice (autostart skips it).
    assert.equal((await stateOf(lazarus)).state, "running");
    assert.equal(record(lazarusVm).pid, lazarusPid);

    // Autostart: the one whose kernel vanished fails, audited; the other starts after its delay.
    await waitFor(
      "autostart",
      () => stateOf(auto),
      (v) => v.state === "running",
      60_000,
    );
    await waitReady(auto);
    assert.deepEqual(
      (await audit(auto)).filter((e) => e.operation === "vm.autostart").map((e) => e.result),
      ["ok"],
    );
    const failed = await waitFor(
      "failed autostart audited",
      () => audit(broken),
      (rows) => rows.some((e) => e.operation === "vm.autostart"),
      30_000,
    );
    const entry = failed.find((e) => e.operation === "vm.autostart");
    assert.notEqual(entry?.result, "ok");
    assert.match(entry?.detail ?? "", /vanishing-vmlinuz/);
    assert.equal((await stateOf(broken)).state, "stopped");
    assert.equal((await stateOf(lazarus)).state, "running");
    assert.ok(autoVm.id !== "");

    // The re-attached worker dies under the new service: reported with its signal, jail undone.
    killQemu(lazarusVm);
    const dead = await waitFor(
      "lazarus crash recorded",
      () => stateOf(lazarus),
      (v) => v.state === "crashed",
      30_000,
    );
    assert.match(dead.stateReason ?? "", /killed by signal SIGKILL \(9\)/);
    assert.deepEqual(cgroupsOf(lazarus), []);
    assert.ok(!uidClaims().includes(lazarusVm.id), `uid claims: ${uidClaims().join(", ")}`);
    assert.equal(statSync(disks[lazarus] ?? "").uid, 0, "the disk's owner is given back");
    assert.equal(existsSync(join(dataDir, "vms", lazarusVm.id)), false);
    assert.equal(existsSync(join(dataDir, "jail-leftovers", lazarusVm.id)), false);

    assert.equal((await ok("POST", `/v1/vms/${auto}/kill`)).state, "stopped");
    for (const name of [ghost, lazarus, auto, broken]) {
      await call("PATCH", `/v1/vms/${name}`, { autostart: false });
      await ok("DELETE", `/v1/vms/${name}`);
    }
  },
);
