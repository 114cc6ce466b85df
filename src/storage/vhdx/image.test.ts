import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { MemoryFile } from "../file.js";
import { MiB } from "./format.js";
import { VhdxImage } from "./image.js";
import { DiskError, DiskFormatError } from "../errors.js";

async function newImage(type: "fixed" | "dynamic", sizeBytes = 16 * MiB): Promise<{ file: MemoryFile; image: VhdxImage }> {
  const file = new MemoryFile();
  const image = await VhdxImage.create(file, { sizeBytes, type, blockSizeBytes: MiB });
  return { file, image };
}

test("vhdx image: random writes read back as a plain buffer would hold them (fast-check)", async () => {
  const size = 8 * MiB;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ offset: fc.integer({ min: 0, max: size - 1 }), length: fc.integer({ min: 1, max: 3 * 4096 }), value: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 12 }),
      async (writes) => {
        const { file, image } = await newImage("dynamic", size);
        const model = new Uint8Array(size);
        for (const w of writes) {
          const length = Math.min(w.length, size - w.offset);
          await image.write(w.offset, new Uint8Array(length).fill(w.value));
          model.fill(w.value, w.offset, w.offset + length);
        }
        await image.close();
        const again = await VhdxImage.open(new MemoryFile(file.bytes()), { readonly: true });
        assert.deepEqual(await again.read(0, size), model);
        assert.equal(again.replayedLog, false);
      },
    ),
    { numRuns: 25 },
  );
});

test("vhdx image: a read-only open never writes to the file", async () => {
  const { file, image } = await newImage("dynamic");
  await image.write(MiB, new Uint8Array(4096).fill(9));
  await image.close();
  const readonlyFile = new MemoryFile(file.bytes(), { writable: false });

  const again = await VhdxImage.open(readonlyFile, { readonly: true });
  await again.read(0, 4 * MiB);
  await again.close();

  assert.deepEqual(readonlyFile.writes, []);
});

test("vhdx image: writing a read-only image fails with disk.readonly", async () => {
  const { file, image } = await newImage("dynamic");
  await image.close();
  const again = await VhdxImage.open(new MemoryFile(file.bytes()), { readonly: true });

  await assert.rejects(again.write(0, new Uint8Array(512)), (error: unknown) => error instanceof DiskError && error.code === "disk.readonly");
});

test("vhdx image: a differencing child reads its parent where it was not written", async () => {
  const { image: parent } = await newImage("dynamic");
  await parent.write(0, new Uint8Array(2 * MiB).fill(1));
  const childFile = new MemoryFile();
  const child = await VhdxImage.create(childFile, { sizeBytes: 0, type: "differencing", parent: { image: parent, relativePath: "p.vhdx", absolutePath: "/p.vhdx" } });

  await child.write(4096 + 100, new Uint8Array(10).fill(2));
  const data = await child.read(4096, 512);

  assert.equal(data[99], 1);
  assert.equal(data[100], 2);
  assert.equal(data[110], 1);
  assert.deepEqual(
    (await child.allocation(0, 8192)).map((r) => r.state),
    ["parent", "data", "parent"],
  );
});

test("vhdx image: a discarded block reads zeros and is no longer allocated", async () => {
  const { image } = await newImage("dynamic");
  await image.write(MiB, new Uint8Array(MiB).fill(5));

  await image.discard(MiB, MiB);

  assert.deepEqual(await image.read(MiB, 16), new Uint8Array(16));
  assert.deepEqual(await image.allocation(MiB, MiB), [{ offset: MiB, length: MiB, state: "zero" }]);
});

test("vhdx image: resize grows the disk and keeps the data", async () => {
  const { file, image } = await newImage("dynamic");
  await image.write(0, new Uint8Array(512).fill(3));

  await image.resize(64 * MiB);
  await image.write(60 * MiB, new Uint8Array(512).fill(4));
  await image.close();
  const again = await VhdxImage.open(new MemoryFile(file.bytes()), { readonly: true });

  assert.equal(again.sizeBytes, 64 * MiB);
  assert.equal((await again.read(0, 1))[0], 3);
  assert.equal((await again.read(60 * MiB, 1))[0], 4);
});

test("vhdx image: shrinking over data is refused with disk.bad-size", async () => {
  const { image } = await newImage("dynamic");
  await image.write(15 * MiB, new Uint8Array(512).fill(3));

  await assert.rejects(image.resize(8 * MiB), (error: unknown) => error instanceof DiskError && error.code === "disk.bad-size");
});

test("vhdx image: a file shorter than the header section is refused as truncated", async () => {
  const { file, image } = await newImage("dynamic");
  await image.close();

  await assert.rejects(
    VhdxImage.open(new MemoryFile(file.bytes().subarray(0, 300_000), { writable: false }), { readonly: true }),
    (error: unknown) => error instanceof DiskFormatError && error.code === "vhdx.truncated",
  );
});

test("vhdx image: a virtual size of 1 EiB is refused by the metadata check", async () => {
  const { file, image } = await newImage("dynamic");
  await image.close();
  const bytes = file.bytes();
  // The virtual disk size item is the second item, at 64 KiB + 8 into the metadata region (2 MiB).
  new DataView(bytes.buffer).setBigUint64(2 * MiB + 64 * 1024 + 8, 1n << 60n, true);

  await assert.rejects(VhdxImage.open(new MemoryFile(bytes, { writable: false }), { readonly: true }), /virtual disk size at 0x210008: VirtualDiskSize: 0x1000000000000000 is not/);
});

test("vhdx image: the limits work: 64 TiB with 256 MiB blocks and 4096-byte sectors, written at both ends", async () => {
  const size = 64 * 1024 * 1024 * MiB;
  const file = new MemoryFile();
  const image = await VhdxImage.create(file, { sizeBytes: size, type: "dynamic", blockSizeBytes: 256 * MiB, logicalSectorBytes: 4096 });
  await image.write(0, new Uint8Array(4096).fill(1));
  await image.write(size - 4096, new Uint8Array(4096).fill(2));
  await image.close();

  const again = await VhdxImage.open(new MemoryFile(file.bytes(), { writable: false }), { readonly: true });

  assert.equal(again.sizeBytes, size);
  assert.equal(again.logicalSectorBytes, 4096);
  assert.equal(again.blockSizeBytes, 256 * MiB);
  assert.equal((await again.read(size - 4096, 4096))[4095], 2);
  assert.equal((await again.read(0, 4096))[0], 1);
  const data = (await again.allocation(0, size)).filter((r) => r.state === "data");
  assert.deepEqual(
    data.map((r) => [r.offset, r.length]),
    [
      [0, 256 * MiB],
      [size - 256 * MiB, 256 * MiB],
    ],
  );
});

test("vhdx image: a size past 64 TiB, a 512 KiB or 512 MiB block and a 1000-byte sector are refused at create", async () => {
  const cases = [
    { sizeBytes: 64 * 1024 * 1024 * MiB + 4096, type: "dynamic" as const },
    { sizeBytes: 8 * MiB, type: "dynamic" as const, blockSizeBytes: MiB / 2 },
    { sizeBytes: 8 * MiB, type: "dynamic" as const, blockSizeBytes: 512 * MiB },
    { sizeBytes: 8 * MiB, type: "dynamic" as const, logicalSectorBytes: 1000 },
  ];
  for (const c of cases) {
    await assert.rejects(VhdxImage.create(new MemoryFile(), c), (error: unknown) => error instanceof DiskError && error.code === "disk.bad-size", JSON.stringify(c));
  }
});

test("vhdx image: two new images have different file, data-write and virtual disk GUIDs", async () => {
  const [a, b] = await Promise.all([newImage("dynamic"), newImage("dynamic")]);

  assert.notEqual(a.image.virtualDiskId, b.image.virtualDiskId);
  assert.notDeepEqual(a.image.dataWriteGuid, b.image.dataWriteGuid);
  assert.match(a.image.virtualDiskId, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
});
