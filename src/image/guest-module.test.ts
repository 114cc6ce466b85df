import { test } from "node:test";
import assert from "node:assert/strict";
import { headerPackages, moduleDigest, relocateHeadersMakefile } from "./guest-module.js";

test("headerPackages: a Debian cloud kernel's headers, common headers and kbuild, pinned to its version", () => {
  const packages = headerPackages("6.1.0-56-cloud-amd64", "6.1.192-2");
  assert.deepEqual(packages.pinned, [
    "linux-headers-6.1.0-56-cloud-amd64=6.1.192-2",
    "linux-headers-6.1.0-56-common=6.1.192-2",
    "linux-kbuild-6.1=6.1.192-2",
  ]);
});

test("headerPackages: a release or version apt could read as an option is refused", () => {
  assert.throws(() => headerPackages("-o Dir=/tmp", "6.1.192-2"), { code: "image.bad-kernel-release" });
  assert.throws(() => headerPackages("6.1.0-56-cloud-amd64", "-oAPT::x"), { code: "image.bad-kernel-release" });
  assert.throws(() => headerPackages("6.1.0", "6.1.192-2"), { code: "image.bad-kernel-release" });
});

test("relocateHeadersMakefile: the common headers' include points into the unpacked tree", () => {
  assert.equal(
    relocateHeadersMakefile("include /usr/src/linux-headers-6.1.0-56-common/Makefile\n", "/c/tree"),
    "include /c/tree/usr/src/linux-headers-6.1.0-56-common/Makefile\n",
  );
});

test("moduleDigest: changes with a source byte, the kernel or the compiler, not with file order", () => {
  const a = { name: "a.c", bytes: Buffer.from("int a;") };
  const k = { name: "Kbuild", bytes: Buffer.from("obj-m := a.o") };
  const base = moduleDigest([a, k], "6.1.0-56-cloud-amd64", "6.1.192-2", "gcc 12");
  assert.equal(moduleDigest([k, a], "6.1.0-56-cloud-amd64", "6.1.192-2", "gcc 12"), base);
  assert.notEqual(moduleDigest([{ ...a, bytes: Buffer.from("int b;") }, k], "6.1.0-56-cloud-amd64", "6.1.192-2", "gcc 12"), base);
  assert.notEqual(moduleDigest([a, k], "6.1.0-57-cloud-amd64", "6.1.192-2", "gcc 12"), base);
  assert.notEqual(moduleDigest([a, k], "6.1.0-56-cloud-amd64", "6.1.192-2", "gcc 13"), base);
});
