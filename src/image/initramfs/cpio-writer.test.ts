import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import type { CpioEntry } from "./cpio-format.js";
import { CpioFormatError, readCpioArchive } from "./cpio-reader.js";
import { CpioEncodeError, cpioArchive } from "./cpio-writer.js";

const sample: CpioEntry[] = [
  { kind: "directory", path: "bin", mode: 0o755 },
  { kind: "file", path: "bin/busybox", mode: 0o755, data: new TextEncoder().encode("not really busybox\n") },
  { kind: "symlink", path: "bin/sh", target: "/bin/busybox" },
  { kind: "directory", path: "dev", mode: 0o755 },
  { kind: "char-device", path: "dev/console", mode: 0o600, major: 5, minor: 1 },
  { kind: "file", path: "empty", mode: 0o644, data: new Uint8Array(0) },
];

function archive(entries: CpioEntry[]): Buffer {
  return Buffer.concat([...cpioArchive(entries)]);
}

test("cpio-writer: an archive reads back as the same entries, owned by root, mtime 0", () => {
  const bytes = archive(sample);

  const read = readCpioArchive(bytes);

  assert.deepEqual(
    read.map((member) => member.entry),
    sample,
  );
  assert.deepEqual(
    read.map((member) => [member.ino, member.uid, member.gid, member.mtime]),
    sample.map((_, index) => [index + 1, 0, 0, 0]),
  );
});

test("cpio-writer: header and data are 4-byte aligned and the archive ends with the trailer", () => {
  // "bin/busybox" data is 19 bytes: 1 byte of padding follows it.
  const bytes = archive(sample);

  assert.equal(bytes.length % 4, 0);
  const text = bytes.toString("latin1");
  let at = text.indexOf("070701");
  while (at !== -1) {
    assert.equal(at % 4, 0, `header at ${at} is not aligned`);
    at = text.indexOf("070701", at + 1);
  }
  assert.ok(text.includes("TRAILER!!!\0"));
});

test("cpio-writer: the same entries always give the same bytes", () => {
  assert.deepEqual(archive(sample), archive(sample));
});

test(
  "cpio-writer: busybox cpio lists what the writer wrote",
  { skip: !existsSync("/bin/busybox") && "no /bin/busybox" },
  () => {
    const listed = spawnSync("/bin/busybox", ["cpio", "-t"], { input: archive(sample), encoding: "utf8" });

    assert.equal(listed.status, 0, listed.stderr);
    assert.deepEqual(
      listed.stdout.trim().split("\n"),
      sample.map((entry) => entry.path),
    );
  },
);

test("cpio-writer: paths escaping the archive or a file over 4 GiB are refused", () => {
  assert.throws(() => archive([{ kind: "directory", path: "../etc", mode: 0o755 }]), CpioEncodeError);
  assert.throws(() => archive([{ kind: "directory", path: "a//b", mode: 0o755 }]), CpioEncodeError);
  assert.throws(() => archive([{ kind: "directory", path: "/", mode: 0o755 }]), CpioEncodeError);
  assert.throws(
    () => archive([{ kind: "file", path: "x", mode: 0o10000, data: new Uint8Array(0) }]),
    CpioEncodeError,
  );
  assert.throws(
    () => archive([{ kind: "char-device", path: "d", mode: 0o600, major: -1, minor: 0 }]),
    CpioEncodeError,
  );
});

test("cpio-writer: a leading slash is dropped from member names", () => {
  const read = readCpioArchive(archive([{ kind: "directory", path: "/etc", mode: 0o755 }]));

  assert.equal(read[0]?.entry.path, "etc");
});

test("cpio-reader: truncated or corrupt archives raise CpioFormatError naming the field", () => {
  const bytes = archive(sample);

  assert.throws(() => readCpioArchive(bytes.subarray(0, bytes.length - 120)), CpioFormatError);
  assert.throws(() => readCpioArchive(bytes.subarray(0, 50)), CpioFormatError);
  const badMagic = Buffer.from(bytes);
  badMagic.write("070707", 0, "latin1");
  assert.throws(
    () => readCpioArchive(badMagic),
    (error: unknown) => error instanceof CpioFormatError && error.field === "magic",
  );
  const badSize = Buffer.from(bytes);
  badSize.write("zzzzzzzz", 6 + 6 * 8, "latin1");
  assert.throws(
    () => readCpioArchive(badSize),
    (error: unknown) => error instanceof CpioFormatError && error.field === "filesize",
  );
});

const pathPart = fc.stringMatching(/^[a-z0-9_.-]{1,12}$/).filter((part) => part !== "." && part !== "..");

test("cpio-writer: any files with any contents round-trip (property)", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(
        fc.record({
          name: pathPart,
          data: fc.uint8Array({ maxLength: 64 }),
          mode: fc.integer({ min: 0, max: 0o7777 }),
        }),
        {
          selector: (file) => file.name,
          maxLength: 8,
        },
      ),
      (files) => {
        const entries: CpioEntry[] = files.map((file) => ({
          kind: "file",
          path: file.name,
          mode: file.mode,
          data: file.data,
        }));

        const read = readCpioArchive(archive(entries)).map((member) => member.entry);

        assert.deepEqual(read, entries);
      },
    ),
  );
});
