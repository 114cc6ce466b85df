import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import { bzImageRelease } from "./bzimage-version.js";

/** The setup header fields of a bzImage, with the version string at 0x3c0 (like Debian's). */
function fakeBzImage(version: string): Buffer {
  const bytes = Buffer.alloc(0x1000);
  bytes.writeUInt16LE(0xaa55, 0x1fe);
  bytes.write("HdrS", 0x202, "latin1");
  bytes.writeUInt16LE(0x20f, 0x206);
  bytes.writeUInt16LE(0x3c0 - 0x200, 0x20e);
  bytes.write(`${version}\0`, 0x3c0, "latin1");
  return bytes;
}

test("bzimage-version: the release is the first word of the kernel_version string", () => {
  const bytes = fakeBzImage(
    "6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2",
  );

  assert.equal(bzImageRelease(bytes, "vmlinuz"), "6.1.0-56-cloud-amd64");
});

test("bzimage-version: files that are not bzImages are ConfigErrors naming the field", () => {
  const notKernel = fakeBzImage("6.1.0");
  notKernel.writeUInt16LE(0, 0x1fe);

  assert.throws(
    () => bzImageRelease(notKernel, "/tmp/x"),
    /Kernel \/tmp\/x is not a bzImage: boot flag at 0x1fe is 0x0/,
  );
  assert.throws(() => bzImageRelease(Buffer.alloc(16), "/tmp/x"), ConfigError);
  assert.throws(
    () => bzImageRelease(fakeBzImage("6.1.0").subarray(0, 0x3c2), "/tmp/x"),
    /lies outside the setup code/,
  );
  assert.throws(() => bzImageRelease(fakeBzImage("../../etc"), "/tmp/x"), /not a release name/);
});
