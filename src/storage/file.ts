import { open, type FileHandle } from "node:fs/promises";
import { constants } from "node:fs";
import { createRequire } from "node:module";
import { BugError } from "../util/errors.js";
import { DiskError } from "./errors.js";

/**
 * The file layer under every image format: positioned reads and writes on something
 * file-like. Formats never touch `node:fs` themselves, so tests can put a
 * {@link MemoryFile} (records writes) or a {@link FaultFile} (cuts the write sequence)
 * under them.
 *
 * Offsets and lengths are byte counts as safe integers (callers convert file fields
 * with a checked conversion first).
 */
export interface StorageFile {
  /** For messages: the path, or a label for in-memory files. */
  readonly path: string;
  /** False when opened read-only; then `write`, `truncate` and `flush` are bugs to call. */
  readonly writable: boolean;
  /** Current length in bytes. */
  size(): Promise<number>;
  /** Exactly `length` bytes from `offset`; bytes past the end of the file read as zero. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** As {@link StorageFile.read}, into a buffer the caller reuses (no allocation per read). */
  readInto?(offset: number, into: Uint8Array): Promise<void>;
  /** Writes all of `data` at `offset`, growing the file when needed. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Sets the length; growth reads as zeros. */
  truncate(sizeBytes: number): Promise<void>;
  /** Makes every completed write durable (fdatasync). */
  flush(): Promise<void>;
  /** Gives back the space of a range (reads then return zeros). */
  punchHole(offset: number, length: number): Promise<void>;
  /** Where the file holds data in a range (the rest are holes); undefined when unknown. */
  dataRanges?(offset: number, length: number): { offset: number; length: number }[] | undefined;
  close(): Promise<void>;
}

type Callback = (error: unknown, result: number) => void;
interface Libc {
  lseek: (fd: number, offset: number, whence: number) => number;
  fallocate: (fd: number, mode: number, offset: number, length: number) => number;
  /** sync_file_range, called on koffi's worker thread (it may wait for the device queue). */
  syncFileRange: { async: (fd: number, offset: number, length: number, flags: number, done: Callback) => void };
}
let koffiModule: typeof import("koffi") | null | undefined;
/** koffi, loaded on first use (~15-100 ms): read-only users may never need it. Null if unavailable. */
function loadKoffi(): typeof import("koffi") | null {
  if (koffiModule !== undefined) return koffiModule;
  try {
    koffiModule = createRequire(import.meta.url)("koffi") as typeof import("koffi");
  } catch {
    koffiModule = null;
  }
  return koffiModule;
}

let libc: Libc | null | undefined;
/** lseek(SEEK_DATA/SEEK_HOLE), fallocate(PUNCH_HOLE) and sync_file_range, which Node lacks; null if unavailable. */
function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const koffi = loadKoffi();
    if (koffi === null) return (libc = null);
    const lib = koffi.load("libc.so.6");
    libc = {
      lseek: lib.func("int64_t lseek(int fd, int64_t offset, int whence)") as Libc["lseek"],
      fallocate: lib.func("int fallocate(int fd, int mode, int64_t offset, int64_t len)") as Libc["fallocate"],
      syncFileRange: lib.func("int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)") as Libc["syncFileRange"],
    };
  } catch {
    libc = null;
  }
  return libc;
}
const PAGE_BYTES = 4096;
/**
 * A buffer for large reads and writes that starts on a page boundary when koffi can tell
 * where the memory is (otherwise wherever the allocator put it).
 *
 * Why: Node's large buffers start 16 bytes past a page boundary (glibc's chunk header).
 * The kernel copies page-cache pages into them with `rep movsb`, and a destination a few
 * bytes above its source modulo 4 KiB (4K aliasing) made those copies ~4x slower here:
 * reading 512 MiB from the page cache took 244 ms of system time into such a buffer,
 * 58 ms into the same buffer 16 bytes further on. That was most of `disk convert`'s CPU.
 */
export function pageAlignedBuffer(length: number): Buffer {
  const raw = Buffer.allocUnsafeSlow(length + PAGE_BYTES);
  const koffi = loadKoffi();
  let skip = 0;
  try {
    if (koffi !== null) skip = (PAGE_BYTES - Number(koffi.address(raw) % BigInt(PAGE_BYTES))) % PAGE_BYTES;
  } catch {
    skip = 0; // koffi cannot tell: an unaligned buffer still works
  }
  return raw.subarray(skip, skip + length);
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;
const SYNC_FILE_RANGE_WRITE = 2;
/** With `writeBehind`, start writing back dirty pages after this many bytes written (8 MiB ended convert's final flush sooner than 32 or 128 in bench runs). */
const WRITE_BEHIND_BYTES = 8 * 1024 * 1024;

/** A real file through `node:fs/promises`. */
export class NodeFile implements StorageFile {
  readonly path: string;
  readonly writable: boolean;
  readonly #handle: FileHandle;
  #sizeBytes: number;
  readonly #writeBehind: boolean;
  readonly #durable: boolean;
  readonly #allocateOnWrite: boolean;
  #unsubmittedBytes = 0;
  #writeback: Promise<void> | undefined;

  private constructor(path: string, handle: FileHandle, writable: boolean, sizeBytes: number, o: { writeBehind: boolean; durable: boolean; allocateOnWrite: boolean }) {
    this.path = path;
    this.#handle = handle;
    this.writable = writable;
    this.#sizeBytes = sizeBytes;
    this.#writeBehind = o.writeBehind;
    this.#durable = o.durable;
    this.#allocateOnWrite = o.allocateOnWrite;
  }

  /**
   * Opens an existing file, or creates one with `create` (fails if it exists).
   * With `writeBehind` (a file written start to end and flushed once, as `convert`'s
   * output), the kernel is asked to start writing back every 8 MiB written, so the
   * final flush waits for the tail only instead of for the whole file.
   * With `durable: false`, flush does nothing (and nothing is written back early): the
   * kernel writes the data back when it chooses, as `qemu-img convert` leaves its output.
   * With `allocateOnWrite` (convert's output), each write's range is allocated
   * (`fallocate`) just before it is written; see {@link NodeFile.write}.
   * @throws {DiskError} `disk.io` naming the path when the file cannot be opened.
   */
  static async open(path: string, options: { writable: boolean; create?: boolean; writeBehind?: boolean; durable?: boolean; allocateOnWrite?: boolean }): Promise<NodeFile> {
    const flags = options.create
      ? constants.O_RDWR | constants.O_CREAT | constants.O_EXCL
      : options.writable
        ? constants.O_RDWR
        : constants.O_RDONLY;
    try {
      const handle = await open(path, flags, 0o644);
      const stat = await handle.stat();
      const durable = options.durable ?? true;
      const writable = options.writable || options.create === true;
      return new NodeFile(path, handle, writable, stat.size, {
        writeBehind: durable && options.writeBehind === true,
        durable,
        allocateOnWrite: writable && options.allocateOnWrite === true,
      });
    } catch (error: unknown) {
      const code = (error as NodeJS.ErrnoException).code ?? "error";
      throw new DiskError(`${path}: cannot open (${code})`, code === "ENOENT" ? "disk.not-found" : "disk.io", { cause: error });
    }
  }

  size(): Promise<number> {
    return Promise.resolve(this.#sizeBytes);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    // Not zero-filled by the allocator (convert reads gigabytes): every byte is either
    // read or zeroed by readInto. Never pooled, so `.buffer` is this buffer alone.
    const buffer = Buffer.allocUnsafeSlow(length);
    await this.readInto(offset, buffer);
    return buffer;
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    const length = into.length;
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#handle.read(into, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < length) into.fill(0, done); // past the end of the file: zeros
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new BugError(`${this.path}: write on a read-only file`);
    // allocateOnWrite: on ext4, writing into a range that is not allocated yet costs
    // delayed-allocation work per page (reservation, quota, extent-status entries);
    // into an allocated (unwritten) range it does not. Writing 512 MiB in 1 MiB pieces
    // took ~94 ms of system time plain and ~57 ms with an fallocate of each piece
    // first (~266 vs ~206 ms with the final fdatasync). Only the written range is
    // allocated, so holes stay holes. A failure is ignored: a file system without
    // fallocate takes the plain write, and the write itself reports a full disk.
    if (this.#allocateOnWrite && data.length > 0) loadLibc()?.fallocate(this.#handle.fd, 0, offset, data.length);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    this.#sizeBytes = Math.max(this.#sizeBytes, offset + data.length);
    if (this.#writeBehind) {
      this.#unsubmittedBytes += data.length;
      if (this.#unsubmittedBytes >= WRITE_BEHIND_BYTES && this.#writeback === undefined) this.#startWriteback();
    }
  }

  /** sync_file_range(WRITE) over the whole file: queue its dirty pages, do not wait. */
  #startWriteback(): void {
    const c = loadLibc();
    if (c === null) return;
    this.#unsubmittedBytes = 0;
    this.#writeback = new Promise<void>((resolve) => {
      // A failure only means the final flush does all the work.
      c.syncFileRange.async(this.#handle.fd, 0, 0, SYNC_FILE_RANGE_WRITE, () => {
        this.#writeback = undefined;
        resolve();
      });
    });
  }

  async truncate(sizeBytes: number): Promise<void> {
    if (!this.writable) throw new BugError(`${this.path}: truncate on a read-only file`);
    await this.#handle.truncate(sizeBytes);
    this.#sizeBytes = sizeBytes;
  }

  async flush(): Promise<void> {
    if (!this.writable || !this.#durable) return;
    await this.#writeback;
    await this.#handle.datasync();
  }

  async punchHole(offset: number, length: number): Promise<void> {
    if (!this.writable) throw new BugError(`${this.path}: punchHole on a read-only file`);
    const end = Math.min(length, this.#sizeBytes - offset);
    if (end <= 0) return;
    if (loadLibc()?.fallocate(this.#handle.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, end) === 0) return;
    // No hole punching here (file system or libc): zeros keep the contract, not the space.
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let at = 0; at < length; at += chunk.length) {
      await this.write(offset + at, chunk.subarray(0, Math.min(chunk.length, length - at)));
    }
  }

  dataRanges(offset: number, length: number): { offset: number; length: number }[] | undefined {
    const c = loadLibc();
    if (c === null) return undefined;
    const end = Math.min(offset + length, this.#sizeBytes);
    const out: { offset: number; length: number }[] = [];
    let at = offset;
    while (at < end) {
      const data = c.lseek(this.#handle.fd, at, SEEK_DATA);
      if (data < 0 || data >= end) break; // ENXIO: no data past `at`
      const hole = c.lseek(this.#handle.fd, data, SEEK_HOLE);
      if (hole < 0) return undefined;
      out.push({ offset: data, length: Math.min(hole, end) - data });
      at = hole;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.#writeback; // the call holds the fd: never close it under koffi's thread
    await this.#handle.close();
  }
}

/**
 * Makes a rename or a new file in `dir` durable: fsync of the directory, so that after a
 * crash the name points at the new file (the file's own data is flushed before).
 */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** One write seen by a {@link MemoryFile}. */
export interface RecordedWrite {
  offset: number;
  length: number;
}

/** A file in memory that records every write, truncate and flush; for tests and fuzzing. */
export class MemoryFile implements StorageFile {
  readonly path: string;
  readonly writable: boolean;
  #data: Uint8Array;
  #length: number;
  /** Every write, in order; a read-only open must leave this empty. */
  readonly writes: RecordedWrite[] = [];
  flushes = 0;

  constructor(initial: Uint8Array = new Uint8Array(), options: { writable?: boolean; path?: string } = {}) {
    this.#data = new Uint8Array(initial);
    this.#length = initial.length;
    this.writable = options.writable ?? true;
    this.path = options.path ?? "memory";
  }

  /** A copy of the current contents. */
  bytes(): Uint8Array {
    return this.#data.slice(0, this.#length);
  }

  size(): Promise<number> {
    return Promise.resolve(this.#length);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (offset < this.#length) out.set(this.#data.subarray(offset, Math.min(this.#length, offset + length)));
    return Promise.resolve(out);
  }

  #ensure(length: number): void {
    if (length <= this.#data.length) return;
    const grown = new Uint8Array(Math.max(length, this.#data.length * 2));
    grown.set(this.#data.subarray(0, this.#length));
    this.#data = grown;
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    this.writes.push({ offset, length: data.length });
    if (!this.writable) throw new BugError(`${this.path}: write on a read-only file`);
    this.#ensure(offset + data.length);
    if (offset > this.#length) this.#data.fill(0, this.#length, offset);
    this.#data.set(data, offset);
    this.#length = Math.max(this.#length, offset + data.length);
    return Promise.resolve();
  }

  truncate(sizeBytes: number): Promise<void> {
    this.writes.push({ offset: sizeBytes, length: -1 });
    if (!this.writable) throw new BugError(`${this.path}: truncate on a read-only file`);
    this.#ensure(sizeBytes);
    if (sizeBytes > this.#length) this.#data.fill(0, this.#length, sizeBytes);
    this.#length = sizeBytes;
    return Promise.resolve();
  }

  flush(): Promise<void> {
    this.flushes++;
    return Promise.resolve();
  }

  async punchHole(offset: number, length: number): Promise<void> {
    await this.write(offset, new Uint8Array(Math.max(0, Math.min(length, this.#length - offset))));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Raised by a {@link FaultFile} at its cut point: the "machine" lost power here. */
export class PowerCut extends Error {
  constructor() {
    super("power cut (fault injection)");
  }
}

/**
 * A file that lets exactly `cutAfter` writes and truncates through, then throws
 * {@link PowerCut} on every later call, like a machine that lost power. With `torn`, the
 * cut write lands half-way, in whole 512-byte sectors (a sector is written atomically). {@link FaultFile.crashImage} gives what a disk would hold
 * after the crash: everything written (`keepUnflushed`) or only what was flushed.
 */
export class FaultFile implements StorageFile {
  readonly path: string;
  readonly writable = true;
  readonly #live: MemoryFile;
  #durable: Uint8Array;
  #ops = 0;
  readonly #cutAfter: number;
  readonly #torn: boolean;
  #cut = false;

  constructor(initial: Uint8Array, options: { cutAfter: number; torn?: boolean; path?: string }) {
    this.#live = new MemoryFile(initial, { path: options.path ?? "fault" });
    this.#durable = new Uint8Array(initial);
    this.#cutAfter = options.cutAfter;
    this.#torn = options.torn ?? false;
    this.path = options.path ?? "fault";
  }

  /** Writes and truncates seen so far (through or refused). */
  get operations(): number {
    return this.#ops;
  }

  get wasCut(): boolean {
    return this.#cut;
  }

  /** The bytes on "disk" after the crash. */
  crashImage(keepUnflushed: boolean): Uint8Array {
    return keepUnflushed ? this.#live.bytes() : new Uint8Array(this.#durable);
  }

  #gate(): boolean {
    if (this.#cut) throw new PowerCut();
    this.#ops++;
    if (this.#ops > this.#cutAfter) {
      this.#cut = true;
      return false;
    }
    return true;
  }

  size(): Promise<number> {
    if (this.#cut) throw new PowerCut();
    return this.#live.size();
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    if (this.#cut) throw new PowerCut();
    return this.#live.read(offset, length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (!this.#gate()) {
      // Disks write a 512-byte sector whole or not at all: a torn write keeps whole sectors.
      const keep = Math.floor(data.length / 2 / 512) * 512;
      if (this.#torn && keep > 0) await this.#live.write(offset, data.subarray(0, keep));
      throw new PowerCut();
    }
    await this.#live.write(offset, data);
  }

  async truncate(sizeBytes: number): Promise<void> {
    if (!this.#gate()) throw new PowerCut();
    await this.#live.truncate(sizeBytes);
  }

  flush(): Promise<void> {
    if (this.#cut) throw new PowerCut();
    this.#durable = this.#live.bytes();
    return Promise.resolve();
  }

  async punchHole(offset: number, length: number): Promise<void> {
    if (!this.#gate()) throw new PowerCut();
    await this.#live.punchHole(offset, length);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * A read-only view of a file with writes kept in memory on top: how a read-only open
 * replays a VHDX log without touching the file.
 */
export class OverlayFile implements StorageFile {
  readonly path: string;
  readonly writable = true;
  readonly #base: StorageFile;
  readonly #chunks = new Map<number, Uint8Array>();
  #sizeBytes: number | undefined;
  static readonly #CHUNK = 4096;

  constructor(base: StorageFile) {
    this.#base = base;
    this.path = base.path;
  }

  async size(): Promise<number> {
    return this.#sizeBytes ?? (await this.#base.size());
  }

  async #chunk(index: number): Promise<Uint8Array> {
    let chunk = this.#chunks.get(index);
    if (chunk === undefined) {
      chunk = await this.#base.read(index * OverlayFile.#CHUNK, OverlayFile.#CHUNK);
      this.#chunks.set(index, chunk);
    }
    return chunk;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = await this.#base.read(offset, length);
    if (this.#chunks.size === 0) return out;
    const first = Math.floor(offset / OverlayFile.#CHUNK);
    const last = Math.floor((offset + length - 1) / OverlayFile.#CHUNK);
    for (let index = first; index <= last; index++) {
      const chunk = this.#chunks.get(index);
      if (chunk === undefined) continue;
      const chunkStart = index * OverlayFile.#CHUNK;
      const from = Math.max(offset, chunkStart);
      const to = Math.min(offset + length, chunkStart + OverlayFile.#CHUNK);
      out.set(chunk.subarray(from - chunkStart, to - chunkStart), from - offset);
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    let at = 0;
    while (at < data.length) {
      const index = Math.floor((offset + at) / OverlayFile.#CHUNK);
      const within = (offset + at) % OverlayFile.#CHUNK;
      const take = Math.min(OverlayFile.#CHUNK - within, data.length - at);
      const chunk = await this.#chunk(index);
      chunk.set(data.subarray(at, at + take), within);
      at += take;
    }
    this.#sizeBytes = Math.max(await this.size(), offset + data.length);
  }

  truncate(sizeBytes: number): Promise<void> {
    this.#sizeBytes = sizeBytes;
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  punchHole(offset: number, length: number): Promise<void> {
    return this.write(offset, new Uint8Array(length));
  }

  /** Closes the file underneath; the writes held in memory are dropped. */
  close(): Promise<void> {
    return this.#base.close();
  }
}

/** Refuses a write to a read-only image with the documented error. */
export function readonlyError(path: string): DiskError {
  return new DiskError(`${path}: image is open read-only`, "disk.readonly");
}
