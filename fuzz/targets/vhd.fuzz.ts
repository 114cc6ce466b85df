/**
 * Fuzz target for VHD opening: footer and its copy, dynamic header, parent locators, BAT,
 * sector bitmaps. An input is a fixture selector byte followed by the bytes of the
 * fixture's structure windows; an input shorter than the windows truncates the file.
 *
 * Oracle: only DiskFormatError or DiskError escape; a read-only open never writes.
 */
import { DiskError, DiskFormatError, MemoryFile, VhdImage, type BlockImage } from "../../src/storage/index.js";

const MiB = 1024 * 1024;

interface Fixture {
  readonly bytes: Uint8Array;
  readonly windows: readonly (readonly [number, number])[];
}

let cache: Promise<{ fixtures: Fixture[]; parent: Uint8Array }> | undefined;

async function build(): Promise<{ fixtures: Fixture[]; parent: Uint8Array }> {
  const size = 8 * MiB;
  const dynamicFile = new MemoryFile(undefined, { path: "fuzz.vhd" });
  const dynamic = await VhdImage.create(dynamicFile, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB });
  await dynamic.write(512, new Uint8Array(4096).fill(0x5a));
  await dynamic.write(3 * MiB, new Uint8Array(512).fill(0xa5));
  await dynamic.close();
  const parent = dynamicFile.bytes();
  const end = (bytes: Uint8Array): readonly [number, number] => [bytes.length - 512, 512];
  // Footer copy, dynamic header, BAT; first block's bitmap and data; footer.
  const dynamicWindows = [[0, 2048] as const, [2048, 1024] as const, end(parent)];

  const fixedFile = new MemoryFile(undefined, { path: "fixed.vhd" });
  const fixed = await VhdImage.create(fixedFile, { sizeBytes: 2 * MiB, type: "fixed" });
  await fixed.write(0, new Uint8Array(512).fill(1));
  await fixed.close();
  const fixedBytes = fixedFile.bytes();

  const childFile = new MemoryFile(undefined, { path: "child.vhd" });
  const parentImage = await VhdImage.open(new MemoryFile(parent, { writable: false }), { readonly: true });
  const child = await VhdImage.create(childFile, { sizeBytes: 0, type: "differencing", parent: { image: parentImage, relativePath: "fuzz.vhd", absolutePath: "/fuzz.vhd" } });
  await child.write(4096 + 512, new Uint8Array(1024).fill(0x77));
  await child.close();
  const childBytes = childFile.bytes();
  return {
    parent,
    fixtures: [
      { bytes: parent, windows: dynamicWindows },
      { bytes: fixedBytes, windows: [[0, 512], end(fixedBytes)] },
      { bytes: childBytes, windows: [[0, 4096], end(childBytes)] },
    ],
  };
}

function load(): Promise<{ fixtures: Fixture[]; parent: Uint8Array }> {
  cache ??= build();
  return cache;
}

function compose(f: Fixture, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(f.bytes);
  let cursor = 0;
  for (const [at, length] of f.windows) {
    const take = Math.min(length, data.length - cursor);
    out.set(data.subarray(cursor, cursor + take), at);
    cursor += take;
    if (take < length) return out.subarray(0, at + take);
  }
  return out;
}

export async function seeds(): Promise<Uint8Array[]> {
  const { fixtures } = await load();
  return fixtures.map((f, i) => {
    const parts = f.windows.map(([at, length]) => f.bytes.subarray(at, at + length));
    const out = new Uint8Array(1 + parts.reduce((sum, p) => sum + p.length, 0));
    out[0] = i;
    let cursor = 1;
    for (const p of parts) {
      out.set(p, cursor);
      cursor += p.length;
    }
    return out;
  });
}

export async function fuzz(data: Uint8Array): Promise<void> {
  const { fixtures, parent } = await load();
  const fixture = fixtures[(data[0] ?? 0) % fixtures.length];
  if (fixture === undefined) return;
  const file = new MemoryFile(compose(fixture, data.subarray(1)), { writable: false, path: "fuzz.vhd" });
  const parentFile = new MemoryFile(parent, { writable: false, path: "parent.vhd" });
  let image: BlockImage | undefined;
  try {
    image = await VhdImage.open(file, { readonly: true, openParent: () => VhdImage.open(parentFile, { readonly: true }) });
    const probe = Math.min(image.sizeBytes, 16 * MiB);
    await image.allocation(0, probe);
    await image.read(0, Math.min(probe, MiB));
    await image.read(image.sizeBytes - 512, 512);
  } catch (error: unknown) {
    if (!(error instanceof DiskFormatError || error instanceof DiskError)) throw error;
  } finally {
    await image?.close();
  }
  if (file.writes.length > 0 || parentFile.writes.length > 0) throw new Error(`a read-only open wrote: ${JSON.stringify(file.writes.slice(0, 3))}`);
}
