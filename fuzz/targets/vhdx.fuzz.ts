/**
 * Fuzz target for VHDX opening: headers, region tables, metadata, parent locator, BAT,
 * sector bitmaps and log replay. An input is a fixture selector byte followed by the
 * bytes of the fixture's structure windows (file identifier, both headers, both region
 * tables, metadata table and items, BAT, log, first sector bitmap): mutations land on
 * structures, not on megabytes of payload. An input shorter than the windows truncates
 * the file where it ends.
 *
 * Oracle: only DiskFormatError or DiskError escape; a read-only open never writes (the
 * file refuses writes and records them); reads after a successful open stay in range.
 */
import { DiskError, DiskFormatError, MemoryFile, VhdxImage, type BlockImage } from "../../src/storage/index.js";

const MiB = 1024 * 1024;

interface Fixture {
  readonly bytes: Uint8Array;
  readonly windows: readonly (readonly [number, number])[];
}

const LAYOUT_WINDOWS: readonly (readonly [number, number])[] = [
  [0, 512], // file identifier
  [64 * 1024, 4096], // header 1
  [128 * 1024, 4096], // header 2
  [192 * 1024, 4096], // region table 1 (entries; the rest is zeros under the checksum)
  [256 * 1024, 4096], // region table 2
  [1 * MiB, 12 * 1024], // log: first entry
  [2 * MiB, 4096], // metadata table
  [2 * MiB + 64 * 1024, 4096], // metadata items
  [3 * MiB, 4096], // BAT
];

let cache: Promise<{ fixtures: Fixture[]; parent: Uint8Array }> | undefined;

async function build(): Promise<{ fixtures: Fixture[]; parent: Uint8Array }> {
  const size = 8 * MiB;
  const dynamicFile = new MemoryFile(undefined, { path: "fuzz.vhdx" });
  const dynamic = await VhdxImage.create(dynamicFile, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB });
  await dynamic.write(512, new Uint8Array(4096).fill(0x5a));
  await dynamic.write(3 * MiB, new Uint8Array(512).fill(0xa5));
  await dynamic.close();
  const parent = dynamicFile.bytes();

  // A dirty image: an open writer's session, the log holding its last entry.
  const dirtyFile = new MemoryFile(parent);
  const dirty = await VhdxImage.open(dirtyFile, { readonly: false });
  await dirty.write(5 * MiB, new Uint8Array(4096).fill(0x33));
  await dirty.flush(); // not closed: LogGuid stays set, the entry stays in the log

  const childFile = new MemoryFile(undefined, { path: "child.vhdx" });
  const parentImage = await VhdxImage.open(new MemoryFile(parent, { writable: false }), { readonly: true });
  const child = await VhdxImage.create(childFile, { sizeBytes: 0, type: "differencing", parent: { image: parentImage, relativePath: "fuzz.vhdx", absolutePath: "/fuzz.vhdx" } });
  await child.write(4096 + 512, new Uint8Array(1024).fill(0x77));
  await child.close();
  const childBytes = childFile.bytes();
  // The child's sector bitmap block and payload follow its BAT: include the bitmap's first sector.
  const childWindows = [...LAYOUT_WINDOWS, [childBytes.length - 2 * MiB, 4096] as const, [childBytes.length - MiB, 4096] as const];
  return {
    parent,
    fixtures: [
      { bytes: parent, windows: LAYOUT_WINDOWS },
      { bytes: dirtyFile.bytes(), windows: LAYOUT_WINDOWS },
      { bytes: childBytes, windows: childWindows },
    ],
  };
}

function load(): Promise<{ fixtures: Fixture[]; parent: Uint8Array }> {
  cache ??= build();
  return cache;
}

function extract(f: Fixture): Uint8Array {
  const parts = f.windows.map(([at, length]) => f.bytes.subarray(at, at + length));
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let cursor = 0;
  for (const p of parts) {
    out.set(p, cursor);
    cursor += p.length;
  }
  return out;
}

/** The fixture with the input's windows laid over it; truncated where the input ends. */
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
    const body = extract(f);
    const out = new Uint8Array(body.length + 1);
    out[0] = i;
    out.set(body, 1);
    return out;
  });
}

export const budgetMs = 3000;

export async function fuzz(data: Uint8Array): Promise<void> {
  const { fixtures, parent } = await load();
  const fixture = fixtures[(data[0] ?? 0) % fixtures.length];
  if (fixture === undefined) return;
  const file = new MemoryFile(compose(fixture, data.subarray(1)), { writable: false, path: "fuzz.vhdx" });
  const parentFile = new MemoryFile(parent, { writable: false, path: "parent.vhdx" });
  let image: BlockImage | undefined;
  try {
    image = await VhdxImage.open(file, { readonly: true, openParent: () => VhdxImage.open(parentFile, { readonly: true }) });
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
