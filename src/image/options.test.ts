import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import {
  DEFAULT_KERNEL_PACKAGE,
  DEFAULT_MODULES,
  parseAddSpec,
  parseImageBuildFlags,
  parseModuleList,
} from "./options.js";

const cwd = "/home/user/work";

test("options: no flags means the cloud kernel package and the default modules", () => {
  const request = parseImageBuildFlags({}, cwd);

  assert.deepEqual(request.kernel, { kind: "package", name: DEFAULT_KERNEL_PACKAGE });
  assert.deepEqual(request.modules, DEFAULT_MODULES);
  assert.deepEqual(request.add, []);
  assert.deepEqual(request.addBinaries, []);
});

test("options: --kernel takes a file relative to the working directory", () => {
  const request = parseImageBuildFlags({ kernel: "vmlinuz" }, cwd);

  assert.deepEqual(request.kernel, { kind: "file", path: "/home/user/work/vmlinuz" });
});

test("options: --kernel with --kernel-package is refused", () => {
  assert.throws(
    () => parseImageBuildFlags({ kernel: "/boot/vmlinuz", kernelPackage: "linux-image-amd64" }, cwd),
    /--kernel and --kernel-package both/,
  );
});

test("options: --kernel-package must be a Debian package name", () => {
  assert.throws(
    () => parseImageBuildFlags({ kernelPackage: "--yes" }, cwd),
    (error: unknown) => error instanceof ConfigError && error.code === "image.bad-package-name",
  );
});

test("options: --modules replaces the defaults; 'default' expands to them; names normalize", () => {
  assert.deepEqual(parseModuleList("virtio-blk, virtio_net"), ["virtio_blk", "virtio_net"]);
  assert.deepEqual(parseModuleList("default,xfs"), [...DEFAULT_MODULES, "xfs"]);
  assert.deepEqual(parseModuleList(""), []);
  assert.throws(
    () => parseModuleList("virtio_blk,../../etc/passwd"),
    /--modules: "\.\.\/\.\.\/etc\/passwd" is not a kernel module name/,
  );
});

test("options: --add splits at the last colon before an absolute guest path", () => {
  assert.deepEqual(parseAddSpec("./job.fio:/root/job.fio", cwd), {
    hostPath: "/home/user/work/job.fio",
    guestPath: "/root/job.fio",
  });
  assert.deepEqual(parseAddSpec("/data/a:b:/srv/x/", cwd), { hostPath: "/data/a:b", guestPath: "/srv/x" });
  assert.deepEqual(parseAddSpec("tools:/opt/../usr/local/bin", cwd), {
    hostPath: "/home/user/work/tools",
    guestPath: "/usr/local/bin",
  });
});

test("options: malformed --add values are ConfigErrors quoting them", () => {
  for (const bad of ["justonepath", "host:relative/guest", ":/guest", "host:/", "host://"]) {
    assert.throws(
      () => parseAddSpec(bad, cwd),
      (error: unknown) =>
        error instanceof ConfigError && error.code === "image.bad-add" && error.message.includes(`"${bad}"`),
      bad,
    );
  }
});

test("options: --add cannot replace /init or land in the file systems /init mounts", () => {
  assert.throws(() => parseAddSpec("my-init:/init", cwd), /\/init belongs to the image's \/init/);
  assert.throws(() => parseAddSpec("x:/proc/cmdline", cwd), /\/proc belongs/);
  assert.throws(() => parseAddSpec("x:/etc/palisade/modules", cwd), /\/etc\/palisade belongs/);
  assert.doesNotThrow(() => parseAddSpec("x:/initrd-notes", cwd));
});

test("options: --add-binary paths become absolute; an empty one is refused", () => {
  assert.deepEqual(parseImageBuildFlags({ addBinary: ["bin/fio", "/usr/bin/ls"] }, cwd).addBinaries, [
    "/home/user/work/bin/fio",
    "/usr/bin/ls",
  ]);
  assert.throws(() => parseImageBuildFlags({ addBinary: [""] }, cwd), ConfigError);
});
