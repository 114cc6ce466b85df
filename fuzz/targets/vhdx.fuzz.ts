/**
 * Fuzz target for VHDX opening: headers, region tables, metadata, parent locator, BAT,
 * sector bitmaps and log replay. An input is a fixture selector byte followed by the
 * bytes of the fixture's structure windows (file identifier, both headers, both region
 * tables, metadata table and items, BAT, log, first sector bitmap): mutations land on
 * structures, not on megabytes of payload. An input shorter than the windows truncates
 * the file where it ends.
 *
 * Oracle (storage/fuzz-harness.ts): only DiskFormatError or DiskError escape; a
 * read-only open never writes (the file refuses writes and records them); reads after a
 * successful open stay in range.
 */
import { imageFuzzTarget, MemoryFile, VhdxImage, type FuzzFixtures } from "../../src/storage/index.js";

const MiB = 1024 * 1024;

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

async function build(): Promise<FuzzFixtures> {
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

export const budgetMs = 3000;

export const { seeds, fuzz } = imageFuzzTarget("fuzz.vhdx", build, (file, parent) =>
  VhdxImage.open(file, { readonly: true, openParent: () => VhdxImage.open(parent, { readonly: true }) }),
);
