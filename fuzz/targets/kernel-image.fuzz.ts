/**
 * Kernel files given to `palisade run --kernel`: the bzImage setup header and the ELF
 * vmlinux program headers and notes. Only ConfigError may escape.
 */
import { hasPvhEntryNote, parseBzImageHeader, parseElfLayout } from "../../src/engine/kernel-image.js";
import { elfNote, pvhElf } from "../../src/engine/test-fixtures.js";
import { ConfigError } from "../../src/util/errors.js";

export function seeds(): Uint8Array[] {
  const bz = new Uint8Array(0x210);
  const view = new DataView(bz.buffer);
  view.setUint16(0x1fe, 0xaa55, true);
  bz.set(new TextEncoder().encode("HdrS"), 0x202);
  view.setUint16(0x206, 0x20f, true);
  const notes = new Uint8Array([
    ...elfNote("GNU", 3, new Uint8Array(20)),
    ...elfNote("Xen", 18, new Uint8Array(8)),
  ]);
  return [bz, pvhElf(notes)];
}

export function fuzz(data: Uint8Array): void {
  try {
    parseBzImageHeader(data, "/fuzz");
  } catch (error: unknown) {
    if (!(error instanceof ConfigError)) throw error;
  }
  try {
    for (const segment of parseElfLayout(data, "/fuzz").noteSegments) {
      hasPvhEntryNote(
        data.subarray(
          Math.min(segment.offset, data.length),
          Math.min(segment.offset + segment.size, data.length),
        ),
      );
    }
  } catch (error: unknown) {
    if (!(error instanceof ConfigError)) throw error;
  }
  hasPvhEntryNote(data);
}
