/**
 * What the VHD and VHDX images (and raw, where it applies) share: walking a byte range
 * block by block, runs of a sector bitmap, allocation runs, the shrink check, sector
 * alignment of writes, the metadata lock. Pure helpers, or helpers over a
 * {@link BlockImage}; no format knowledge.
 */
import type { AllocationRange, BlockImage } from "./block-image.js";
import { DiskError, DiskFormatError } from "./errors.js";
import type { StorageFile } from "./file.js";

/** One block's part of a byte range cut at block boundaries. */
export interface BlockSpan {
  /** Virtual disk offset of this part. */
  readonly pos: number;
  readonly block: number;
  /** Offset of `pos` within its block. */
  readonly within: number;
  /** Bytes of this part (up to the end of the block or of the range). */
  readonly take: number;
  /** Bytes of the range before this part. */
  readonly done: number;
}

/** Cuts `[offset, offset + length)` at multiples of `blockSize`, in order. */
export function* blockSpans(offset: number, length: number, blockSize: number): Generator<BlockSpan> {
  let done = 0;
  while (done < length) {
    const pos = offset + done;
    const block = Math.floor(pos / blockSize);
    const within = pos - block * blockSize;
    const take = Math.min(blockSize - within, length - done);
    yield { pos, block, within, take, done };
    done += take;
  }
}

/** A run of sectors within a block, all present or all absent in its sector bitmap. */
export interface SectorRun {
  /** Byte offset within the block. */
  start: number;
  length: number;
  present: boolean;
}

/**
 * Runs of present and absent sectors for bytes `[within, within + length)` of a block,
 * from a sector bitmap whose bit `firstSector` stands for the block's first sector. VHD
 * numbers bits from the most significant one of each byte, VHDX from the least. An
 * undefined bitmap has no sector present.
 */
export function bitmapRuns(
  bitmap: Uint8Array | undefined,
  o: { firstSector: number; within: number; length: number; sectorBytes: number; bitOrder: "msb-first" | "lsb-first" },
): SectorRun[] {
  const runs: SectorRun[] = [];
  const end = o.within + o.length;
  const byteBytes = 8 * o.sectorBytes;
  // A range of whole bitmap bytes all 0xff or all 0x00 (every block convert copies out
  // of a dynamic VHD, for one) is one run: one memcmp instead of a loop over its bytes.
  const firstSector = o.firstSector + o.within / o.sectorBytes;
  if (bitmap !== undefined && o.length > 0 && firstSector % 8 === 0 && o.within % o.sectorBytes === 0 && o.length % byteBytes === 0) {
    const from = firstSector / 8;
    const to = from + o.length / byteBytes;
    if (bytesAllEqual(bitmap, from, to, ALL_SECTORS)) return [{ start: o.within, length: o.length, present: true }];
    if (bytesAllEqual(bitmap, from, to, 0)) return [{ start: o.within, length: o.length, present: false }];
  }
  let at = o.within;
  while (at < end) {
    const s = o.firstSector + Math.floor(at / o.sectorBytes);
    // A whole bitmap byte of 0x00 or 0xff is 8 sectors of one kind: one step, not eight
    // (convert reads the runs of every allocated block; bit by bit that was ~10 ms of
    // main-thread time per 2 GiB VHD, with the copy threads waiting on it).
    const whole = bitmap === undefined ? 0 : (bitmap[s >> 3] ?? 0);
    if ((s & 7) === 0 && at % o.sectorBytes === 0 && at + byteBytes <= end && (whole === 0 || whole === ALL_SECTORS)) {
      const present = whole === ALL_SECTORS;
      const last = runs[runs.length - 1];
      if (last?.present === present) last.length += byteBytes;
      else runs.push({ start: at, length: byteBytes, present });
      at += byteBytes;
      continue;
    }
    const bit = o.bitOrder === "msb-first" ? 7 - (s & 7) : s & 7;
    const present = bitmap !== undefined && (((bitmap[s >> 3] ?? 0) >> bit) & 1) === 1;
    const next = Math.min(end, (Math.floor(at / o.sectorBytes) + 1) * o.sectorBytes);
    const last = runs[runs.length - 1];
    if (last?.present === present) last.length += next - at;
    else runs.push({ start: at, length: next - at, present });
    at = next;
  }
  return runs;
}

const ALL_SECTORS = 0xff;

/**
 * True when `bytes[from..to)` all equal `value` and lie within `bytes` (memcmp against a
 * buffer of `value`, kept per value and grown to the longest range asked).
 */
export function bytesAllEqual(bytes: Uint8Array, from: number, to: number, value: number): boolean {
  if (from < 0 || to > bytes.length || from > to) return false;
  let pattern = PATTERNS.get(value);
  if (pattern === undefined || pattern.length < to - from) {
    pattern = Buffer.alloc(Math.max(to - from, 4096), value);
    PATTERNS.set(value, pattern);
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset + from, to - from).equals(pattern.subarray(0, to - from));
}

const PATTERNS = new Map<number, Buffer>();

/** Fills `into` from the file at `offset`, without a new buffer when the file can. */
export async function readFileInto(file: StorageFile, offset: number, into: Uint8Array): Promise<void> {
  if (file.readInto !== undefined) await file.readInto(offset, into);
  else into.set(await file.read(offset, into.length));
}

/**
 * Runs an image opener so that a {@link DiskFormatError} it throws names the file
 * (other errors name it already, or are not about the bytes).
 */
export async function namingFile<T>(path: string, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (error: unknown) {
    if (error instanceof DiskFormatError) throw error.withPath(path);
    throw error;
  }
}

/**
 * The shrink check: throws `disk.bad-size` when the bytes the image stores past
 * `sizeBytes` (its `data` runs there) do not all read as zeros.
 */
export async function assertNoDataPast(image: BlockImage, sizeBytes: number): Promise<void> {
  if (sizeBytes >= image.sizeBytes) return;
  for (const run of await image.allocation(sizeBytes, image.sizeBytes - sizeBytes)) {
    if (run.state !== "data") continue;
    for (let at = run.offset; at < run.offset + run.length; at += SCAN_BYTES) {
      if (!isZero(await image.read(at, Math.min(SCAN_BYTES, run.offset + run.length - at)))) {
        throw new DiskError(`${image.path}: cannot shrink to ${sizeBytes} bytes: data at 0x${at.toString(16)} past the new end`, "disk.bad-size");
      }
    }
  }
}

const SCAN_BYTES = 1 << 20;

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
