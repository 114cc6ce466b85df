import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { MemoryFile } from "../file.js";
import { VhdImage } from "./image.js";

const MiB = 1024 * 1024;

test("vhd image: random writes read back as a plain buffer would hold them (fast-check)", async () => {
  const size = 6 * MiB;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ offset: fc.integer({ min: 0, max: size - 1 }), length: fc.integer({ min: 1, max: 3 * 4096 }), value: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 12 }),
      async (writes) => {
        const file = new MemoryFile();
        const image = await VhdImage.create(file, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB });
        const model = new Uint8Array(size);
        for (const w of writes) {
          const length = Math.min(w.length, size - w.offset);
          await image.write(w.offset, new Uint8Array(length).fill(w.value));
          model.fill(w.value, w.offset, w.offset + length);
        }
        await image.close();
        const again = await VhdImage.open(new MemoryFile(file.bytes(), { writable: false }), { readonly: true });
        assert.deepEqual(await again.read(0, size), model);
      },
    ),
    { numRuns: 25 },
  );
});

test("vhd image: a differencing child reads its parent where it was not written", async () => {
  const parentFile = new MemoryFile();
  const parent = await VhdImage.create(parentFile, { sizeBytes: 4 * MiB, type: "dynamic" });
  await parent.write(0, new Uint8Array(MiB).fill(1));
  const child = await VhdImage.create(new MemoryFile(), { sizeBytes: 0, type: "differencing", parent: { image: parent, relativePath: "p.vhd", absolutePath: "/p.vhd" } });

  await child.write(1024, new Uint8Array(512).fill(2));
  const data = await child.read(512, 2048);

  assert.deepEqual([data[0], data[512], data[1023], data[1024]], [1, 2, 2, 1]);
});

test("vhd image: a lost footer at the end is read from the copy at offset 0, and repaired by a read-write open", async () => {
  const file = new MemoryFile();
  const image = await VhdImage.create(file, { sizeBytes: 4 * MiB, type: "dynamic" });
  await image.write(MiB, new Uint8Array(4096).fill(7));
  await image.close();
  const bytes = file.bytes();
  bytes.fill(0, bytes.length - 512);

  const damaged = await VhdImage.open(new MemoryFile(bytes, { writable: false }), { readonly: true });
  const repairFile = new MemoryFile(bytes);
  await (await VhdImage.open(repairFile, { readonly: false })).close();
  const repaired = await VhdImage.open(new MemoryFile(repairFile.bytes(), { writable: false }), { readonly: true });

  assert.equal(damaged.usedFooterCopy, true);
  assert.equal((await damaged.read(MiB, 1))[0], 7);
  assert.equal(repaired.usedFooterCopy, false);
  assert.equal((await repaired.read(MiB, 1))[0], 7);
});

test("vhd image: new images say creator 'win ' so other tools trust the size field", async () => {
  const image = await VhdImage.create(new MemoryFile(), { sizeBytes: 10 * MiB + 512, type: "fixed" });

  assert.equal(image.creatorApplication, "win ");
  assert.equal(image.sizeBytes, 10 * MiB + 512);
});

test("vhd image: the footer's timestamp is now (seconds since 2000) and its unique id is new each time", async () => {
  const before = Math.floor(Date.now() / 1000) - 946684800;
  const a = await VhdImage.create(new MemoryFile(), { sizeBytes: MiB, type: "dynamic" });
  const b = await VhdImage.create(new MemoryFile(), { sizeBytes: MiB, type: "dynamic" });

  assert.ok(Math.abs(a.timestamp - before) <= 5, `timestamp ${a.timestamp}, expected about ${before}`);
  assert.notEqual(a.identifier, b.identifier);
});
