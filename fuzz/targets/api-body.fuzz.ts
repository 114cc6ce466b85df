/**
 * Fuzzes the management API's request handling end to end in process: fastify's body
 * parsing, the zod schemas, the handlers and the SQLite store, for every route that takes
 * a body, as root and as an unprivileged user. The first input byte picks the route and
 * the caller, the rest is the raw body.
 *
 * Oracle: every answer is a documented status (never 500), error answers carry
 * `{ error: { code, message } }`, a 400 names the field, and the audit chain stays intact.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { Principal } from "../../src/authz/index.js";
import { buildApp, dataDirPaths, ServiceCore, unavailableRuntime } from "../../src/service/index.js";

const ROUTES: readonly [string, string][] = [
  ["POST", "/v1/vms"],
  ["PATCH", "/v1/vms/fuzz-1"],
  ["POST", "/v1/authz/scopes"],
  ["POST", "/v1/authz/tasks"],
  ["POST", "/v1/authz/roles"],
  ["POST", "/v1/authz/assignments"],
  ["POST", "/v1/authz/check"],
  ["DELETE", "/v1/vms/fuzz-2"],
];
const ROOT: Principal = { uid: 0, user: "root", groups: ["root"] };
const USER: Principal = { uid: 4321, user: "fuzzer", groups: ["fuzzers"] };
const DOCUMENTED = new Set([200, 201, 400, 403, 404, 409, 413, 415, 501]);

let harness: { app: FastifyInstance; core: ServiceCore; caller: Principal } | undefined;

async function setUp(): Promise<{ app: FastifyInstance; core: ServiceCore; caller: Principal }> {
  if (harness !== undefined) return harness;
  const dir = mkdtempSync(join(tmpdir(), "palisade-fuzz-api-"));
  process.once("exit", () => {
    rmSync(dir, { recursive: true, force: true });
  });
  const core = new ServiceCore({ paths: dataDirPaths(dir), runtime: unavailableRuntime, authorize: true });
  const state = { app: undefined as unknown as FastifyInstance, core, caller: ROOT };
  state.app = buildApp(core, { identify: () => state.caller });
  await state.app.ready();
  const inject = (method: "POST", url: string, body: unknown) =>
    state.app.inject({ method, url, payload: body as object });
  await inject("POST", "/v1/authz/scopes", { name: "web" });
  await inject("POST", "/v1/vms", { name: "fuzz-1", kernel: "/k", scope: "web" });
  await inject("POST", "/v1/authz/assignments", { role: "Operator", scope: "web", group: "fuzzers" });
  harness = state;
  return state;
}

const encode = (route: number, body: string): Uint8Array => new Uint8Array([route, ...Buffer.from(body)]);

/** Valid bodies of every route, to mutate. */
export function seeds(): Uint8Array[] {
  return [
    encode(
      0,
      JSON.stringify({
        name: "a1",
        kernel: "/boot/vmlinuz",
        memoryMiB: 256,
        vcpus: 2,
        disks: [{ path: "/d.raw", format: "raw" }],
        scope: "web",
      }),
    ),
    encode(
      0,
      JSON.stringify({
        name: "a2",
        kernel: "/boot/vmlinuz",
        autostart: true,
        autostartDelaySeconds: 30,
        restartPolicy: { mode: "on-failure", maxRetries: 5, backoffSeconds: 0.5 },
      }),
    ),
    encode(1, JSON.stringify({ memoryMiB: 1024, append: null, ifGeneration: 1 })),
    encode(1, JSON.stringify({ restartPolicy: { mode: "never" }, autostartDelaySeconds: null })),
    encode(2, JSON.stringify({ name: "db", description: "databases" })),
    encode(3, JSON.stringify({ name: "peek", operations: ["vm.console-read"] })),
    encode(4, JSON.stringify({ name: "Peeker", tasks: ["peek"], operations: ["vm.view-config"] })),
    encode(5, JSON.stringify({ role: "Viewer", user: "alice", scope: "web" })),
    encode(6, JSON.stringify({ operation: "vm.start", vm: "fuzz-1" })),
    encode(0x87, "{}"),
  ];
}

/** Sends one fuzzed request and checks the answer. */
export async function fuzz(data: Uint8Array): Promise<void> {
  const h = await setUp();
  const selector = data[0] ?? 0;
  const [method, url] = ROUTES[selector % ROUTES.length] ?? ["POST", "/v1/vms"];
  h.caller = (selector & 0x80) === 0 ? ROOT : USER;
  const answer = await h.app.inject({
    method: method as "POST",
    url,
    headers: { "content-type": "application/json" },
    payload: Buffer.from(data.subarray(1)),
  });
  if (!DOCUMENTED.has(answer.statusCode)) {
    throw new Error(`${method} ${url} answered ${answer.statusCode}: ${answer.body.slice(0, 300)}`);
  }
  if (answer.statusCode >= 400) {
    const body = JSON.parse(answer.body) as {
      error?: { code?: unknown; message?: unknown; field?: unknown };
    };
    if (typeof body.error?.code !== "string" || typeof body.error.message !== "string") {
      throw new Error(
        `${method} ${url}: error answer without code and message: ${answer.body.slice(0, 300)}`,
      );
    }
    if (
      answer.statusCode === 400 &&
      body.error.code === "api.invalid" &&
      typeof body.error.field !== "string"
    ) {
      throw new Error(`${method} ${url}: 400 without a field: ${answer.body.slice(0, 300)}`);
    }
  }
  if (data.length % 64 === 0) {
    const verdict = h.core.audit.verify();
    if (!verdict.ok) throw new Error(`audit chain broken: ${verdict.problem}`);
  }
}
