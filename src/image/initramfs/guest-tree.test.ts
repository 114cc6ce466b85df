import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../../util/errors.js";
import { GuestTree } from "./guest-tree.js";

test("guest-tree: parents are created and come before their children", () => {
  const tree = new GuestTree();
  tree.file("/usr/bin/fio", { hostPath: "/usr/bin/fio" }, 0o755);
  tree.symlink("/bin/sh", "/bin/busybox");
  tree.directory("/usr-local", 0o700);

  assert.deepEqual(
    tree.entries().map((entry) => entry.path),
    ["/bin", "/bin/sh", "/usr", "/usr-local", "/usr/bin", "/usr/bin/fio"],
  );
});

test("guest-tree: a later file replaces a symlink at the same path", () => {
  const tree = new GuestTree();
  tree.symlink("/usr/bin/wget", "/bin/busybox");
  tree.file("/usr/bin/wget", { bytes: new Uint8Array([1]) }, 0o755);

  assert.equal(tree.get("/usr/bin/wget")?.kind, "file");
});

test("guest-tree: files over directories and paths under files are refused", () => {
  const tree = new GuestTree();
  tree.directory("/etc");
  tree.file("/etc/hosts", { bytes: new Uint8Array(0) });

  assert.throws(() => {
    tree.file("/etc", { bytes: new Uint8Array(0) });
  }, /Guest path \/etc is a directory/);
  assert.throws(() => {
    tree.file("/etc/hosts/x", { bytes: new Uint8Array(0) });
  }, /\/etc\/hosts is a file/);
  assert.throws(() => {
    tree.directory("/../x");
  }, ConfigError);
  assert.throws(() => {
    tree.directory("relative");
  }, ConfigError);
});
