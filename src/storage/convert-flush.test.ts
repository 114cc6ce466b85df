/**
 * convert's durability: by default the new image is flushed (fdatasync) and its directory
 * synced before convertImage resolves; with `flush: false` (`disk convert --no-flush`)
 * neither happens, and the image holds the same bytes. Counted at the FileHandle, the
 * last step before the system call.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { convertImage } from "./operations.js";
import { openImage } from "./open.js";
import type { DiskFormat } from "./block-image.js";

const MiB = 1024 * 1024;
let dir = "";
let source = "";
const expected = new Uint8Array(8 * MiB);

before(() => {
  dir = mkdtempSync(join(tmpdir(), "palisade-convert-flush-"));
  source = join(dir, "source.raw");
  for (let i = 0; i < 2 * MiB; i++) expected[MiB + i] = (i * 31 + (i >> 9)) & 0xff;
  writeFileSync(source, expected);
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `work` while counting FileHandle.sync and FileHandle.datasync calls. */
async function countingSyncs(work: () => Promise<void>): Promise<number> {
  const probe = await open(source, "r");
  const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<void>; datasync: () => Promise<void> };
  await probe.close();
  const { sync, datasync } = proto;
  let calls = 0;
  proto.sync = function (this: unknown) {
    calls++;
    return sync.call(this);
  };
  proto.datasync = function (this: unknown) {
    calls++;
    return datasync.call(this);
  };
  try {
    await work();
  } finally {
    proto.sync = sync;
    proto.datasync = datasync;
  }
  return calls;
}

async function readAll(path: string): Promise<Uint8Array> {
  const image = await openImage(path, { readonly: true });
  try {
    return await image.read(0, image.sizeBytes);
  } finally {
    await image.close();
  }
}

for (const format of ["vhdx", "vhd", "raw"] as const satisfies readonly DiskFormat[]) {
  test(`convert to ${format}: flushed by default, not flushed with flush: false, same bytes`, async () => {
    const flushed = join(dir, `flushed.${format}`);
    const unflushed = join(dir, `unflushed.${format}`);

    const durableSyncs = await countingSyncs(() => convertImage(source, flushed, { format }));
    const unsafeSyncs = await countingSyncs(() => convertImage(source, unflushed, { format, flush: false }));

    assert.ok(
      durableSyncs >= 2,
      `the default convert flushed the image and synced the directory: ${durableSyncs} syncs`,
    );
    assert.equal(unsafeSyncs, 0, "flush: false called fsync or fdatasync");
    assert.ok(
      Buffer.from(await readAll(unflushed)).equals(expected),
      "the unflushed image holds other bytes",
    );
    assert.ok(Buffer.from(await readAll(flushed)).equals(expected), "the flushed image holds other bytes");
  });
}
