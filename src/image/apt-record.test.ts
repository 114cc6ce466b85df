import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import {
  aptPackageOf,
  checkPackageName,
  debFileName,
  kernelPackageBehind,
  parseAptRecord,
  parseDependsField,
} from "./apt-record.js";

// `apt-cache show --no-all-versions linux-image-cloud-amd64` on Debian 12 (trimmed).
const METAPACKAGE = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description-en: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel and modules for use on
 cloud platforms.
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.192-2_amd64.deb
Size: 1500
SHA256: 0bbf8cd8a1f0f0d5d46f7b4e5f7fa2e6b0d1e47c1f8e53f3b0bcff4a7b67e8a1

`;
const KERNEL = `Package: linux-image-6.1.0-56-cloud-amd64
Version: 6.1.192-2
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb
Size: 26713492
SHA256: E7D02B943971EDCB8790E256C02CFAB3BCA6C3D37C1BF25392A57C71300615EE
`;

test("apt-record: a metapackage leads to the versioned kernel package it depends on", () => {
  const meta = aptPackageOf(parseAptRecord(METAPACKAGE));

  assert.equal(kernelPackageBehind(meta), "linux-image-6.1.0-56-cloud-amd64");
});

test("apt-record: a versioned kernel package stands for itself, with size and lower-case sha256", () => {
  const kernel = aptPackageOf(parseAptRecord(KERNEL));

  assert.equal(kernelPackageBehind(kernel), undefined);
  assert.equal(kernel.sizeBytes, 26713492);
  assert.equal(kernel.sha256, "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee");
  assert.equal(debFileName(kernel), "linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb");
});

test("apt-record: continuation lines join their field; only the first stanza counts", () => {
  const record = parseAptRecord(`${METAPACKAGE}Package: other\n`);

  assert.equal(record.get("Package"), "linux-image-cloud-amd64");
  assert.match(record.get("Description-en") ?? "", /meta-package\)\nThis package/);
});

test("apt-record: dependencies drop versions and architectures, keep alternatives", () => {
  assert.deepEqual(
    parseDependsField(
      "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.1) | linux-initramfs-tool, libc6:any",
    ),
    [["kmod"], ["linux-base"], ["initramfs-tools", "linux-initramfs-tool"], ["libc6"]],
  );
});

test("apt-record: missing or malformed fields are ConfigErrors naming the field", () => {
  assert.throws(
    () => aptPackageOf(parseAptRecord("Package: x\nVersion: 1\n")),
    /package x has no Size field/,
  );
  assert.throws(
    () => aptPackageOf(parseAptRecord(KERNEL.replace("Size: 26713492", "Size: lots"))),
    ConfigError,
  );
  assert.throws(
    () => debFileName({ ...aptPackageOf(parseAptRecord(KERNEL)), filename: "pool/../../etc/passwd" }),
    ConfigError,
  );
});

test("apt-record: package names that are not Debian names (or look like options) are refused", () => {
  assert.equal(checkPackageName("linux-image-cloud-amd64", "--kernel-package"), "linux-image-cloud-amd64");
  assert.throws(
    () => checkPackageName("-oAPT::foo=1", "--kernel-package"),
    /--kernel-package: "-oAPT::foo=1" is not a Debian package name/,
  );
  assert.throws(() => checkPackageName("Linux", "--kernel-package"), ConfigError);
  assert.throws(() => checkPackageName("a", "--kernel-package"), ConfigError);
});
