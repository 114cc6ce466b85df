import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import { guestModulePath, selectModules } from "./kernel-modules.js";
import { ModuleNotFoundError } from "./modules-dep.js";

/** A minimal ELF-64 kernel module: a .shstrtab and a .modinfo section holding `modinfo`. */
function fakeModule(modinfo: string): Buffer {
  const shstrtab = Buffer.from("\0.shstrtab\0.modinfo\0", "latin1");
  const info = Buffer.from(modinfo, "latin1");
  const shoff = 0x40 + shstrtab.length + info.length;
  const file = Buffer.alloc(shoff + 3 * 0x40);
  file.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  file.writeBigUInt64LE(BigInt(shoff), 0x28);
  file.writeUInt16LE(0x40, 0x3a);
  file.writeUInt16LE(3, 0x3c);
  file.writeUInt16LE(1, 0x3e);
  shstrtab.copy(file, 0x40);
  info.copy(file, 0x40 + shstrtab.length);
  const section = (index: number, name: number, offset: number, size: number): void => {
    file.writeUInt32LE(name, shoff + index * 0x40);
    file.writeBigUInt64LE(BigInt(offset), shoff + index * 0x40 + 0x18);
    file.writeBigUInt64LE(BigInt(size), shoff + index * 0x40 + 0x20);
  };
  section(1, 1, 0x40, shstrtab.length);
  section(2, 11, 0x40 + shstrtab.length, info.length);
  return file;
}

const haveXz = spawnSync("xz", ["--version"]).status === 0;
let root: string;
const moduleA = fakeModule("name=mod_a\0depends=mod_b\0");
const moduleB = fakeModule("name=mod_b\0depends=\0");
const moduleC = fakeModule("name=mod_c\0depends=mod_b\0");

before(async () => {
  root = await mkdtemp(join(tmpdir(), "palisade-modules-"));
  await mkdir(join(root, "kernel", "drivers"), { recursive: true });
  await writeFile(join(root, "kernel", "drivers", "mod-a.ko"), moduleA);
  await writeFile(join(root, "kernel", "drivers", "mod_b.ko.gz"), gzipSync(moduleB));
  const xz = spawnSync("xz", ["-c"], { input: moduleC });
  await writeFile(join(root, "kernel", "drivers", "mod_c.ko.xz"), haveXz ? xz.stdout : moduleC);
  await writeFile(join(root, "modules.builtin"), "kernel/fs/ext4/ext4.ko\n");
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

test(
  "kernel-modules: without modules.dep, dependencies come from .modinfo, files are decompressed",
  { skip: !haveXz && "no xz" },
  async () => {
    const selection = await selectModules(root, "6.1.0-test", ["mod_a", "mod_c", "ext4"], true);

    assert.deepEqual(
      selection.loadOrder.map((entry) => entry.name),
      ["mod_b", "mod_a", "mod_c"],
    );
    assert.ok(moduleB.equals(selection.bytes.get("kernel/drivers/mod_b.ko.gz") ?? new Uint8Array(0)));
    assert.ok(moduleC.equals(selection.bytes.get("kernel/drivers/mod_c.ko.xz") ?? new Uint8Array(0)));
    assert.equal(
      guestModulePath("6.1.0-test", "kernel/drivers/mod_c.ko.xz"),
      "/lib/modules/6.1.0-test/kernel/drivers/mod_c.ko",
    );
  },
);

test("kernel-modules: a modules.dep in the tree is used as it stands", async () => {
  const withDep = await mkdtemp(join(tmpdir(), "palisade-modules-dep-"));
  await mkdir(join(withDep, "kernel"));
  await writeFile(join(withDep, "kernel", "x.ko"), fakeModule("depends=\0"));
  await writeFile(join(withDep, "kernel", "y.ko"), fakeModule("depends=\0"));
  // modules.dep says y needs x, whatever .modinfo says.
  await writeFile(join(withDep, "modules.dep"), "kernel/y.ko: kernel/x.ko\nkernel/x.ko:\n");

  const selection = await selectModules(withDep, "6.1.0-test", ["y"], true);

  assert.deepEqual(
    selection.loadOrder.map((entry) => entry.name),
    ["x", "y"],
  );
  await rm(withDep, { recursive: true, force: true });
});

test("kernel-modules: a missing default module is skipped, a missing explicit one is an error", async () => {
  const defaults = await selectModules(root, "6.1.0-test", ["mod_a", "not_here"], false);

  assert.deepEqual(defaults.skipped, ["not_here"]);
  assert.deepEqual(
    defaults.loadOrder.map((entry) => entry.name),
    ["mod_b", "mod_a"],
  );
  await assert.rejects(selectModules(root, "6.1.0-test", ["not_here"], true), ModuleNotFoundError);
  await assert.rejects(
    selectModules(undefined, "6.1.0-test", ["mod_a"], true),
    /has no modules on this host/,
  );
});
