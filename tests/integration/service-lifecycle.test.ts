/**
 * The management service driving real guests: a real service process (`palisade service
 * run`, engine runtime), the default guest image, a second local user. Lifecycle through
 * the API, the console through the service, a service killed with -9 while a VM runs and
 * in the middle of a start and of a stop, a worker killed under the service, and the
 * separate console read and input permissions. A few VMs only: each boot is 2-10 s here.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureDefaultImage } from "../../src/image/index.js";
import { callSocket, okBody, startServiceAt, stopService, type Answer, type VmBody } from "../harness/service.js";
import { CLI } from "../harness/test-vm.js";

/** The shipped CLI (the bundle). */
const cliMain = CLI;
const isRoot = process.getuid?.() === 0;
const hasTools =
  spawnSync("sh", ["-c", "command -v useradd && command -v qemu-system-x86_64"]).status === 0;
const skip = !isRoot || !hasTools ? "needs root, useradd and QEMU" : false;
const READY = "PALISADE-READY";
/** Generous: a TCG boot takes 2-10 s on this busy 2-core machine. */
const BOOT_MS = 120_000;


const dir = mkdtempSync(join(tmpdir(), "palisade-life-test-"));
chmodSync(dir, 0o755);
const dataDir = join(dir, "data");
const socketPath = join(dir, "service.sock");
const testUser = `pal-l${process.pid}`;
let service: ChildProcess | undefined;
let user: { uid: number; gid: number } | undefined;
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

function errorOf(answer: Answer): { code: string; message: string; state?: string; operation?: string } {
  return (answer.body as { error: { code: string; message: string } }).error;
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
async function waitFor<T>(what: string, probe: () => Promise<T>, predicate: (value: T) => boolean, timeoutMs = BOOT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (predicate(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value).slice(-500)}`);
    await sleep(200);
  }
}

const recent = async (name: string): Promise<string> =>
  (await ok<{ output: string }>("GET", `/v1/vms/${name}/console/recent`)).output;

const waitReady = (name: string): Promise<string> => waitFor(`${name} ready`, () => recent(name), (text) => text.includes(READY));

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

/** Types a shell command on the console and waits for its output. */
async function runOnConsole(name: string, command: string, expect: RegExp): Promise<void> {
  const socket = await openConsole(name, true);
  let seen = "";
  socket.on("data", (chunk: Buffer) => (seen += chunk.toString("latin1")));
  try {
    socket.write(`${command}\n`);
    await waitFor(`"${command}" output`, () => Promise.resolve(seen), (text) => expect.test(text), 60_000);
  } finally {
    socket.destroy();
  }
}

function workerPid(vm: VmBody): number {
  const record = JSON.parse(readFileSync(join(dataDir, "vms", vm.id, "worker.json"), "utf8")) as { pid: number };
  return record.pid;
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
  return found.stdout.split("\n").filter((l) => l !== "").map(Number);
}

/** Runs a node script as the test user; the kernel gives the service its uid. */
function asUser(script: string, args: string[], timeoutMs = 30_000): { status: number | null; stdout: string; stderr: string } {
  assert.ok(user);
  return spawnSync(process.execPath, ["-e", script, ...args], {
    uid: user.uid,
    gid: user.gid,
    encoding: "utf8",
    timeout: timeoutMs,
    cwd: "/",
  });
}

const USER_CALL = `
const http = require("node:http");
const [socketPath, method, path, body] = process.argv.slice(1);
const req = http.request({ socketPath, method, path, headers: body ? { "content-type": "application/json" } : {} }, (res) => {
  let text = ""; res.on("data", (c) => text += c); res.on("end", () => process.stdout.write(JSON.stringify({ status: res.statusCode, body: text ? JSON.parse(text) : null })));
});
req.end(body || undefined);
`;

function callAsUser(method: string, path: string, body?: unknown): Answer {
  const result = asUser(USER_CALL, [socketPath, method, path, body === undefined ? "" : JSON.stringify(body)]);
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout) as Answer;
}

// Opens the console read-only, types into it anyway, and prints what it received.
const USER_CONSOLE = `
const http = require("node:http");
const [socketPath, path, typed] = process.argv.slice(1);
const req = http.request({ socketPath, path, headers: { connection: "Upgrade", upgrade: "palisade-console" } });
req.on("upgrade", (_res, socket, head) => {
  let seen = head.toString("latin1");
  socket.on("data", (c) => seen += c.toString("latin1"));
  socket.write(typed + "\\n");
  setTimeout(() => { process.stdout.write(JSON.stringify({ status: 101, seen })); process.exit(0); }, 3000);
});
req.on("response", (res) => {
  let text = ""; res.on("data", (c) => text += c); res.on("end", () => { process.stdout.write(JSON.stringify({ status: res.statusCode, body: JSON.parse(text) })); });
});
req.end();
`;

before(async () => {
  if (skip !== false) return;
  image = await ensureDefaultImage();
  service = await startService();
  const added = spawnSync("useradd", ["-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", testUser], { encoding: "utf8" });
  assert.equal(added.status, 0, added.stderr);
  user = {
    uid: Number(spawnSync("id", ["-u", testUser], { encoding: "utf8" }).stdout.trim()),
    gid: Number(spawnSync("id", ["-g", testUser], { encoding: "utf8" }).stdout.trim()),
  };
});

after(async () => {
  if (skip !== false) return;
  service ??= await startService().catch(() => undefined);
  if (service !== undefined) {
    const { vms } = (await call("GET", "/v1/vms")).body as { vms: VmBody[] };
    for (const vm of vms) if (vm.state !== "stopped" && vm.state !== "crashed") await call("POST", `/v1/vms/${vm.name}/kill`);
    for (const vm of vms) for (const pid of qemuOf(vm.id)) process.kill(pid, "SIGKILL");
    await killService();
  }
  if (user !== undefined) spawnSync("userdel", [testUser]);
  rmSync(dir, { recursive: true, force: true });
});

test("lifecycle: create, start, ready on the console, pause, resume, stop, delete; 409s carry the state", { skip }, async () => {
  const created = await createVm("life");
  assert.equal(created.state, "stopped");

  const started = await ok("POST", "/v1/vms/life/start");
  assert.equal(started.state, "running");
  const again = await call("POST", "/v1/vms/life/start");
  assert.deepEqual([again.status, errorOf(again).state], [409, "running"]);
  await waitReady("life");
  await runOnConsole("life", "echo life-$((6*7))", /life-42/);

  assert.equal((await ok("POST", "/v1/vms/life/pause")).state, "paused");
  const pausedAgain = await call("POST", "/v1/vms/life/pause");
  assert.deepEqual([pausedAgain.status, errorOf(pausedAgain).state], [409, "paused"]);
  const deleteRunning = await call("DELETE", "/v1/vms/life");
  assert.deepEqual([deleteRunning.status, errorOf(deleteRunning).state], [409, "paused"]);
  assert.equal((await ok("POST", "/v1/vms/life/resume")).state, "running");
  await runOnConsole("life", "echo resumed-$((6*7))", /resumed-42/);

  const stopped = await ok("POST", "/v1/vms/life/stop");
  assert.equal(stopped.state, "stopped");
  assert.match(stopped.stateReason ?? "", /stopped \(graceful\)|powered off/);
  assert.deepEqual(qemuOf(created.id), []);
  assert.equal(existsSync(join(dataDir, "vms", created.id)), false);
  await ok("DELETE", "/v1/vms/life");
  assert.equal((await call("GET", "/v1/vms/life")).status, 404);
});

test("console: a user with only console-read gets the output; input is refused; vm.console-write is named", { skip }, async () => {
  await ok("POST", "/v1/authz/scopes", { name: "lab" });
  await ok("POST", "/v1/authz/roles", { name: "Watcher", operations: ["vm.view-config", "vm.console-read"] });
  await ok("POST", "/v1/authz/assignments", { role: "Watcher", scope: "lab", user: testUser });
  const vm = await createVm("watched", { scope: "lab" });
  await ok("POST", "/v1/vms/watched/start");
  await waitReady("watched");

  const readOnly = asUser(USER_CONSOLE, [socketPath, "/v1/vms/watched/console", "echo typed-$((40+2))"]);
  assert.equal(readOnly.status, 0, readOnly.stderr);
  const seen = JSON.parse(readOnly.stdout) as { status: number; seen: string };
  assert.equal(seen.status, 101);
  // The recent output from before the attach, kept by the service.
  assert.ok(seen.seen.includes(READY), seen.seen.slice(-300));
  // What the read-only user typed never reached the guest.
  await runOnConsole("watched", "echo probe-$((1+1))", /probe-2/);
  assert.ok(!(await recent("watched")).includes("typed-42"));

  const withInput = asUser(USER_CONSOLE, [socketPath, "/v1/vms/watched/console?input=1", "echo x"]);
  const refused = JSON.parse(withInput.stdout) as { status: number; body: { error: { code: string; operation: string } } };
  assert.deepEqual([refused.status, refused.body.error.operation], [403, "vm.console-write"]);

  // The CLI says the same, for a user who asks for input.
  const cli = spawnSync(process.execPath, [cliMain, "vm", "console", "watched", "--connect", `unix:${socketPath}`], {
    uid: user?.uid,
    gid: user?.gid,
    encoding: "utf8",
    timeout: 30_000,
    cwd: "/",
    input: "",
  });
  assert.notEqual(cli.status, 0);
  assert.match(cli.stderr, /console-write/);
  assert.equal(callAsUser("POST", "/v1/vms/watched/stop").status, 403);

  // The worker is killed under the service: recorded as crashed, with the reason.
  const pid = workerPid(vm);
  process.kill(pid, "SIGKILL");
  const crashed = await waitFor("crash recorded", () => stateOf("watched"), (v) => v.state === "crashed", 30_000);
  assert.match(crashed.stateReason ?? "", /killed or crashed/);
  assert.equal(existsSync(join(dataDir, "vms", vm.id)), false);
});

test("files: a user may only name files they could open themselves, checked again at start", { skip }, async () => {
  assert.ok(user && image);
  await ok("POST", "/v1/authz/assignments", { role: "Administrator", scope: "lab", user: testUser });
  const mine = join(dir, "user-files");
  spawnSync("mkdir", ["-m", "0755", mine]);
  chownSync(mine, user.uid, user.gid);
  const kernel = join(mine, "vmlinuz");
  writeFileSync(kernel, readFileSync(image.kernelPath));
  chownSync(kernel, user.uid, user.gid);

  const shadow = callAsUser("POST", "/v1/vms", { name: "evil", kernel, scope: "lab", disks: [{ path: "/etc/shadow" }] });
  assert.deepEqual([shadow.status, errorOf(shadow).code], [400, "vm.path-denied"]);
  assert.match(errorOf(shadow).message, /disks\.0\.path: \/etc\/shadow/);
  const rootKernel = callAsUser("POST", "/v1/vms", { name: "evil", kernel: image.kernelPath, scope: "lab" });
  assert.deepEqual([rootKernel.status, errorOf(rootKernel).code], [400, "vm.path-denied"]);

  const allowed = callAsUser("POST", "/v1/vms", { name: "evil", kernel, scope: "lab" });
  assert.equal(allowed.status, 201, JSON.stringify(allowed.body));
  // The file is swapped for a link to a file the user cannot read: the start refuses.
  unlinkSync(kernel);
  symlinkSync("/etc/shadow", kernel);
  const start = await call("POST", "/v1/vms/evil/start");
  assert.deepEqual([start.status, errorOf(start).code], [400, "vm.path-denied"]);
  assert.equal((await stateOf("evil")).state, "stopped");
  await ok("DELETE", "/v1/vms/evil");
});

test("restart: kill -9 of the service leaves the worker running; the new service re-attaches and stops it", { skip }, async () => {
  const vm = await createVm("survivor");
  await ok("POST", "/v1/vms/survivor/start");
  await waitReady("survivor");
  const pid = workerPid(vm);

  await killService();
  assert.ok(alive(pid), "the worker outlives the service");
  service = await startService();

  assert.equal((await stateOf("survivor")).state, "running");
  await runOnConsole("survivor", "echo after-restart-$((6*7))", /after-restart-42/);
  const stopped = await ok("POST", "/v1/vms/survivor/stop");
  assert.equal(stopped.state, "stopped");
  assert.equal(alive(pid), false);
});

test("kill -9 of the service in the middle of a start and of a stop leaves the VM manageable", { skip }, async () => {
  const vm = await createVm("k9");
  // Mid-start: the service dies while QEMU is being launched.
  const pending = call("POST", "/v1/vms/k9/start").catch(() => null);
  await waitFor("start under way", () => Promise.resolve(existsSync(join(dataDir, "vms", vm.id))), Boolean, 30_000);
  await sleep(50);
  await killService();
  await pending;
  service = await startService();
  let now = await stateOf("k9");
  assert.ok(["running", "stopped"].includes(now.state), `after restart: ${now.state} (${now.stateReason ?? ""})`);
  if (now.state === "stopped") {
    assert.deepEqual(qemuOf(vm.id), [], "no orphan worker is left behind");
    await ok("POST", "/v1/vms/k9/start");
  }
  await waitReady("k9");

  // Mid-stop: the guest got the power button; the service dies before it answers.
  const stopping = call("POST", "/v1/vms/k9/stop").catch(() => null);
  await waitFor("stop under way", () => stateOf("k9"), (v) => v.state === "stopping" || v.state === "stopped", 30_000);
  await killService();
  await stopping;
  service = await startService();
  now = await stateOf("k9");
  assert.ok(["running", "stopped"].includes(now.state), `after restart: ${now.state} (${now.stateReason ?? ""})`);
  if (now.state === "running") assert.equal((await ok("POST", "/v1/vms/k9/stop")).state, "stopped");
  await waitFor("no worker left", () => Promise.resolve(qemuOf(vm.id)), (pids) => pids.length === 0, 30_000);
  // Manageable: it starts and stops again.
  await ok("POST", "/v1/vms/k9/start");
  await waitReady("k9");
  assert.equal((await ok("POST", "/v1/vms/k9/kill")).state, "stopped");
  await ok("DELETE", "/v1/vms/k9");
});
