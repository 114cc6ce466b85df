import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { elfNote, pvhElf } from "../engine/test-fixtures.js";
import { extractPvhVmlinux, payloadCompression, payloadRange } from "./vmlinux.js";

/** A bzImage whose setup header (protocol `protocol`) points at `payload` after 4+1 sectors. */
function bzImage(payload: Uint8Array, protocol = 0x20f): Uint8Array {
  const offsetInProtected = 0x100;
  const bytes = new Uint8Array(5 * 512 + offsetInProtected + payload.length + 4);
  const view = new DataView(bytes.buffer);
  bytes[0x1f1] = 4;
  view.setUint16(0x1fe, 0xaa55, true);
  bytes.set(new TextEncoder().encode("HdrS"), 0x202);
  view.setUint16(0x206, protocol, true);
  view.setUint32(0x248, offsetInProtected, true);
  view.setUint32(0x24c, payload.length, true);
  bytes.set(payload, 5 * 512 + offsetInProtected);
  return bytes;
}

test("vmlinux: the payload's place comes from the setup header; old protocols and short headers are refused", () => {
  assert.deepEqual(payloadRange(bzImage(new Uint8Array(10))), { offset: 5 * 512 + 0x100, length: 10 });
  assert.match(JSON.stringify(payloadRange(bzImage(new Uint8Array(10), 0x207))), /2\.08/);
  assert.match(JSON.stringify(payloadRange(new Uint8Array(100))), /only 100 bytes/);
});

test("vmlinux: compressions are told by their magic", () => {
  assert.equal(payloadCompression(gzipSync(Buffer.from("x")))?.name, "gzip");
  assert.equal(payloadCompression(new Uint8Array([0x02, 0x21, 0x4c, 0x18, 0]))?.name, "lz4");
  assert.equal(
    payloadCompression(new Uint8Array([0x42, 0x5a, 0x68]))?.name,
    undefined,
    "bzip2 is not unpacked",
  );
});

test("vmlinux: a gzip bzImage yields its PVH vmlinux; one without the PVH note yields the reason and no file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "palisade-vmlinux-"));
  try {
    const elf = pvhElf(elfNote("Xen", 18, new Uint8Array(8)));
    await writeFile(join(dir, "pvh.bz"), bzImage(gzipSync(elf)));
    assert.equal(await extractPvhVmlinux(join(dir, "pvh.bz"), join(dir, "pvh.elf")), true);
    assert.deepEqual(new Uint8Array(await readFile(join(dir, "pvh.elf"))), elf);

    await writeFile(join(dir, "plain.bz"), bzImage(gzipSync(pvhElf(elfNote("GNU", 3, new Uint8Array(20))))));
    assert.match(
      String(await extractPvhVmlinux(join(dir, "plain.bz"), join(dir, "plain.elf"))),
      /no PVH entry point/,
    );
    await assert.rejects(readFile(join(dir, "plain.elf")), { code: "ENOENT" });

    await writeFile(join(dir, "broken.bz"), bzImage(new Uint8Array([0x1f, 0x8b, 1, 2, 3])));
    await assert.rejects(
      extractPvhVmlinux(join(dir, "broken.bz"), join(dir, "broken.elf")),
      /gzip payload does not inflate/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
