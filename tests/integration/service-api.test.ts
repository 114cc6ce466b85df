/**
 * The management service as a real process on a temp data dir and socket: the API as
 * root and as a second local user created for the test, authorization errors naming the
 * missing operation, bad input, the single-instance lock, and kill -9 at several points
 * of a burst of writes leaving the store and the audit chain consistent.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { callSocket, startServiceAt, stopService, type Answer } from "../harness/service.js";
import { CLI } from "../harness/test-vm.js";

/** The shipped CLI (the bundle). */
const cliMain = CLI;
const isRoot = process.getuid?.() === 0;
const hasUseradd = spawnSync("sh", ["-c", "command -v useradd && command -v groupadd"]).status === 0;

const dir = mkdtempSync(join(tmpdir(), "palisade-service-test-"));
// The test user must reach the socket inside (mkdtemp makes the directory 0700).
chmodSync(dir, 0o755);
const dataDir = join(dir, "data");
const socketPath = join(dir, "service.sock");
// Names of the test's own user and group; the pid keeps parallel runs apart.
const testUser = `pal-t${process.pid}`;
const testGroup = `pal-g${process.pid}`;
let service: ChildProcess | undefined;
let userIds: { uid: number; gid: number } | undefined;

function startService(): Promise<ChildProcess> {
  return startServiceAt(cliMain, dataDir, socketPath);
}

/** One request as root (this process), over the socket. */
function call(method: string, path: string, body?: unknown, rawBody?: Buffer): Promise<Answer> {
  return callSocket(socketPath, method, path, body, { timeoutMs: 10_000, ...(rawBody === undefined ? {} : { rawBody }) });
}

// The same request made by a child process running as the test user, so the kernel reports its uid.
const USER_SCRIPT = `
const http = require("node:http");
const [socketPath, method, path, body] = process.argv.slice(1);
const req = http.request({ socketPath, method, path, headers: body ? { "content-type": "application/json" } : {} }, (res) => {
  let text = ""; res.on("data", (c) => text += c); res.on("end", () => process.stdout.write(JSON.stringify({ status: res.statusCode, body: text ? JSON.parse(text) : null })));
});
req.on("error", (e) => { process.stdout.write(JSON.stringify({ status: -1, body: String(e) })); });
req.end(body || undefined);
`;

function callAsUser(method: string, path: string, body?: unknown): Answer {
  assert.ok(userIds);
  const result = spawnSync(
    process.execPath,
    ["-e", USER_SCRIPT, socketPath, method, path, body === undefined ? "" : JSON.stringify(body)],
    {
      uid: userIds.uid,
      gid: userIds.gid,
      encoding: "utf8",
      timeout: 15_000,
      cwd: "/",
    },
  );
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout) as Answer;
}

function cliAsUser(args: string[]): { status: number | null; stdout: string; stderr: string } {
  assert.ok(userIds);
  return spawnSync(process.execPath, [cliMain, ...args, "--connect", `unix:${socketPath}`], {
    uid: userIds.uid,
    gid: userIds.gid,
    encoding: "utf8",
    timeout: 15_000,
    cwd: "/",
  });
}

function errorOf(answer: Answer): {
  code: string;
  message: string;
  field?: string;
  operation?: string;
  state?: string;
} {
  return (answer.body as { error: { code: string; message: string } }).error;
}

before(async () => {
  if (!isRoot || !hasUseradd) return;
  service = await startService();
  assert.equal(spawnSync("groupadd", [testGroup]).status, 0);
  const added = spawnSync(
    "useradd",
    ["-M", "-N", "-g", "nogroup", "-G", testGroup, "-s", "/usr/sbin/nologin", testUser],
    { encoding: "utf8" },
  );
  assert.equal(added.status, 0, added.stderr);
  const id = spawnSync("id", ["-u", testUser], { encoding: "utf8" });
  const gid = spawnSync("id", ["-g", testUser], { encoding: "utf8" });
  userIds = { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) };
});

after(async () => {
  if (service !== undefined) await stopService(service, "SIGTERM");
  if (userIds !== undefined) {
    spawnSync("userdel", [testUser]);
    spawnSync("groupdel", [testGroup]);
  }
  rmSync(dir, { recursive: true, force: true });
});

const skip = !isRoot || !hasUseradd ? "needs root and useradd" : false;

test("service: root defines scopes and VMs, lists and shows them", { skip }, async () => {
  assert.equal((await call("POST", "/v1/authz/scopes", { name: "web" })).status, 201);
  assert.equal((await call("POST", "/v1/authz/scopes", { name: "db" })).status, 201);

  const created = await call("POST", "/v1/vms", {
    name: "web-1",
    kernel: "/boot/vmlinuz",
    memoryMiB: 256,
    scope: "web",
  });
  await call("POST", "/v1/vms", {
    name: "db-1",
    kernel: "/boot/vmlinuz",
    scope: "db",
    disks: [{ path: "/var/lib/x.raw", format: "raw" }],
  });
  const list = await call("GET", "/v1/vms");
  const shown = await call("GET", "/v1/vms/web-1");

  assert.equal(created.status, 201);
  assert.deepEqual(
    (list.body as { vms: { name: string }[] }).vms.map((v) => v.name),
    ["db-1", "web-1"],
  );
  assert.equal((shown.body as { state: string; spec: { memoryMiB: number } }).spec.memoryMiB, 256);
  assert.equal((shown.body as { state: string }).state, "stopped");
});

test("service: bad input is refused with 400 naming the field, 404, 409 and 413", { skip }, async () => {
  const slash = await call("POST", "/v1/vms", { name: "a/b", kernel: "/k" });
  const control = await call("POST", "/v1/vms", { name: "a\u0007b", kernel: "/k" });
  const long = await call("POST", "/v1/vms", { name: "x".repeat(65), kernel: "/k" });
  const unknownField = await call("POST", "/v1/vms", { name: "ok", kernel: "/k", bogus: 1 });
  const badMemory = await call("POST", "/v1/vms", { name: "ok", kernel: "/k", memoryMiB: "lots" });
  const badJson = await call("POST", "/v1/vms", undefined, Buffer.from("{not json"));
  const huge = await call("POST", "/v1/vms", { name: "ok", kernel: "/k", append: "x".repeat(70 * 1024) });
  const missing = await call("GET", "/v1/vms/nope");
  const duplicate = await call("POST", "/v1/vms", { name: "web-1", kernel: "/k" });
  const unknownScope = await call("POST", "/v1/vms", { name: "ok", kernel: "/k", scope: "nowhere" });
  const unknownRole = await call("POST", "/v1/authz/assignments", { role: "Wizard", user: "root" });
  const scopeInUse = await call("DELETE", "/v1/authz/scopes/web");
  const noRoute = await call("GET", "/v2/anything");

  assert.deepEqual([slash.status, errorOf(slash).field], [400, "body.name"]);
  assert.match(errorOf(slash).message, /path separator/);
  assert.deepEqual([control.status, errorOf(control).field], [400, "body.name"]);
  assert.deepEqual([long.status, errorOf(long).field], [400, "body.name"]);
  assert.deepEqual([unknownField.status, errorOf(unknownField).field], [400, "body.bogus"]);
  assert.deepEqual([badMemory.status, errorOf(badMemory).field], [400, "body.memoryMiB"]);
  assert.equal(badJson.status, 400);
  assert.deepEqual([huge.status, errorOf(huge).code], [413, "api.body-too-large"]);
  assert.deepEqual([missing.status, errorOf(missing).code], [404, "vm.not-found"]);
  assert.deepEqual([duplicate.status, errorOf(duplicate).code], [409, "vm.exists"]);
  assert.deepEqual([unknownScope.status, errorOf(unknownScope).code], [404, "authz.unknown-scope"]);
  assert.deepEqual([unknownRole.status, errorOf(unknownRole).code], [404, "authz.unknown-role"]);
  assert.deepEqual([scopeInUse.status, errorOf(scopeInUse).code], [409, "authz.scope-in-use"]);
  assert.equal(noRoute.status, 404);
  assert.equal((await call("GET", "/v1/vms")).status, 200, "the service still answers after bad input");
});

test(
  "service: /openapi.json documents the routes and the schemas the service validates with",
  { skip },
  async () => {
    const doc = (await call("GET", "/openapi.json")).body as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: {
              content: {
                "application/json": {
                  schema: { properties: Record<string, unknown>; additionalProperties: boolean };
                };
              };
            };
          }
        >
      >;
    };

    const createBody = doc.paths["/v1/vms"]?.post?.requestBody?.content["application/json"].schema;
    assert.equal(doc.openapi, "3.1.0");
    assert.ok(createBody?.properties.memoryMiB);
    assert.equal(createBody.additionalProperties, false);
    assert.ok(doc.paths["/v1/vms/{name}"]?.delete);
    assert.ok(doc.paths["/v1/authz/check"]?.post);
  },
);

test(
  "service: a second local user is denied by default, and the 403 names the missing operation",
  { skip },
  () => {
    const list = callAsUser("GET", "/v1/vms");
    const show = callAsUser("GET", "/v1/vms/web-1");
    const cli = cliAsUser(["vm", "delete", "web-1"]);

    assert.deepEqual(list, { status: 200, body: { vms: [] } });
    assert.equal(show.status, 403);
    assert.equal(errorOf(show).operation, "vm.view-config");
    assert.match(errorOf(show).message, new RegExp(`user ${testUser} lacks operation vm\\.view-config`));
    assert.equal(cli.status, 1);
    assert.match(cli.stderr, /lacks operation vm\.delete .*\[authz\.denied\]/);
  },
);

test(
  "service: an Operator within scope web may operate web VMs only, and not delete them",
  { skip },
  async () => {
    const assigned = await call("POST", "/v1/authz/assignments", {
      role: "Operator",
      scope: "web",
      user: testUser,
    });
    assert.equal(assigned.status, 201);

    const showWeb = callAsUser("GET", "/v1/vms/web-1");
    const showDb = callAsUser("GET", "/v1/vms/db-1");
    const del = callAsUser("DELETE", "/v1/vms/web-1");
    const start = callAsUser("POST", "/v1/vms/web-1/start");
    const audit = callAsUser("GET", "/v1/audit");
    const changePolicy = callAsUser("POST", "/v1/authz/scopes", { name: "mine" });
    const check = cliAsUser(["authz", "check", "vm.start", "--vm", "web-1"]);

    assert.equal(showWeb.status, 200);
    assert.deepEqual([showDb.status, errorOf(showDb).operation], [403, "vm.view-config"]);
    assert.deepEqual([del.status, errorOf(del).operation], [403, "vm.delete"]);
    // Authorized; the engine then refuses the definition's kernel (it does not exist): a 400, not a 403.
    assert.equal(start.status, 400, JSON.stringify(start.body));
    assert.match(errorOf(start).message, /vmlinuz/);
    assert.deepEqual([audit.status, errorOf(audit).operation], [403, "audit.read"]);
    assert.deepEqual([changePolicy.status, errorOf(changePolicy).operation], [403, "authz.change"]);
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stdout, /^allowed: role Operator assigned to user .* within scope web/);
  },
);

test("service: a Viewer assignment to the user's group grants viewing everywhere", { skip }, async () => {
  const assigned = await call("POST", "/v1/authz/assignments", { role: "Viewer", group: testGroup });
  assert.equal(assigned.status, 201);

  const showDb = callAsUser("GET", "/v1/vms/db-1");
  const list = callAsUser("GET", "/v1/vms");

  assert.equal(showDb.status, 200);
  assert.equal((list.body as { vms: unknown[] }).vms.length, 2);
});

test("service: the audit log records the user's denials and verifies", { skip }, async () => {
  const entries = (
    (await call("GET", `/v1/audit?vm=web-1`)).body as {
      entries: { principal: string; operation: string; decision: string; vm: string }[];
    }
  ).entries;
  const verdict = (await call("GET", "/v1/audit/verify")).body as { ok: boolean; count: number };

  assert.ok(
    entries.some((e) => e.principal === testUser && e.operation === "vm.delete" && e.decision === "denied"),
  );
  assert.ok(entries.every((e) => e.vm === "web-1"));
  assert.equal(verdict.ok, true);
  assert.ok(verdict.count > 20);
});

test(
  "service: the CLI finds the service through PALISADE_SERVICE and prints the audit and its verification",
  { skip },
  () => {
    const env = { ...process.env, PALISADE_SERVICE: `unix:${socketPath}` };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [cliMain, ...args], { encoding: "utf8", timeout: 15_000, env });

    const verify = cli(["audit", "--verify"]);
    const audit = cli(["audit", "--vm", "db-1", "--json"]);
    const list = cli(["vm", "list", "--json"]);
    const unreachable = spawnSync(
      process.execPath,
      [cliMain, "vm", "list", "--connect", `unix:${join(dir, "nobody-home.sock")}`],
      { encoding: "utf8", timeout: 15_000 },
    );

    assert.equal(verify.status, 0, verify.stderr);
    assert.match(verify.stdout, /^Audit log intact: \d+ entries, head [0-9a-f]{64}$/m);
    assert.ok((JSON.parse(audit.stdout) as { vm: string }[]).every((e) => e.vm === "db-1"));
    assert.deepEqual(
      (JSON.parse(list.stdout) as { name: string }[]).map((v) => v.name),
      ["db-1", "web-1"],
    );
    assert.notEqual(unreachable.status, 0);
    assert.match(
      unreachable.stderr,
      /Cannot reach the palisade service at .*nobody-home\.sock: is it running\?/,
    );
  },
);

test("service: a second service on the same data dir refuses to start with a clear error", { skip }, () => {
  const second = spawnSync(
    process.execPath,
    [cliMain, "service", "run", "--data-dir", dataDir, "--listen", `unix:${join(dir, "other.sock")}`],
    {
      encoding: "utf8",
      timeout: 20_000,
    },
  );

  assert.notEqual(second.status, 0);
  assert.match(
    second.stderr,
    /Another palisade service \(pid \d+\) is already running on data dir .*\[service\.locked\]/,
  );
});

test("service: TCP is refused as unsupported, by the service before it touches anything and by the CLI", { skip }, () => {
  const tcpDataDir = join(dir, "tcp-data");
  const run = spawnSync(process.execPath, [cliMain, "service", "run", "--data-dir", tcpDataDir, "--listen", "tcp://127.0.0.1:7777"], {
    encoding: "utf8",
    timeout: 20_000,
  });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /Listening on TCP is not supported by this version: .*TLS and tokens.*\[service\.tcp-unsupported\]/);
  assert.equal(existsSync(tcpDataDir), false);
  const client = spawnSync(process.execPath, [cliMain, "vm", "list", "--connect", "tcp://127.0.0.1:7777"], { encoding: "utf8", timeout: 20_000 });
  assert.equal(client.status, 1);
  assert.match(client.stderr, /does not listen on TCP.*\[service\.tcp-unsupported\]/);
});

// Kill -9 at several points of a burst of writes; afterwards every VM in the store has its
// audit entry (and only those), the chain verifies, and every VM can be shown and deleted.
for (const killAfterMs of [15, 60, 200]) {
  test(
    `service: kill -9 ${killAfterMs} ms into a burst of creates and deletes leaves the store consistent`,
    { skip },
    async () => {
      assert.ok(service);
      const prefix = `k${killAfterMs}-`;
      const burst: Promise<unknown>[] = [];
      for (let i = 0; i < 150; i++) {
        burst.push(
          call("POST", "/v1/vms", { name: `${prefix}${i}`, kernel: "/boot/vmlinuz", scope: "web" }).catch(
            () => null,
          ),
        );
        if (i % 3 === 0) burst.push(call("DELETE", `/v1/vms/${prefix}${i - 3}`).catch(() => null));
      }
      await new Promise((r) => setTimeout(r, killAfterMs));
      await stopService(service, "SIGKILL");
      await Promise.all(burst);
      assert.ok(existsSync(socketPath), "a killed service leaves its socket file behind");

      service = await startService();

      const vms = (
        (await call("GET", "/v1/vms")).body as { vms: { name: string; state: string }[] }
      ).vms.filter((v) => v.name.startsWith(prefix));
      const audit = (
        (await call("GET", "/v1/audit?limit=10000")).body as {
          entries: { operation: string; vm: string | null; result: string }[];
        }
      ).entries;
      const created = new Set(
        audit
          .filter((e) => e.operation === "vm.create" && e.result === "ok" && e.vm?.startsWith(prefix))
          .map((e) => e.vm),
      );
      const deleted = new Set(
        audit
          .filter((e) => e.operation === "vm.delete" && e.result === "ok" && e.vm?.startsWith(prefix))
          .map((e) => e.vm),
      );
      const expected = [...created].filter((name) => !deleted.has(name)).sort();
      assert.deepEqual(vms.map((v) => v.name).sort(), expected);
      assert.equal(((await call("GET", "/v1/audit/verify")).body as { ok: boolean }).ok, true);
      for (const vm of vms) {
        assert.equal(vm.state, "stopped");
        assert.equal((await call("GET", `/v1/vms/${vm.name}`)).status, 200);
        assert.equal((await call("DELETE", `/v1/vms/${vm.name}`)).status, 200);
      }
    },
  );
}

test(
  "service: an audit row changed in the store behind the service's back fails palisade audit --verify",
  { skip },
  () => {
    const db = new Database(join(dataDir, "palisade.db"));
    const env = { ...process.env, PALISADE_SERVICE: `unix:${socketPath}` };
    try {
      db.prepare("UPDATE audit_log SET result = 'tampered' WHERE seq = 5").run();

      const broken = spawnSync(process.execPath, [cliMain, "audit", "--verify"], {
        encoding: "utf8",
        timeout: 15_000,
        env,
      });

      assert.equal(broken.status, 1);
      assert.match(broken.stdout, /^Audit log BROKEN at entry 5: entry 5 was changed/m);
    } finally {
      db.close();
    }
  },
);

test("service: SIGTERM stops the service cleanly and removes its socket", { skip }, async () => {
  assert.ok(service);
  await stopService(service, "SIGTERM");
  assert.equal(service.exitCode, 0);
  assert.equal(existsSync(socketPath), false);
  service = undefined;
});
