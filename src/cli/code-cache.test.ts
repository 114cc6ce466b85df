import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheDirOf, cacheFileFor, readTrustedCache } from "./code-cache.js";

const here = import.meta.dirname;
const root = process.geteuid?.() === 0;

test("cacheFileFor names the command and this exact bundle file; informational runs get none", () => {
  const stat = { ino: 42, mtimeMs: 1700000000123.7, ctimeMs: 1700000000456.5, size: 9000 };
  const key = "42-1700000000123700-1700000000456500-9000.bin";
  const file = (...args: string[]): string | null => cacheFileFor("/opt/p/bin/cli.cjs", stat, ["node", "palisade", ...args]);
  assert.equal(file("run", "--kernel", "k", "--name", "web"), `/opt/p/bin/.v8-cache/run-${key}`);
  assert.equal(file("start"), `/opt/p/bin/.v8-cache/start-${key}`);
  assert.equal(file("disk", "convert", "a.raw", "b.vhdx"), `/opt/p/bin/.v8-cache/disk-convert-${key}`);
  assert.equal(file("vm", "list", "--json"), `/opt/p/bin/.v8-cache/vm-list-${key}`);
  // An option's value or an argument is never part of the name.
  assert.equal(file("audit", "--vm", "web"), `/opt/p/bin/.v8-cache/audit-${key}`);
  assert.equal(file("disk", "/tmp/x"), `/opt/p/bin/.v8-cache/disk-${key}`);
  assert.equal(file("run", "extra"), `/opt/p/bin/.v8-cache/run-${key}`);
  for (const informational of [["--version"], ["run", "--help"], ["disk", "-h"], ["run", "--print-cmdline"], ["-V"], [], ["--connect", "x", "vm"]])
    assert.equal(file(...informational), null, informational.join(" "));
  // A word that could not be a command (a path, a traversal) never reaches the file name.
  assert.equal(file("../../etc/x"), null);
  assert.equal(cacheDirOf("/b/cli.cjs"), "/b/.v8-cache");
});

test("readTrustedCache refuses missing, empty, writable-by-others, foreign, linked and special files, and untrusted directories", () => {
  const base = mkdtempSync(join(tmpdir(), "palisade-cache-"));
  const euid = process.geteuid?.() ?? 0;
  try {
    const dir = join(base, ".v8-cache");
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const file = join(dir, "c.bin");
    assert.equal(readTrustedCache(file, euid), null, "missing");
    writeFileSync(file, "");
    assert.equal(readTrustedCache(file, euid), null, "empty");
    writeFileSync(file, "bytes");
    chmodSync(file, 0o644);
    assert.equal(readTrustedCache(file, euid)?.toString(), "bytes");
    chmodSync(file, 0o664);
    assert.equal(readTrustedCache(file, euid), null, "group-writable");
    chmodSync(file, 0o646);
    assert.equal(readTrustedCache(file, euid), null, "world-writable");
    chmodSync(file, 0o644);
    const link = join(dir, "link.bin");
    symlinkSync(file, link);
    assert.equal(readTrustedCache(link, euid), null, "a symlink, even to a good file");
    const fifo = join(dir, "fifo.bin");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    assert.equal(readTrustedCache(fifo, euid), null, "a FIFO, without blocking");
    chmodSync(dir, 0o777);
    assert.equal(readTrustedCache(file, euid), null, "in a world-writable directory");
    chmodSync(dir, 0o755);
    const linkedDir = join(base, "linked");
    symlinkSync(dir, linkedDir);
    assert.equal(readTrustedCache(join(linkedDir, "c.bin"), euid), null, "through a symlinked directory");
    if (root) {
      chownSync(file, 4242, 4242);
      assert.equal(readTrustedCache(file, 0), null, "owned by another user, read as root");
      assert.equal(readTrustedCache(file, 4343), null, "owned by a third user");
      chownSync(file, 0, 0);
      chownSync(dir, 4242, 4242);
      assert.equal(readTrustedCache(file, 0), null, "in a directory another user owns");
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

/** Runs the launcher (`launch`) over `bundle` in a fresh Node; returns what it printed and its exit code. */
function launch(bundle: string): { out: string; err: string; status: number | null } {
  const script = `const { launch } = await import(${JSON.stringify(join(here, "code-cache.js"))}); launch(${JSON.stringify(bundle)}, ["node", "palisade", "run"]);`;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000, env: { ...process.env, PALISADE_DEBUG: "1" } });
  return { out: child.stdout.trim(), err: child.stderr, status: child.status };
}

/** A CommonJS bundle whose runCli prints `text` and resolves to `code` (or never settles). */
function bundleSource(text: string, code: number | "never"): string {
  const body = code === "never" ? "new Promise(() => {})" : `Promise.resolve(${code})`;
  return `const path = require("node:path"); exports.runCli = () => { console.log(${JSON.stringify(text)}, path.basename(__dirname).length > 0); return ${body}; };\n`;
}

test("the launcher: no cache after a failure or an unsettled command; one after the first success, used next time; not for a changed bundle", () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-bundle-"));
  try {
    const bundle = join(dir, "cli.cjs");
    const cacheDir = join(dir, ".v8-cache");
    writeFileSync(bundle, bundleSource("seven", 2));
    let run = launch(bundle);
    assert.deepEqual([run.out, run.status], ["seven true", 2]);
    assert.match(run.err, /code cache none/);
    assert.equal(existsSync(cacheDir), false, "a failed run writes no cache");

    writeFileSync(bundle, bundleSource("hangs", "never"));
    run = launch(bundle);
    assert.deepEqual([run.out, run.status], ["hangs true", 13]);
    assert.match(run.err, /the command stopped before it finished/);
    assert.equal(existsSync(cacheDir), false, "an unsettled run writes no cache");

    writeFileSync(bundle, bundleSource("eight", 0));
    assert.equal(launch(bundle).status, 0);
    assert.equal(readdirSync(cacheDir).length, 1, "one cache, written after the success");
    run = launch(bundle);
    assert.deepEqual([run.out, run.status], ["eight true", 0]);
    assert.match(run.err, /code cache accepted/);

    // Same length, other content: the old bytecode must not run.
    writeFileSync(bundle, bundleSource("nine!", 0));
    assert.equal(statSync(bundle).size, bundleSource("eight", 0).length);
    run = launch(bundle);
    assert.deepEqual([run.out, run.status], ["nine! true", 0]);
    assert.match(run.err, /code cache none/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
