import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheDirOf, cacheFileFor, readTrustedCache } from "./code-cache.js";

const here = import.meta.dirname;

test("cacheFileFor names the command and this exact bundle file; informational runs get none", () => {
  const stat = { ino: 42, mtimeMs: 1700000000123.7, size: 9000 };
  const key = "42-1700000000123700-9000.bin";
  const file = (...args: string[]): string | null => cacheFileFor("/opt/p/bin/cli.cjs", stat, ["node", "palisade", ...args]);
  assert.equal(file("run", "--kernel", "k", "--name", "web"), `/opt/p/bin/.v8-cache/run-${key}`);
  assert.equal(file("start"), `/opt/p/bin/.v8-cache/start-${key}`);
  assert.equal(file("disk", "convert", "a.raw", "b.vhdx"), `/opt/p/bin/.v8-cache/disk-convert-${key}`);
  assert.equal(file("vm", "list", "--json"), `/opt/p/bin/.v8-cache/vm-list-${key}`);
  assert.equal(file("disk", "/tmp/x"), `/opt/p/bin/.v8-cache/disk-${key}`);
  for (const informational of [["--version"], ["run", "--help"], ["disk", "-h"], ["run", "--print-cmdline"], ["-V"], []])
    assert.equal(file(...informational), null, informational.join(" "));
  // A word that could not be a command (a path, a traversal) never reaches the file name.
  assert.equal(file("../../etc/x"), null);
  assert.equal(cacheDirOf("/b/cli.cjs"), "/b/.v8-cache");
});

test("readTrustedCache refuses missing, empty, writable-by-others and foreign files", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-cache-"));
  try {
    const file = join(dir, "c.bin");
    assert.equal(readTrustedCache(file, 0), null, "missing");
    writeFileSync(file, "");
    assert.equal(readTrustedCache(file, 0), null, "empty");
    writeFileSync(file, "bytes", { mode: 0o644 });
    chmodSync(file, 0o644);
    assert.equal(readTrustedCache(file, process.geteuid?.() ?? 0)?.toString(), "bytes");
    chmodSync(file, 0o664);
    assert.equal(readTrustedCache(file, process.geteuid?.() ?? 0), null, "group-writable");
    chmodSync(file, 0o646);
    assert.equal(readTrustedCache(file, process.geteuid?.() ?? 0), null, "world-writable");
    chmodSync(file, 0o644);
    if (process.geteuid?.() === 0) {
      chownSync(file, 4242, 4242);
      assert.equal(readTrustedCache(file, 0), null, "owned by another user, read as root");
      assert.equal(readTrustedCache(file, 4242)?.toString(), "bytes", "owned by the reader");
      assert.equal(readTrustedCache(file, 4343), null, "owned by a third user");
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs a launcher over `bundle` in a fresh Node, exiting with `exitCode`; returns what it printed. */
function launch(bundle: string, exitCode = 0): { out: string; status: number | null } {
  const script = `
    const { loadBundle } = await import(${JSON.stringify(join(here, "code-cache.js"))});
    const cli = loadBundle(${JSON.stringify(bundle)}, ["node", "palisade", "run"]);
    const code = await cli.exports.runCli(["node", "palisade", "run"]);
    console.log(cli.cache, code);
    process.exitCode = ${exitCode};
  `;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
  return { out: child.stdout.trim(), status: child.status };
}

test("a bundle runs with no cache, leaves one after its first success, and the next start uses it; a changed bundle does not", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-bundle-"));
  try {
    const bundle = join(dir, "cli.cjs");
    const body = (n: number): string =>
      `const path = require("node:path"); exports.runCli = async () => (path.basename(__dirname).length > 0 ? ${n} : 0);\n`;
    writeFileSync(bundle, body(7));
    assert.deepEqual(launch(bundle, 2), { out: "none 7", status: 2 });
    assert.equal(existsSync(join(dir, ".v8-cache")), false, "a failed run writes no cache");
    assert.deepEqual(launch(bundle), { out: "none 7", status: 0 });
    assert.equal(readdirSync(join(dir, ".v8-cache")).length, 1, "one cache written at exit");
    assert.deepEqual(launch(bundle), { out: "accepted 7", status: 0 });
    // Same length, other content, later mtime: the old bytecode must not run.
    const before = statSync(bundle).mtimeMs;
    writeFileSync(bundle, body(8));
    assert.equal(statSync(bundle).size, body(7).length);
    assert.notEqual(statSync(bundle).mtimeMs, before);
    assert.deepEqual(launch(bundle), { out: "none 8", status: 0 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
