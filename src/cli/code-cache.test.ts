import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheDirOf, cacheFileFor, readTrustedCache, shouldWriteCache } from "./code-cache.js";

const here = import.meta.dirname;

test("cacheFileFor names the command group and this exact bundle file", () => {
  const stat = { ino: 42, mtimeMs: 1700000000123.7, size: 9000 };
  assert.equal(cacheFileFor("/opt/p/bin/cli.cjs", stat, ["node", "palisade", "run", "--kernel", "k"]), "/opt/p/bin/.v8-cache/run-42-1700000000123700-9000.bin");
  assert.equal(cacheFileFor("/b/cli.cjs", stat, ["node", "palisade", "--version"]), "/b/.v8-cache/other-42-1700000000123700-9000.bin");
  // A word that could not be a group (a path, a traversal) never reaches the file name.
  assert.equal(cacheFileFor("/b/cli.cjs", stat, ["node", "palisade", "../../etc/x"]), "/b/.v8-cache/other-42-1700000000123700-9000.bin");
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

test("shouldWriteCache writes when there was none, or when this run compiled clearly more", () => {
  assert.equal(shouldWriteCache(null, 10), true);
  assert.equal(shouldWriteCache(1000, 1050), false);
  assert.equal(shouldWriteCache(1000, 1200), true);
});

/** Runs a launcher over `bundle` in a fresh Node; returns what it printed. */
function launch(bundle: string): { out: string; status: number | null } {
  const script = `
    const { loadBundle } = await import(${JSON.stringify(join(here, "code-cache.js"))});
    const cli = loadBundle(${JSON.stringify(bundle)}, ["node", "palisade", "run"]);
    const code = await cli.exports.runCli(["node", "palisade", "run"]);
    console.log(cli.cache, code);
    // Long enough that the exit-time cache check runs even when a cache was accepted.
    await new Promise((done) => setTimeout(done, 1100));
  `;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
  return { out: child.stdout.trim(), status: child.status };
}

test("a bundle runs with no cache, leaves one at exit, and the next start uses it; a changed bundle does not", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-bundle-"));
  try {
    const bundle = join(dir, "cli.cjs");
    const body = (n: number): string =>
      `const path = require("node:path"); exports.runCli = async () => (path.basename(__dirname).length > 0 ? ${n} : 0);\n`;
    writeFileSync(bundle, body(7));
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
