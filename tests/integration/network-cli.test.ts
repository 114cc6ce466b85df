/**
 * `palisade switch …` as a user runs it, inside a network namespace this test creates:
 * every bad input gets a one-line error with a stable code and exit code 2, and the
 * happy path prints what a user needs.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Command } from "commander";
import { registerSwitchCommands } from "../../src/cli/switch-command.js";
import { PalisadeError } from "../../src/util/errors.js";
import { CLI } from "../harness/test-vm.js";

const HOST = `pc${process.pid % 100000}h`;
let stateDir = "";

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(argv: string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(argv[0] ?? "false", argv.slice(1), { timeout: 20_000, encoding: "utf8" }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function palisade(...args: string[]): Promise<Outcome> {
  return run([CLI, "switch", "--state-dir", stateDir, "--netns", HOST, ...args]);
}

/** Runs `palisade switch ARGS` in this process (a spawned CLI costs ~0.5 s) and returns its stdout. */
async function inProcess(...args: string[]): Promise<string> {
  const program = new Command("palisade").exitOverride();
  const chunks: string[] = [];
  registerSwitchCommands(program, { write: (text) => chunks.push(text) });
  await program.parseAsync(["switch", "--state-dir", stateDir, "--netns", HOST, ...args], { from: "user" });
  return chunks.join("");
}

/** Runs `palisade switch ARGS` in this process and expects a PalisadeError. */
async function rejected(args: string[], code: string, message: RegExp): Promise<void> {
  const program = new Command("palisade").exitOverride();
  registerSwitchCommands(program, { write: () => undefined });
  await assert.rejects(program.parseAsync(["switch", "--state-dir", stateDir, "--netns", HOST, ...args], { from: "user" }), (error: unknown) => {
    assert.ok(error instanceof PalisadeError, `${args.join(" ")}: ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  });
}

/** Runs the real `palisade` binary and expects exit code 2 with a one-line message. */
async function refused(args: string[], code: string, message: RegExp): Promise<void> {
  const outcome = await palisade(...args);
  assert.equal(outcome.code, 2, `exit code of ${args.join(" ")}: ${outcome.stderr}`);
  assert.match(outcome.stderr, message);
  assert.ok(outcome.stderr.trimEnd().endsWith(`[${code}]`), outcome.stderr);
  assert.equal(outcome.stderr.trim().split("\n").length, 1, "one line");
}

before(async () => {
  stateDir = mkdtempSync(join(tmpdir(), "palisade-cli-"));
  assert.equal((await run(["ip", "netns", "add", HOST])).code, 0);
  // A management interface (default route) and a spare NIC inside the test namespace.
  for (const command of [
    ["ip", "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt0p"],
    ["ip", "link", "set", "mgmt0", "up"],
    ["ip", "link", "set", "mgmt0p", "up"],
    ["ip", "addr", "add", "192.0.2.10/24", "dev", "mgmt0"],
    ["ip", "route", "add", "default", "via", "192.0.2.1"],
    ["ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare0p"],
  ]) {
    assert.equal((await run(["ip", "netns", "exec", HOST, ...command])).code, 0, command.join(" "));
  }
});

after(async () => {
  await inProcess("delete", "lab").catch(() => undefined);
  await inProcess("delete", "uplinked").catch(() => undefined);
  await run(["ip", "netns", "del", HOST]);
  rmSync(stateDir, { recursive: true, force: true });
});

test("switch CLI: create, list, show, acl add/list/remove, delete", async () => {
  const created = await palisade("create", "lab", "--type", "private", "--default-deny", "--stateful");
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /^Created private switch lab \(bridge palb[0-9a-f]{8}\)$/m);

  const list = await inProcess("list", "--json");
  assert.deepEqual((JSON.parse(list) as { name: string; defaultDeny: boolean; stateful: boolean }[]).map((sw) => [sw.name, sw.defaultDeny, sw.stateful]), [["lab", true, true]]);
  assert.match(await inProcess("show", "lab"), /default deny, acls stateful,/);

  const rule = await inProcess("acl", "add", "lab", "--port", "web:net0", "--direction", "in", "--action", "allow", "--proto", "tcp", "--port-range", "80-443", "--remote", "10.0.0.0/8", "--priority", "500", "--json");
  assert.deepEqual(JSON.parse(rule), { id: 1, port: "web:net0", direction: "in", action: "allow", protocol: "tcp", remote: "10.0.0.0/8", portRange: "80-443", priority: 500 });
  const rules = await palisade("acl", "list", "lab");
  assert.equal(rules.code, 0, rules.stderr);
  assert.match(rules.stdout, /^1 +500 +web:net0 +in +allow +tcp +10\.0\.0\.0\/8 +80-443 +0 +0$/m);
  assert.match(rules.stdout, /^default: deny$/m);

  assert.match(await inProcess("show", "lab"), /default deny/);
  assert.equal(await inProcess("acl", "remove", "lab", "1"), "Removed rule 1 from lab\n");
  assert.equal(await inProcess("flows", "lab"), "No flows\n");
  assert.equal(await inProcess("delete", "lab"), "Deleted switch lab\n");
  assert.equal(await inProcess("list"), "No switches\n");
});

test("switch CLI: an external switch takes a spare NIC, never the management interface", async () => {
  await refused(["create", "bad", "--type", "external", "--uplink", "mgmt0"], "network.bad-uplink", /Uplink "mgmt0" holds the host's default route/);
  await rejected(["create", "bad", "--type", "external", "--uplink", "nosuch0"], "network.bad-uplink", /Uplink "nosuch0" does not exist/);
  await rejected(["create", "bad", "--type", "external", "--uplink", "lo"], "network.bad-uplink", /loopback/);
  await rejected(["create", "bad", "--type", "external"], "network.bad-request", /needs --uplink/);
  await rejected(["create", "bad", "--type", "private", "--uplink", "spare0"], "network.bad-request", /only for external/);
  assert.match(await inProcess("create", "uplinked", "--type", "external", "--uplink", "spare0"), /^Created external switch uplinked/);
  await rejected(["create", "again", "--type", "external", "--uplink", "spare0"], "network.bad-uplink", /already enslaved/);
});

test("switch CLI: every bad input gets a clear one-line error", async () => {
  await inProcess("create", "lab", "--type", "private");

  await refused(["create", "lab", "--type", "private"], "network.duplicate", /Switch "lab" already exists/);
  await rejected(["create", "x", "--type", "hub"], "network.bad-flag", /--type: "hub" is not one of private, internal, external/);
  await rejected(["create", "bad name", "--type", "private"], "network.bad-name", /Switch name "bad name" is not valid/);
  await rejected(["create", "i", "--type", "internal"], "network.bad-request", /needs --subnet/);
  await refused(["create", "i", "--type", "internal", "--subnet", "10.1.2.3/24"], "network.bad-cidr", /has host bits set \(did you mean 10\.1\.2\.0\/24\?\)/);
  await rejected(["create", "i", "--type", "internal", "--subnet", "10.1.2.0/40"], "network.bad-cidr", /above 32/);
  await rejected(["create", "i", "--type", "internal", "--subnet", "banana"], "network.bad-cidr", /not an IPv4 CIDR/);
  await rejected(["create", "i", "--type", "internal", "--subnet", "192.0.2.0/25"], "network.bad-cidr", /overlaps 192\.0\.2\.0\/24 on the host's mgmt0/);
  await rejected(["create", "p", "--type", "private", "--dhcp"], "network.bad-request", /--dhcp needs an internal switch/);
  await refused(["show", "nosuch"], "network.unknown-switch", /Switch "nosuch" does not exist/);
  await rejected(["delete", "nosuch"], "network.unknown-switch", /Switch "nosuch" does not exist/);

  const acl = ["acl", "add", "lab", "--direction", "in", "--action", "deny"];
  await rejected([...acl, "--proto", "tcp", "--port-range", "80-22"], "network.bad-port-range", /--port-range: "80-22"/);
  await rejected([...acl, "--proto", "tcp", "--port-range", "70000"], "network.bad-port-range", /ports 1-65535/);
  await rejected([...acl, "--proto", "icmp", "--port-range", "22"], "network.bad-acl", /--port-range needs --proto tcp or udp/);
  await rejected([...acl, "--proto", "tcp", "--priority", "0"], "network.bad-priority", /--priority: "0" is not an integer from 1 to 65535/);
  await rejected([...acl, "--proto", "tcp", "--priority", "high"], "network.bad-priority", /--priority/);
  await rejected([...acl, "--proto", "tcp", "--remote", "10.0.0.1/8"], "network.bad-cidr", /--remote: .* host bits/);
  await rejected([...acl, "--proto", "gre"], "network.bad-flag", /--proto: "gre"/);
  await rejected([...acl, "--proto", "tcp", "--port", "web"], "network.bad-port", /not a VM port such as web-1:net0/);
  await rejected(["acl", "add", "nosuch", "--direction", "in", "--action", "deny", "--proto", "tcp"], "network.unknown-switch", /Switch "nosuch" does not exist/);
  await rejected(["acl", "remove", "lab", "99"], "network.unknown-acl", /no ACL rule 99/);
  await rejected(["mirror", "lab", "--from", "web:net0", "--to", "db:net0"], "network.unknown-port", /web:net0 has no port on switch "lab"/);
  await rejected(["capture", "lab", "--port", "web:net0", "--out", "/tmp/x.pcap"], "network.unknown-port", /has no port/);
});
