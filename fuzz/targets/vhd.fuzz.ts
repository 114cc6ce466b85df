/**
 * Fuzz target for VHD opening: footer and its copy, dynamic header, parent locators, BAT,
 * sector bitmaps. An input is a fixture selector byte followed by the bytes of the
 * fixture's structure windows; an input shorter than the windows truncates the file.
 *
 * Oracle (storage/fuzz-harness.ts): only DiskFormatError or DiskError escape; a
 * read-only open never writes.
 */
import { imageFuzzTarget, MemoryFile, VhdImage, type FuzzFixtures } from "../../src/storage/index.js";

const MiB = 1024 * 1024;

async function build(): Promise<FuzzFixtures> {
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

export const { seeds, fuzz } = imageFuzzTarget("fuzz.vhd", build, (file, parent) =>
  VhdImage.open(file, { readonly: true, openParent: () => VhdImage.open(parent, { readonly: true }) }),
);
