/**
 * What the VHD and VHDX fuzz targets (`fuzz/targets/vhd.fuzz.ts`, `vhdx.fuzz.ts`) share:
 * inputs that are the structure windows of real images, and the oracle.
 *
 * An input is a fixture selector byte followed by the bytes of the fixture's structure
 * windows (headers, tables, BAT, log, bitmaps), so mutations land on structures, not on
 * megabytes of payload; an input shorter than the windows truncates the file where it
 * ends. Oracle: opening the result read-only and reading it throws nothing but
 * {@link DiskFormatError} or {@link DiskError}, and never writes to the image or its parent.
 */
import type { BlockImage } from "./block-image.js";
import { DiskError, DiskFormatError } from "./errors.js";
import { MemoryFile } from "./file.js";

/** A real image and the `[offset, length]` windows of it that inputs replace. */
export interface FuzzFixture {
  readonly bytes: Uint8Array;
  readonly windows: readonly (readonly [number, number])[];
}

/** The fixtures, and the image a differencing fixture's parent opener gives. */
export interface FuzzFixtures {
  readonly fixtures: readonly FuzzFixture[];
  readonly parent: Uint8Array;
}

/** Opens `file` read-only as the target's format, its parent (if any) from `parent`. */
export type FuzzOpener = (file: MemoryFile, parent: MemoryFile) => Promise<BlockImage>;

/** The fixture's windows, concatenated: what an input replaces. */
export function extractWindows(f: FuzzFixture): Uint8Array {
  const parts = f.windows.map(([at, length]) => f.bytes.subarray(at, at + length));
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let cursor = 0;
  for (const p of parts) {
    out.set(p, cursor);
    cursor += p.length;
  }
  return out;
}

/** The fixture with `data` laid over its windows in order; truncated where `data` ends. */
export function composeWindows(f: FuzzFixture, data: Uint8Array): Uint8Array {
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

const MiB = 1024 * 1024;

/**
 * A fuzz target (`seeds`, `fuzz`) over images of one format, from fixtures built once.
 * @param name the image's file name in messages ("fuzz.vhdx").
 */
export function imageFuzzTarget(
  name: string,
  build: () => Promise<FuzzFixtures>,
  open: FuzzOpener,
): { seeds: () => Promise<Uint8Array[]>; fuzz: (data: Uint8Array) => Promise<void> } {
  let cache: Promise<FuzzFixtures> | undefined;
  const load = (): Promise<FuzzFixtures> => (cache ??= build());
  return {
    seeds: async (): Promise<Uint8Array[]> => {
      const { fixtures } = await load();
      return fixtures.map((f, i) => {
        const body = extractWindows(f);
        const out = new Uint8Array(body.length + 1);
        out[0] = i;
        out.set(body, 1);
        return out;
      });
    },
    fuzz: async (data: Uint8Array): Promise<void> => {
      const { fixtures, parent } = await load();
      const fixture = fixtures[(data[0] ?? 0) % fixtures.length];
      if (fixture === undefined) return;
      const file = new MemoryFile(composeWindows(fixture, data.subarray(1)), { writable: false, path: name });
      const parentFile = new MemoryFile(parent, { writable: false, path: `parent-${name}` });
      let image: BlockImage | undefined;
      try {
        image = await open(file, parentFile);
        const probe = Math.min(image.sizeBytes, 16 * MiB);
        await image.allocation(0, probe);
        await image.read(0, Math.min(probe, MiB));
        await image.read(image.sizeBytes - 512, 512);
      } catch (error: unknown) {
        if (!(error instanceof DiskFormatError || error instanceof DiskError)) throw error;
      } finally {
        await image?.close();
      }
      if (file.writes.length > 0 || parentFile.writes.length > 0) {
        throw new Error(`a read-only open wrote: ${JSON.stringify([...file.writes, ...parentFile.writes].slice(0, 3))}`);
      }
    },
  };
}
