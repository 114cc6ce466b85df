import { DiskError } from "./errors.js";

/** The disk image formats Palisade reads and writes. */
export type DiskFormat = "raw" | "vhd" | "vhdx";

/** How the image stores its blocks: all up front, on first write, or over a parent. */
export type DiskType = "fixed" | "dynamic" | "differencing";

/**
 * What reading a range gives, as {@link BlockImage.allocation} reports it.
 * - `data`: stored in this image's file (at `fileOffset` when the format knows it);
 * - `zero`: reads as zeros and uses no space (a hole, a discarded or zero block);
 * - `parent`: not in this image; reads come from the parent (differencing images only).
 */
export type AllocationState = "data" | "zero" | "parent";

/** A run of the virtual disk in one allocation state. */
export interface AllocationRange {
  /** Virtual disk offset in bytes. */
  readonly offset: number;
  readonly length: number;
  readonly state: AllocationState;
  /** Where the run starts in the image file, for `data` runs when known. */
  readonly fileOffset?: number;
}

/**
 * A virtual disk: the block back-end of `palisade disk`, and of Palisade's storage device
 * server, whatever the file format underneath (raw, VHD, VHDX; fixed, dynamic or
 * differencing).
 *
 * Contract:
 * - Offsets and lengths are bytes on the virtual disk, any value (no alignment needed),
 *   as safe integers; a range must lie within `[0, sizeBytes]`, else `disk.bad-range`.
 *   Unaligned writes cost a read-modify-write of the sectors they touch.
 * - Reads of never-written ranges give zeros, or the parent's data on a differencing disk.
 * - Calls may overlap (a device server keeps many in flight): overlapping reads and
 *   writes of the same bytes are ordered by nothing, as on a real disk; metadata (block
 *   allocation, BAT, log) is serialized inside the image.
 * - Durability: when `write` resolves the data is visible to later reads but may still be
 *   in the host's cache; when `flush` resolves, every write that resolved before it is
 *   durable and survives a crash of the process or the host. Metadata a write needed
 *   (a new block's BAT entry) is made crash-safe before the write resolves (VHDX: through
 *   its log), so a crash never leaves an image that fails to open.
 * - `discard` says the range's contents are no longer needed: afterwards it reads as
 *   zeros (never as the parent's data) and whole blocks may give their space back.
 * - A `readonly` image never writes to its file (not even to replay a VHDX log, which
 *   then happens in memory); `write`, `discard` and `resize` throw `disk.readonly`.
 * - `close` flushes, leaves the file consistent for other tools (a VHDX with an empty
 *   log), and closes the parent chain it opened. The image is unusable afterwards.
 *
 * @example
 * const image = await openImage("disk.vhdx", { readonly: false });
 * await image.write(1048576, new Uint8Array(4096).fill(0xab));
 * await image.flush();
 * const sector = await image.read(1048576, 512);
 * await image.close();
 */
export interface BlockImage {
  readonly format: DiskFormat;
  readonly type: DiskType;
  /** The image file's path (or a label for in-memory files). */
  readonly path: string;
  readonly readonly: boolean;
  /** Virtual disk size in bytes. */
  readonly sizeBytes: number;
  /** Logical sector size the guest sees: 512 or 4096. */
  readonly logicalSectorBytes: number;
  /** Physical sector size reported to the guest: 512 or 4096. */
  readonly physicalSectorBytes: number;
  /** Allocation unit of the format (VHD/VHDX block size; the logical sector for raw). */
  readonly blockSizeBytes: number;
  /** The parent of a differencing image, opened with it; undefined otherwise. */
  readonly parent: BlockImage | undefined;

  /** Reads `length` bytes at `offset`. @throws {DiskError} `disk.bad-range`. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Writes `data` at `offset`. @throws {DiskError} `disk.readonly`, `disk.bad-range`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every resolved write durable. */
  flush(): Promise<void>;
  /** Drops the contents of a range; it then reads as zeros. */
  discard(offset: number, length: number): Promise<void>;
  /** The allocation of `[offset, offset + length)`, as contiguous runs in order, merged. */
  allocation(offset: number, length: number): Promise<AllocationRange[]>;
  /** Bytes of the image file holding data (for `disk info`). */
  allocatedBytes(): Promise<number>;
  /** Flushes and closes this image and the parents it opened. */
  close(): Promise<void>;
}

/** Throws `disk.bad-range` unless `[offset, offset + length)` lies on the disk. */
export function checkRange(image: { path: string; sizeBytes: number }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > image.sizeBytes) {
    throw new DiskError(
      `${image.path}: range 0x${offset.toString(16)}+0x${length.toString(16)} is outside the disk (size 0x${image.sizeBytes.toString(16)})`,
      "disk.bad-range",
    );
  }
}

/** Appends a run to a list, merging it with the previous one when they continue each other. */
export function pushRange(ranges: AllocationRange[], range: AllocationRange): void {
  if (range.length === 0) return;
  const last = ranges[ranges.length - 1];
  if (
    last?.state === range.state &&
    last.offset + last.length === range.offset &&
    (range.state !== "data" ||
      (last.fileOffset === undefined && range.fileOffset === undefined) ||
      (last.fileOffset !== undefined && range.fileOffset !== undefined && last.fileOffset + last.length === range.fileOffset))
  ) {
    ranges[ranges.length - 1] = { ...last, length: last.length + range.length };
    return;
  }
  ranges.push(range);
}

/**
 * Splits a `data` run stored at `fileOffset` by where the file really holds data: holes
 * in the file read as zeros, so they are `zero` runs (convert then skips them unread).
 */
export function pushDataRun(
  ranges: AllocationRange[],
  run: { offset: number; length: number; fileOffset: number },
  dataRanges: ((offset: number, length: number) => { offset: number; length: number }[] | undefined) | undefined,
): void {
  const inFile = dataRanges?.(run.fileOffset, run.length);
  if (inFile === undefined) {
    pushRange(ranges, { ...run, state: "data" });
    return;
  }
  let at = run.fileOffset;
  for (const d of inFile) {
    pushRange(ranges, { offset: run.offset + at - run.fileOffset, length: d.offset - at, state: "zero" });
    pushRange(ranges, { offset: run.offset + d.offset - run.fileOffset, length: d.length, state: "data", fileOffset: d.offset });
    at = d.offset + d.length;
  }
  pushRange(ranges, { offset: run.offset + at - run.fileOffset, length: run.fileOffset + run.length - at, state: "zero" });
}

/** A FIFO lock for metadata updates (allocation, BAT, log). */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Runs `work` once every earlier holder is done. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    const previous = this.#tail;
    let release = (): void => undefined;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await work();
    } finally {
      release();
    }
  }
}

/** True when every byte is zero. */
export function isZero(data: Uint8Array): boolean {
  // convert's hot loop runs this over every byte it copies: let memcmp do it.
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const piece = data.subarray(at, Math.min(data.length, at + ZEROS.length));
    if (!Buffer.from(piece.buffer, piece.byteOffset, piece.length).equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}

const ZEROS = Buffer.alloc(1 << 20);

/**
 * Widens a write to whole sectors: returns the aligned offset and data, reading the
 * partial sectors at either end through `read` (which sees the parent). Aligned writes
 * pass through untouched.
 */
export async function alignWrite(
  offset: number,
  data: Uint8Array,
  sectorBytes: number,
  read: (offset: number, length: number) => Promise<Uint8Array>,
): Promise<{ offset: number; data: Uint8Array }> {
  const start = offset - (offset % sectorBytes);
  const endRaw = offset + data.length;
  const end = endRaw % sectorBytes === 0 ? endRaw : endRaw + sectorBytes - (endRaw % sectorBytes);
  if (start === offset && end === endRaw) return { offset, data };
  const merged = new Uint8Array(end - start);
  if (start !== offset) merged.set(await read(start, sectorBytes), 0);
  if (end !== endRaw && end - sectorBytes >= start) merged.set(await read(end - sectorBytes, sectorBytes), end - sectorBytes - start);
  merged.set(data, offset - start);
  return { offset: start, data: merged };
}
