/**
 * Whole-image operations behind `palisade disk`: info, map, check, convert, compact,
 * merge, resize. Each opens what it needs and closes it, also on failure.
 */
import { access, rename, unlink } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import type { AllocationRange, BlockImage, DiskFormat, DiskType } from "./block-image.js";
import { isZero } from "./blocks.js";
import { DiskError, DiskFormatError } from "./errors.js";
import { pageAlignedBuffer, syncDirectory } from "./file.js";
import { createImage, openImage } from "./open.js";
import { RawImage } from "./raw.js";
import { VhdImage } from "./vhd/image.js";
import { VhdxImage } from "./vhdx/image.js";

/** Reports progress of a long operation in bytes of the virtual disk. */
export type ProgressCallback = (doneBytes: number, totalBytes: number) => void;

/** What `disk info` shows. */
export interface ImageInfo {
  readonly path: string;
  readonly format: DiskFormat;
  readonly type: DiskType;
  readonly virtualSizeBytes: number;
  readonly blockSizeBytes: number;
  readonly logicalSectorBytes: number;
  readonly physicalSectorBytes: number;
  /** Size of the image file. */
  readonly fileSizeBytes: number;
  /** Bytes of the virtual disk stored in this file (not in a parent). */
  readonly allocatedBytes: number;
  /** The parents, nearest first. */
  readonly parentChain: readonly string[];
  /** VHDX: the virtual disk id; VHD: the footer's unique id. */
  readonly identifier?: string;
  /** VHDX: the log had entries to replay (the image was not closed cleanly). */
  readonly logPending?: boolean;
  /** VHD: the creator application field. */
  readonly creator?: string;
}

/** Sums the `data` runs of an image's allocation. */
async function dataBytes(image: BlockImage): Promise<number> {
  const ranges = await image.allocation(0, image.sizeBytes);
  return ranges.reduce((sum, r) => sum + (r.state === "data" ? r.length : 0), 0);
}

/** Describes an open image. */
export async function describeImage(image: BlockImage): Promise<ImageInfo> {
  const chain: string[] = [];
  for (let p = image.parent; p !== undefined; p = p.parent) chain.push(p.path);
  return {
    path: image.path,
    format: image.format,
    type: image.type,
    virtualSizeBytes: image.sizeBytes,
    blockSizeBytes: image.blockSizeBytes,
    logicalSectorBytes: image.logicalSectorBytes,
    physicalSectorBytes: image.physicalSectorBytes,
    fileSizeBytes: await image.allocatedBytes(),
    allocatedBytes: await dataBytes(image),
    parentChain: chain,
    ...(image instanceof VhdxImage ? { identifier: image.virtualDiskId, logPending: image.replayedLog } : {}),
    ...(image instanceof VhdImage ? { identifier: image.identifier, creator: image.creatorApplication } : {}),
  };
}

/** `disk info`: opens read-only (a pending VHDX log is replayed in memory only). */
export async function imageInfo(path: string): Promise<ImageInfo> {
  const image = await openImage(path, { readonly: true });
  try {
    return await describeImage(image);
  } finally {
    await image.close();
  }
}

/** `disk map`: the allocation of the whole disk, merged runs. */
export async function imageMap(path: string): Promise<AllocationRange[]> {
  const image = await openImage(path, { readonly: true });
  try {
    return await image.allocation(0, image.sizeBytes);
  } finally {
    await image.close();
  }
}

/** What `disk check` found. */
export interface CheckResult {
  readonly path: string;
  /** True when the image opens and needs nothing. */
  readonly ok: boolean;
  /** One line per problem, with the structure and field. */
  readonly problems: readonly string[];
  /** Problems `--repair` fixed. */
  readonly repaired: readonly string[];
  /** The error code of an image that does not open. */
  readonly code?: string;
}

/**
 * `disk check`: opens the image read-only, which checks every header, table and BAT entry
 * and the parent chain; reports a pending VHDX log or a VHD with a bad footer at the end.
 * With `repair`, replays the log (and clears it) or rewrites the footer.
 */
export async function checkImage(path: string, options: { repair: boolean }): Promise<CheckResult> {
  const problems: string[] = [];
  const repaired: string[] = [];
  let image: BlockImage;
  try {
    image = await openImage(path, { readonly: true });
  } catch (error: unknown) {
    if (error instanceof DiskFormatError || (error instanceof DiskError && error.code !== "disk.not-found")) {
      return { path, ok: false, problems: [error.message], repaired, code: error.code };
    }
    throw error;
  }
  let needsRepair = false;
  try {
    if (image instanceof VhdxImage && image.replayedLog) {
      problems.push(`${path}: log: entries pending replay (the image was not closed cleanly)`);
      needsRepair = true;
    }
    if (image instanceof VhdImage && image.usedFooterCopy) {
      problems.push(`${path}: footer: the last sector is not a valid footer (the copy at offset 0 was used)`);
      needsRepair = true;
    }
  } finally {
    await image.close();
  }
  if (needsRepair && options.repair) {
    const writable = await openImage(path, { readonly: false });
    await writable.close();
    repaired.push(...problems);
    return { path, ok: true, problems: [], repaired };
  }
  return { path, ok: problems.length === 0, problems, repaired };
}

const COPY_CHUNK = 1 << 20;
const ZERO_GRAIN = 64 * 1024;
const IN_FLIGHT = 4;
/** Allocation is asked for this much of the virtual disk at a time (bounds the job list). */
const COPY_WINDOW = 256 * COPY_CHUNK;

/**
 * Copies the virtual disk of `src` into `dst` (same size; `dst` new and reading zeros),
 * skipping ranges that read as zeros so holes stay holes. With `onlyThisLayer`, copies
 * only what `src` stores itself (its `data` and `zero` runs, not its parent's), keeping
 * zeros that must hide the parent.
 */
export async function copyImage(src: BlockImage, dst: BlockImage, o: { onlyThisLayer?: boolean; onProgress?: ProgressCallback } = {}): Promise<void> {
  const total = src.sizeBytes;
  const keepZeros = o.onlyThisLayer === true && src.parent !== undefined;
  // Page-aligned: see pageAlignedBuffer (4K aliasing made reads into them ~4x costlier).
  const buffers = Array.from({ length: IN_FLIGHT }, () => pageAlignedBuffer(COPY_CHUNK));
  const run = async (job: CopyJob, buffer: Uint8Array): Promise<void> => {
    // One buffer per worker, reused: no allocation (and no page faults) per chunk.
    const data = buffer.subarray(0, job.length);
    await src.readInto(job.offset, data);
    if (keepZeros) {
      await (isZero(data) ? dst.discard(job.offset, job.length) : dst.write(job.offset, data));
      return;
    }
    // Write only the non-zero grains, merged into runs.
    let start = -1;
    for (let at = 0; at < data.length; at += ZERO_GRAIN) {
      const end = Math.min(data.length, at + ZERO_GRAIN);
      // A grain whose first or last byte is not zero is data: no memcmp (and no Buffer
      // views to make for it), which is what most data grains cost.
      const zero = data[at] === 0 && data[end - 1] === 0 && isZero(data.subarray(at, end));
      if (!zero && start < 0) start = at;
      if (zero && start >= 0) {
        await dst.write(job.offset + start, data.subarray(start, at));
        start = -1;
      }
    }
    if (start >= 0) await dst.write(job.offset + start, data.subarray(start));
  };
  /** The chunks to copy in the window at `base`, from the source's allocation there. */
  const windowJobs = async (base: number): Promise<CopyWindow> => {
    const length = Math.min(COPY_WINDOW, total - base);
    const jobs: CopyJob[] = [];
    for (const r of await src.allocation(base, length)) {
      if (r.state === "parent" && o.onlyThisLayer) continue;
      if (r.state === "zero" && !keepZeros) continue;
      for (let at = r.offset; at < r.offset + r.length; ) {
        const take = Math.min(COPY_CHUNK - (at % COPY_CHUNK), r.offset + r.length - at);
        jobs.push({ offset: at, length: take });
        at += take;
      }
    }
    return { end: base + length, jobs, unfinished: jobs.length };
  };
  // The next window's allocation is worked out while this window's chunks are copied,
  // and the workers go on into it without waiting for the slowest chunk: allocation
  // (BAT, sector bitmaps, SEEK_DATA) runs on the main thread, and before, the copy
  // threads sat idle through it and through each window's last chunks.
  const prefetch = (base: number): Promise<CopyWindow> | undefined => {
    if (base >= total) return undefined;
    const next = windowJobs(base);
    next.catch(() => undefined); // awaited later; a failure is thrown there
    return next;
  };
  const windows: CopyWindow[] = [];
  let reported = 0;
  const report = (): void => {
    // Progress: the end of the windows whose chunks are all written, in order.
    while (reported < windows.length && windows[reported]?.unfinished === 0) reported++;
    const done = windows[reported - 1]?.end;
    if (done !== undefined) o.onProgress?.(done, total);
  };
  let upcoming = prefetch(0);
  let current: CopyWindow | undefined;
  let next = 0;
  let refilling: Promise<void> | undefined;
  const refill = (): Promise<void> =>
    (refilling ??= (async () => {
      try {
        const window = await upcoming;
        upcoming = window === undefined ? undefined : prefetch(window.end);
        if (window === undefined) return;
        windows.push(window);
        current = window;
        next = 0;
        if (window.jobs.length === 0) report();
      } finally {
        refilling = undefined;
      }
    })());
  let failed = false;
  const worker = async (buffer: Uint8Array): Promise<void> => {
    try {
      while (!failed) {
        const window = current;
        const job = window?.jobs[next];
        if (window === undefined || job === undefined) {
          if (upcoming === undefined) return;
          await refill();
          continue;
        }
        next++;
        await run(job, buffer);
        window.unfinished--;
        if (window.unfinished === 0) report();
      }
    } catch (error: unknown) {
      failed = true; // the other workers stop taking chunks
      throw error;
    }
  };
  // Every worker has stopped before this returns or throws: the caller closes `dst` next.
  const outcomes = await Promise.allSettled(buffers.map(worker));
  for (const outcome of outcomes) if (outcome.status === "rejected") throw outcome.reason;
}

interface CopyJob {
  readonly offset: number;
  readonly length: number;
}
interface CopyWindow {
  /** Where the window ends on the virtual disk. */
  readonly end: number;
  readonly jobs: readonly CopyJob[];
  /** Chunks not yet written. */
  unfinished: number;
}

export interface ConvertOptions {
  readonly format: DiskFormat;
  readonly type?: DiskType;
  readonly blockSizeBytes?: number;
  readonly logicalSectorBytes?: number;
  readonly onProgress?: ProgressCallback;
  /**
   * False: `dst` is renamed into place without being flushed (qemu-img convert's default,
   * cache=unsafe). Faster by the time the disk takes to write it, but after a crash before
   * the kernel has written it back (tens of seconds), `dst` may hold zeros or be missing.
   * Default true: once convertImage resolves, `dst` survives a crash.
   */
  readonly flush?: boolean;
}

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.palisade-${process.pid}.tmp`);
}

/**
 * `disk convert`: writes the whole virtual disk of `src` (its parent chain flattened) into
 * a new `dst` of another format; zeros stay holes. Writes a temporary file beside `dst`
 * (metadata once at the end, data written back as it comes, one flush) and renames it
 * into place, then syncs the directory: `dst` is never half-written, and once this
 * resolves it survives a crash (unless `flush: false`).
 */
export async function convertImage(srcPath: string, dstPath: string, o: ConvertOptions): Promise<void> {
  if (o.type === "differencing") throw new DiskError(`${dstPath}: convert makes standalone images; use create --parent for differencing`, "disk.unsupported");
  const src = await openImage(srcPath, { readonly: true });
  const temp = tempPathFor(dstPath);
  try {
    if (await access(dstPath).then(() => true, () => false)) throw new DiskError(`${dstPath}: file exists (remove it first)`, "disk.exists");
    const dst = await createImage(temp, {
      bulk: true,
      durable: o.flush ?? true,
      format: o.format,
      sizeBytes: src.sizeBytes,
      ...(o.type !== undefined ? { type: o.type } : {}),
      ...(o.blockSizeBytes !== undefined ? { blockSizeBytes: o.blockSizeBytes } : {}),
      ...(o.logicalSectorBytes !== undefined ? { logicalSectorBytes: o.logicalSectorBytes } : {}),
    });
    try {
      await copyImage(src, dst, o.onProgress ? { onProgress: o.onProgress } : {});
    } finally {
      await dst.close();
    }
    await rename(temp, dstPath);
    if (o.flush ?? true) await syncDirectory(dirname(dstPath));
  } catch (error: unknown) {
    await unlink(temp).catch(() => undefined);
    throw error;
  } finally {
    await src.close();
  }
}

/**
 * `disk compact`: rewrites a dynamic or differencing image without its all-zero and
 * discarded blocks (and without space freed earlier), into a temporary file renamed over
 * the original once flushed. Fixed images have nothing to give back.
 * @returns the file size before and after.
 */
export async function compactImage(path: string, o: { onProgress?: ProgressCallback } = {}): Promise<{ beforeBytes: number; afterBytes: number }> {
  const src = await openImage(path, { readonly: true });
  const before = await src.allocatedBytes();
  if (src.type === "fixed") {
    await src.close();
    return { beforeBytes: before, afterBytes: before };
  }
  const temp = tempPathFor(path);
  try {
    const dst = await createImage(temp, {
      bulk: true,
      format: src.format,
      sizeBytes: src.sizeBytes,
      type: src.type,
      blockSizeBytes: src.blockSizeBytes,
      logicalSectorBytes: src.logicalSectorBytes,
      physicalSectorBytes: src.physicalSectorBytes,
      ...(src.parent !== undefined ? { parentPath: src.parent.path } : {}),
    });
    try {
      await copyImage(src, dst, { onlyThisLayer: true, ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    } finally {
      await dst.close();
    }
    await rename(temp, path);
    await syncDirectory(dirname(path));
    const again = await openImage(path, { readonly: true });
    const after = await again.allocatedBytes();
    await again.close();
    return { beforeBytes: before, afterBytes: after };
  } catch (error: unknown) {
    await unlink(temp).catch(() => undefined);
    throw error;
  } finally {
    await src.close();
  }
}

/**
 * `disk merge`: writes what a differencing child stores into its parent, then deletes the
 * child. Crash-safe: the parent keeps its DataWriteGuid (VHDX) or unique id (VHD) while
 * it is written, so after a crash the child still opens over it with the same contents,
 * and running the merge again finishes it.
 * @returns the parent's path.
 */
export async function mergeImage(childPath: string, o: { onProgress?: ProgressCallback; keepChild?: boolean } = {}): Promise<string> {
  const child = await openImage(childPath, { readonly: true });
  if (child.parent === undefined) {
    await child.close();
    throw new DiskError(`${childPath}: not a differencing image: nothing to merge`, "disk.unsupported");
  }
  const parentPath = child.parent.path;
  try {
    const parent = await openImage(parentPath, { readonly: false, keepDataWriteGuid: true });
    try {
      await copyImage(child, parent, { onlyThisLayer: true, ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
      await parent.flush();
    } finally {
      await parent.close();
    }
  } finally {
    await child.close();
  }
  if (o.keepChild !== true) await unlink(childPath);
  return parentPath;
}

/** `disk resize`: grows, or shrinks when the cut-off tail holds no data. */
export async function resizeImage(path: string, sizeBytes: number): Promise<void> {
  const image = await openImage(path, { readonly: false });
  try {
    if (image instanceof VhdxImage || image instanceof VhdImage || image instanceof RawImage) await image.resize(sizeBytes);
  } finally {
    await image.close();
  }
}
