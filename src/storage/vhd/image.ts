/**
 * VHD images (fixed, dynamic, differencing). `format.ts` says what the bytes are; this
 * file decides what to write and in which order. VHD has no log, so a new block is
 * written so that a crash at any point leaves an image that opens:
 * 1. the footer is written at the new end of the file (the old one is still in place);
 * 2. the block's sector bitmap and data are written (over the old footer), then flushed;
 * 3. the BAT entry is written in place (one 4-byte field in one sector).
 * A crash before 3 leaves an unreferenced block (space, not data, is lost); the opener
 * falls back to the footer copy at offset 0 when the last sector is not a footer.
 */
import type { AllocationRange, BlockImage, DiskType } from "../block-image.js";
import { alignWrite, assertNoDataPast, bitmapRuns, blockSpans, bytesAllEqual, checkRange, Mutex, namingFile, pushDataRun, pushRange, readFileInto, type SectorRun } from "../blocks.js";
import { DiskError, DiskFormatError } from "../errors.js";
import { readonlyError, type StorageFile } from "../file.js";
import { guidToString, newGuid } from "../guid.js";
import {
  bitmapBytes,
  chsGeometry,
  CREATOR_APPLICATION,
  CREATOR_HOST_OS_WINDOWS,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  DYNAMIC_HEADER_SIZE,
  FIXED_DATA_OFFSET,
  FOOTER_FEATURES_RESERVED,
  FOOTER_SIZE,
  MAX_VHD_SIZE,
  parseBat,
  parseDynamicHeader,
  parseFooter,
  PLATFORM_CODE_W2KU,
  PLATFORM_CODE_W2RU,
  serializeDynamicHeader,
  serializeFooter,
  VHD_EPOCH_SECONDS,
  vhdChecksum,
  type ReservedRange,
  type VhdDynamicHeader,
  type VhdFooter,
} from "./format.js";

/** Parent paths a differencing VHD names, relative (W2ru) first. */
export interface VhdParentNames {
  readonly relativePath: string | undefined;
  readonly absolutePath: string | undefined;
  readonly unicodeName: string;
}

export type VhdParentOpener = (names: VhdParentNames, child: string) => Promise<BlockImage & { uniqueId?: Uint8Array }>;

export interface VhdCreateOptions {
  readonly sizeBytes: number;
  readonly type: DiskType;
  readonly blockSizeBytes?: number;
  readonly parent?: { readonly image: VhdImage; readonly relativePath: string; readonly absolutePath: string };
  /** No flushes between a block's data and its BAT entry: for temporary files only (convert). */
  readonly bulk?: boolean;
}

const ALL_ONES = 0xff;

/** A VHD image. Use {@link VhdImage.open} or {@link VhdImage.create}. */
export class VhdImage implements BlockImage {
  readonly format = "vhd";
  readonly path: string;
  readonly readonly: boolean;
  readonly logicalSectorBytes = 512;
  readonly physicalSectorBytes = 512;
  readonly parent: (BlockImage & { uniqueId?: Uint8Array }) | undefined;
  /** True when the footer at the end was bad and the copy at offset 0 was used. */
  readonly usedFooterCopy: boolean;
  readonly #file: StorageFile;
  #footer: VhdFooter;
  #dynamic: VhdDynamicHeader | undefined;
  #bat: Float64Array;
  readonly #bitmaps = new Map<number, Uint8Array>();
  readonly #mutex = new Mutex();
  #bulk = false;
  /** Bulk mode: BAT entries and the footer wait for flush or close. */
  #bulkDirty = false;
  #dataEnd: number;
  #closed = false;

  private constructor(file: StorageFile, readonly: boolean, footer: VhdFooter, dynamic: VhdDynamicHeader | undefined, bat: Float64Array, dataEnd: number, parent: VhdImage["parent"], usedFooterCopy: boolean) {
    this.#file = file;
    this.path = file.path;
    this.readonly = readonly;
    this.#footer = footer;
    this.#dynamic = dynamic;
    this.#bat = bat;
    this.#dataEnd = dataEnd;
    this.parent = parent;
    this.usedFooterCopy = usedFooterCopy;
  }

  get type(): DiskType {
    return this.#footer.diskType === DISK_TYPE_FIXED ? "fixed" : this.#footer.diskType === DISK_TYPE_DYNAMIC ? "dynamic" : "differencing";
  }
  get sizeBytes(): number {
    return this.#footer.currentSizeBytes;
  }
  get blockSizeBytes(): number {
    return this.#dynamic?.blockSizeBytes ?? 512;
  }
  /** The footer's unique id, which children record as their parent's. */
  get uniqueId(): Uint8Array {
    return this.#footer.uniqueId;
  }
  get creatorApplication(): string {
    return this.#footer.creatorApplication;
  }
  /** The footer's creation time, in seconds since 2000-01-01 UTC. */
  get timestamp(): number {
    return this.#footer.timestamp;
  }
  get identifier(): string {
    return guidToString(this.#footer.uniqueId);
  }

  /**
   * Opens a VHD: the footer (or its copy at offset 0), the dynamic header, the BAT, and
   * for a differencing disk its parent (whose unique id must match).
   * @throws {DiskFormatError} `vhd.*`. @throws {DiskError} `disk.parent-*`.
   */
  static open(file: StorageFile, options: { readonly: boolean; openParent?: VhdParentOpener }): Promise<VhdImage> {
    return namingFile(file.path, () => VhdImage.#open(file, options));
  }

  static async #open(file: StorageFile, options: { readonly: boolean; openParent?: VhdParentOpener }): Promise<VhdImage> {
    const readonly = options.readonly || !file.writable;
    const fileSizeBytes = await file.size();
    if (fileSizeBytes < FOOTER_SIZE) throw new DiskFormatError("vhd.truncated", { structure: "file", message: `${fileSizeBytes} bytes cannot hold a 512-byte footer` });
    const tailAt = fileSizeBytes - (fileSizeBytes % 512 === 0 ? FOOTER_SIZE : fileSizeBytes % 512);
    let footer: VhdFooter;
    let usedFooterCopy = false;
    try {
      footer = parseFooter(await file.read(tailAt, FOOTER_SIZE), tailAt);
    } catch (error: unknown) {
      if (!(error instanceof DiskFormatError)) throw error;
      try {
        footer = parseFooter(await file.read(0, FOOTER_SIZE), 0);
      } catch {
        throw error;
      }
      if (footer.diskType === DISK_TYPE_FIXED) throw error;
      usedFooterCopy = true;
    }
    if (footer.diskType === DISK_TYPE_FIXED) {
      if (footer.currentSizeBytes > tailAt) throw new DiskFormatError("vhd.bad-footer", { structure: "footer", field: "CurrentSize", offset: tailAt + 48, message: `0x${footer.currentSizeBytes.toString(16)} is more than the 0x${tailAt.toString(16)} data bytes in the file` });
      return new VhdImage(file, readonly, footer, undefined, new Float64Array(), tailAt, undefined, false);
    }
    if (footer.dataOffset % 512n !== 0n || footer.dataOffset + BigInt(DYNAMIC_HEADER_SIZE) > BigInt(fileSizeBytes)) {
      throw new DiskFormatError("vhd.bad-footer", { structure: "footer", field: "DataOffset", offset: tailAt + 16, message: `0x${footer.dataOffset.toString(16)} is outside the file` });
    }
    const headerAt = Number(footer.dataOffset);
    const dynamic = parseDynamicHeader(await file.read(headerAt, DYNAMIC_HEADER_SIZE), headerAt, fileSizeBytes);
    const blocks = Math.ceil(footer.currentSizeBytes / dynamic.blockSizeBytes);
    if (dynamic.maxTableEntries < blocks) {
      throw new DiskFormatError("vhd.bad-dynamic-header", { structure: "dynamic disk header", field: "MaxTableEntries", offset: headerAt + 28, message: `${dynamic.maxTableEntries} entries cannot cover ${blocks} blocks` });
    }
    const batBytes = Math.ceil((dynamic.maxTableEntries * 4) / 512) * 512;
    const reserved: ReservedRange[] = [
      { start: headerAt, end: headerAt + DYNAMIC_HEADER_SIZE, name: "dynamic disk header" },
      { start: dynamic.tableOffset, end: dynamic.tableOffset + dynamic.maxTableEntries * 4, name: "BAT" },
      ...dynamic.parentLocators.map((l, i) => ({ start: l.dataOffset, end: l.dataOffset + l.dataLengthBytes, name: `parent locator ${i}` })),
    ];
    const bat = parseBat(await file.read(dynamic.tableOffset, blocks * 4), dynamic.tableOffset, { blocks, blockSizeBytes: dynamic.blockSizeBytes, fileSizeBytes: usedFooterCopy ? fileSizeBytes : tailAt, reserved });
    let dataEnd = Math.max(dynamic.tableOffset + batBytes, ...reserved.map((r) => r.end));
    const span = bitmapBytes(dynamic.blockSizeBytes) + dynamic.blockSizeBytes;
    for (const start of bat) if (start >= 0) dataEnd = Math.max(dataEnd, start + span);
    if (!usedFooterCopy) dataEnd = Math.max(dataEnd, tailAt);
    let parent: VhdImage["parent"];
    if (footer.diskType === DISK_TYPE_DIFFERENCING) {
      if (options.openParent === undefined) throw new DiskError(`${file.path}: differencing image, but no way to open its parent was given`, "disk.parent-missing");
      const names: VhdParentNames = { relativePath: undefined, absolutePath: undefined, unicodeName: dynamic.parentUnicodeName };
      const mutable = names as { relativePath: string | undefined; absolutePath: string | undefined };
      for (const l of dynamic.parentLocators) {
        if (l.platformCode !== PLATFORM_CODE_W2RU && l.platformCode !== PLATFORM_CODE_W2KU) continue;
        const text = Buffer.from(await file.read(l.dataOffset, l.dataLengthBytes)).toString("utf16le");
        if (l.platformCode === PLATFORM_CODE_W2RU) mutable.relativePath = text;
        else mutable.absolutePath = text;
      }
      parent = await options.openParent(names, file.path);
      const actual = parent.uniqueId;
      if (actual === undefined || !Buffer.from(actual).equals(dynamic.parentUniqueId)) {
        await parent.close();
        throw new DiskError(`${file.path}: parent ${parent.path} has unique id ${actual ? guidToString(actual) : "(none: not a VHD)"}, the child expects ${guidToString(dynamic.parentUniqueId)}`, "disk.parent-mismatch");
      }
      if (parent.sizeBytes < footer.currentSizeBytes) {
        await parent.close();
        throw new DiskError(`${file.path}: parent ${parent.path} is ${parent.sizeBytes} bytes, smaller than the child's ${footer.currentSizeBytes}`, "disk.parent-mismatch");
      }
    }
    return new VhdImage(file, readonly, footer, dynamic, bat, dataEnd, parent, usedFooterCopy);
  }

  /**
   * Makes a new VHD in an empty file, with creator application `win ` (so other tools
   * trust the size field) and a CHS geometry from the spec. Dynamic and differencing
   * disks use 2 MiB blocks by default, as Hyper-V.
   * @throws {DiskError} `disk.bad-size` above 2040 GiB or for sizes not a multiple of 512.
   */
  static async create(file: StorageFile, o: VhdCreateOptions): Promise<VhdImage> {
    const sizeBytes = o.parent ? o.parent.image.sizeBytes : o.sizeBytes;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_VHD_SIZE || sizeBytes % 512 !== 0) {
      throw new DiskError(`${file.path}: size ${sizeBytes} is not a multiple of 512 bytes up to 2040 GiB (the VHD limit)`, "disk.bad-size");
    }
    if (o.type === "differencing" && o.parent === undefined) throw new DiskError(`${file.path}: a differencing image needs a parent`, "disk.parent-missing");
    const blockSizeBytes = o.blockSizeBytes ?? 2 * 1024 * 1024;
    if (blockSizeBytes < 4096 || blockSizeBytes > 256 * 1024 * 1024 || (blockSizeBytes & (blockSizeBytes - 1)) !== 0) {
      throw new DiskError(`${file.path}: block size ${blockSizeBytes} is not a power of 2 from 4 KiB to 256 MiB`, "disk.bad-size");
    }
    const geometry = chsGeometry(sizeBytes);
    const diskType = o.type === "fixed" ? DISK_TYPE_FIXED : o.type === "dynamic" ? DISK_TYPE_DYNAMIC : DISK_TYPE_DIFFERENCING;
    const footer: VhdFooter = {
      features: FOOTER_FEATURES_RESERVED,
      dataOffset: o.type === "fixed" ? FIXED_DATA_OFFSET : 512n,
      timestamp: vhdTimestamp(new Date()),
      creatorApplication: CREATOR_APPLICATION,
      creatorVersion: 0x000a0000,
      creatorHostOs: CREATOR_HOST_OS_WINDOWS,
      originalSizeBytes: sizeBytes,
      currentSizeBytes: sizeBytes,
      ...geometry,
      diskType,
      uniqueId: newGuid(),
      savedState: 0,
    };
    const footerBytes = serializeFooter(footer);
    if (o.type === "fixed") {
      await file.truncate(sizeBytes);
      await file.write(sizeBytes, footerBytes);
      await file.flush();
      return VhdImage.open(file, { readonly: false });
    }
    const entries = Math.ceil(sizeBytes / blockSizeBytes);
    const tableOffset = 512 + DYNAMIC_HEADER_SIZE;
    const batBytes = Math.ceil((entries * 4) / 512) * 512;
    let cursor = tableOffset + batBytes;
    const locators: { platformCode: number; dataSpaceBytes: number; dataLengthBytes: number; dataOffset: number }[] = [];
    const locatorData: { at: number; bytes: Uint8Array }[] = [];
    if (o.parent) {
      for (const [platformCode, text] of [
        [PLATFORM_CODE_W2RU, o.parent.relativePath],
        [PLATFORM_CODE_W2KU, o.parent.absolutePath],
      ] as const) {
        const bytes = Buffer.from(text, "utf16le");
        const space = Math.max(512, Math.ceil(bytes.length / 512) * 512);
        locators.push({ platformCode, dataSpaceBytes: space, dataLengthBytes: bytes.length, dataOffset: cursor });
        locatorData.push({ at: cursor, bytes });
        cursor += space;
      }
    }
    const parentFooter = o.parent === undefined ? undefined : o.parent.image.#footer;
    const dynamic: VhdDynamicHeader = {
      tableOffset,
      maxTableEntries: entries,
      blockSizeBytes,
      parentUniqueId: parentFooter?.uniqueId ?? new Uint8Array(16),
      parentTimestamp: parentFooter?.timestamp ?? 0,
      parentUnicodeName: o.parent ? (o.parent.relativePath.split(/[\\/]/).pop() ?? "") : "",
      parentLocators: locators,
    };
    await file.write(tableOffset, new Uint8Array(batBytes).fill(0xff));
    for (const l of locatorData) await file.write(l.at, l.bytes);
    await file.write(512, serializeDynamicHeader(dynamic));
    await file.write(cursor, footerBytes);
    await file.write(0, footerBytes);
    await file.flush();
    const parent = o.parent?.image;
    const image = await VhdImage.open(file, parent === undefined ? { readonly: false } : { readonly: false, openParent: () => Promise.resolve(parent) });
    image.#bulk = o.bulk ?? false;
    return image;
  }

  // ------------------------------------------------------------ blocks

  #bitmapSize(): number {
    return bitmapBytes(this.blockSizeBytes);
  }

  async #bitmap(block: number): Promise<Uint8Array> {
    let bitmap = this.#bitmaps.get(block);
    if (bitmap === undefined) {
      bitmap = await this.#file.read(this.#bat[block] ?? 0, this.#bitmapSize());
      this.#bitmaps.set(block, bitmap);
    }
    return bitmap;
  }

  /** Runs within an allocated block: present sectors (bit set, MSB first) or not. */
  async #runs(block: number, within: number, length: number): Promise<SectorRun[]> {
    return bitmapRuns(await this.#bitmap(block), { firstSector: 0, within, length, sectorBytes: 512, bitOrder: "msb-first" });
  }

  async #fullyPresent(block: number, within: number, length: number): Promise<boolean> {
    // A cached bitmap without an await: convert asks this once per read, and each async
    // layer is a promise and more code for V8 to optimize during a short run.
    return allPresent(this.#bitmaps.get(block) ?? (await this.#bitmap(block)), within, length);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this, offset, length);
    if (this.#dynamic === undefined) return this.#file.read(offset, length);
    const blockSize = this.#dynamic.blockSizeBytes;
    // Fast path: within one allocated block whose sectors are all present, no copy.
    const firstBlock = Math.floor(offset / blockSize);
    const start = this.#bat[firstBlock] ?? -1;
    const within = offset - firstBlock * blockSize;
    if (length > 0 && start >= 0 && within + length <= blockSize && (await this.#fullyPresent(firstBlock, within, length))) {
      return this.#file.read(start + this.#bitmapSize() + within, length);
    }
    const out = new Uint8Array(length);
    for (const { pos, block, within, take, done } of blockSpans(offset, length, blockSize)) {
      const start = this.#bat[block] ?? -1;
      if (start < 0) {
        if (this.parent) out.set(await this.parent.read(pos, take), done);
      } else if (await this.#fullyPresent(block, within, take)) {
        out.set(await this.#file.read(start + this.#bitmapSize() + within, take), done);
      } else {
        for (const run of await this.#runs(block, within, take)) {
          const at = block * blockSize + run.start;
          if (run.present) out.set(await this.#file.read(start + this.#bitmapSize() + run.start, run.length), done + run.start - within);
          else if (this.parent) out.set(await this.parent.read(at, run.length), done + run.start - within);
        }
      }
    }
    return out;
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    checkRange(this, offset, into.length);
    if (this.#dynamic === undefined) {
      await readFileInto(this.#file, offset, into);
      return;
    }
    const blockSize = this.#dynamic.blockSizeBytes;
    const block = Math.floor(offset / blockSize);
    const start = this.#bat[block] ?? -1;
    const within = offset - block * blockSize;
    if (into.length > 0 && start >= 0 && within + into.length <= blockSize && allPresent(this.#bitmaps.get(block) ?? (await this.#bitmap(block)), within, into.length)) {
      await readFileInto(this.#file, start + this.#bitmapSize() + within, into);
      return;
    }
    into.set(await this.read(offset, into.length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    checkRange(this, offset, data.length);
    const aligned = await alignWrite(offset, data, 512, (o, l) => this.read(o, l));
    if (this.#dynamic === undefined) {
      await this.#file.write(aligned.offset, aligned.data);
      return;
    }
    for (const { block, within, take, done } of blockSpans(aligned.offset, aligned.data.length, this.#dynamic.blockSizeBytes)) {
      const piece = aligned.data.subarray(done, done + take);
      const start = this.#bat[block] ?? -1;
      if (start >= 0 && (await this.#fullyPresent(block, within, take))) {
        await this.#file.write(start + this.#bitmapSize() + within, piece);
      } else {
        await this.#mutex.run(() => this.#writeSlow(block, within, piece));
      }
    }
  }

  async #writeSlow(block: number, within: number, piece: Uint8Array): Promise<void> {
    const bitmapSize = this.#bitmapSize();
    const blockSize = this.blockSizeBytes;
    let start = this.#bat[block] ?? -1;
    if (start < 0) {
      start = this.#dataEnd;
      const newEnd = start + bitmapSize + blockSize;
      // A dynamic disk's new block is all present (zeros where not written, as Hyper-V
      // and QEMU do); a differencing disk's has only the written sectors present.
      const bitmap = new Uint8Array(bitmapSize).fill(this.parent ? 0 : ALL_ONES);
      if (this.parent) setBits(bitmap, within / 512, piece.length / 512);
      if (!this.#bulk) await this.#file.write(newEnd, serializeFooter(this.#footer));
      await this.#file.write(start, bitmap);
      await this.#file.write(start + bitmapSize + within, piece);
      if (this.#bulk) {
        this.#bulkDirty = true;
      } else {
        await this.#file.flush();
        const entry = new Uint8Array(4);
        new DataView(entry.buffer).setUint32(0, start / 512);
        await this.#file.write((this.#dynamic?.tableOffset ?? 0) + block * 4, entry);
      }
      this.#bat[block] = start;
      this.#bitmaps.set(block, bitmap);
      this.#dataEnd = newEnd;
      return;
    }
    await this.#file.write(start + bitmapSize + within, piece);
    const bitmap = await this.#bitmap(block);
    const first = within / 512;
    const count = piece.length / 512;
    setBits(bitmap, first, count);
    // The data is durable before the bitmap says it is there.
    if (!this.#bulk) await this.#file.flush();
    const from = Math.floor(first / 8 / 512) * 512;
    const to = Math.ceil((first + count) / 8 / 512) * 512;
    await this.#file.write(start + from, bitmap.subarray(from, to));
  }

  async flush(): Promise<void> {
    if (this.readonly) return;
    if (this.#bulk) await this.#mutex.run(() => this.#writeBulkMetadata());
    await this.#file.flush();
  }

  /** Bulk mode: the whole BAT in one write, then the footer after the last block. */
  async #writeBulkMetadata(): Promise<void> {
    if (!this.#bulkDirty || this.#dynamic === undefined) return;
    const bytes = new Uint8Array(Math.ceil((this.#dynamic.maxTableEntries * 4) / 512) * 512).fill(0xff);
    const view = new DataView(bytes.buffer);
    for (let block = 0; block < this.#bat.length; block++) {
      const start = this.#bat[block] ?? -1;
      if (start >= 0) view.setUint32(block * 4, start / 512);
    }
    await this.#file.write(this.#dynamic.tableOffset, bytes);
    await this.#file.write(this.#dataEnd, serializeFooter(this.#footer));
    this.#bulkDirty = false;
  }

  async discard(offset: number, length: number): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    checkRange(this, offset, length);
    if (this.#dynamic === undefined || this.parent !== undefined) {
      // Fixed disks keep their space; differencing disks must read zeros, not the parent.
      await this.#writeZeros(offset, length);
      return;
    }
    const blockSize = this.#dynamic.blockSizeBytes;
    for (const { pos, block, within, take } of blockSpans(offset, length, blockSize)) {
      if ((this.#bat[block] ?? -1) >= 0) {
        if (within === 0 && (take === blockSize || pos + take === this.sizeBytes)) {
          await this.#mutex.run(async () => {
            const entry = new Uint8Array(4).fill(0xff);
            await this.#file.write((this.#dynamic?.tableOffset ?? 0) + block * 4, entry);
            this.#bat[block] = -1;
            this.#bitmaps.delete(block);
          });
        } else {
          await this.write(pos, new Uint8Array(take));
        }
      }
    }
  }

  async #writeZeros(offset: number, length: number): Promise<void> {
    const chunk = 1 << 20;
    for (let at = 0; at < length; at += chunk) await this.write(offset + at, new Uint8Array(Math.min(chunk, length - at)));
  }

  async allocation(offset: number, length: number): Promise<AllocationRange[]> {
    checkRange(this, offset, length);
    const ranges: AllocationRange[] = [];
    const dataRanges = this.#file.dataRanges?.bind(this.#file);
    if (this.#dynamic === undefined) {
      // A fixed disk is the file's first bytes: its holes are zero runs, not data.
      pushDataRun(ranges, { offset, length, fileOffset: offset }, dataRanges);
      return ranges;
    }
    const blockSize = this.#dynamic.blockSizeBytes;
    for (const { pos, block, within, take } of blockSpans(offset, length, blockSize)) {
      const start = this.#bat[block] ?? -1;
      if (start < 0) {
        pushRange(ranges, { offset: pos, length: take, state: this.parent ? "parent" : "zero" });
      } else {
        for (const run of await this.#runs(block, within, take)) {
          const at = block * blockSize + run.start;
          if (run.present) pushDataRun(ranges, { offset: at, length: run.length, fileOffset: start + this.#bitmapSize() + run.start }, dataRanges);
          else pushRange(ranges, { offset: at, length: run.length, state: this.parent ? "parent" : "zero" });
        }
      }
    }
    return ranges;
  }

  allocatedBytes(): Promise<number> {
    return this.#file.size();
  }

  /**
   * Changes the virtual size: fixed disks move their footer (shrinking only when the
   * cut-off tail reads as zeros); dynamic disks within the BAT's capacity.
   * @throws {DiskError} `disk.bad-size`, `disk.unsupported`, `disk.readonly`.
   */
  async resize(sizeBytes: number): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_VHD_SIZE || sizeBytes % 512 !== 0) {
      throw new DiskError(`${this.path}: size ${sizeBytes} is not a multiple of 512 bytes up to 2040 GiB`, "disk.bad-size");
    }
    if (this.parent) throw new DiskError(`${this.path}: a differencing disk has its parent's size`, "disk.unsupported");
    await this.#mutex.run(async () => {
      await assertNoDataPast(this, sizeBytes);
      const footer: VhdFooter = { ...this.#footer, currentSizeBytes: sizeBytes, ...chsGeometry(sizeBytes) };
      const bytes = serializeFooter(footer);
      if (this.#dynamic === undefined) {
        await this.#file.write(sizeBytes, bytes);
        await this.#file.flush();
        if (sizeBytes > this.sizeBytes) await this.#file.write(this.sizeBytes, new Uint8Array(Math.min(512, sizeBytes - this.sizeBytes)));
        await this.#file.truncate(sizeBytes + 512);
      } else {
        const blocks = Math.ceil(sizeBytes / this.#dynamic.blockSizeBytes);
        if (blocks > this.#dynamic.maxTableEntries) await this.#moveBat(blocks);
        await this.#file.write(this.#dataEnd, bytes);
        await this.#file.write(0, bytes);
      }
      await this.#file.flush();
      this.#footer = footer;
    });
    if (this.#dynamic) {
      const blocks = Math.ceil(sizeBytes / this.#dynamic.blockSizeBytes);
      if (blocks > this.#bat.length) {
        const grown = new Float64Array(blocks).fill(-1);
        grown.set(this.#bat);
        this.#bat = grown;
      }
    }
  }

  /**
   * Grows the BAT past its room by moving it to the end of the file: (1) the BAT with
   * `entries` entries where the footer was, the unchanged footer after it, flush; (2) the
   * dynamic header's first sector (TableOffset, MaxTableEntries, Checksum: one atomic
   * sector) pointing at it, flush. A crash before (2) leaves the old BAT in use (and the
   * footer copy at offset 0 if the end was torn); after it, the new one, which holds the
   * same entries. The old BAT's sectors stay unused.
   */
  async #moveBat(entries: number): Promise<void> {
    const dynamic = this.#dynamic;
    if (dynamic === undefined) return;
    const headerAt = Number(this.#footer.dataOffset);
    const batBytes = Math.ceil((entries * 4) / 512) * 512;
    const table = this.#dataEnd;
    const bat = new Uint8Array(batBytes).fill(0xff);
    const view = new DataView(bat.buffer);
    this.#bat.forEach((start, block) => {
      if (start >= 0) view.setUint32(block * 4, start / 512);
    });
    await this.#file.write(table, bat);
    await this.#file.write(table + batBytes, serializeFooter(this.#footer));
    await this.#file.flush();
    const header = await this.#file.read(headerAt, DYNAMIC_HEADER_SIZE);
    const h = new DataView(header.buffer, header.byteOffset, header.byteLength);
    h.setBigUint64(16, BigInt(table));
    h.setUint32(28, entries);
    h.setUint32(36, vhdChecksum(header, 36));
    await this.#file.write(headerAt, header.subarray(0, 512));
    await this.#file.flush();
    this.#dynamic = { ...dynamic, tableOffset: table, maxTableEntries: entries };
    this.#dataEnd = table + batBytes;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (!this.readonly) {
        await this.#mutex.run(() => this.#writeBulkMetadata());
        if (this.usedFooterCopy) {
          // The end of the file was not a footer: put one right after the last block.
          await this.#file.write(this.#dataEnd, serializeFooter(this.#footer));
          await this.#file.truncate(this.#dataEnd + 512);
        }
        await this.#file.flush();
      }
      await this.#file.close();
    } finally {
      await this.parent?.close();
    }
  }
}

/** True when every sector of `[within, within + length)` has its bit set (MSB first). */
function allPresent(bitmap: Uint8Array, within: number, length: number): boolean {
  const first = Math.floor(within / 512);
  const end = Math.floor((within + length - 1) / 512) + 1;
  // Whole bytes of the bitmap in one memcmp (every convert read asks this of 2048
  // sectors), then the sectors before and after them bit by bit.
  const byteFrom = Math.ceil(first / 8);
  const byteTo = Math.floor(end / 8);
  if (byteFrom < byteTo && !bytesAllEqual(bitmap, byteFrom, byteTo, ALL_ONES)) return false;
  const present = (s: number): boolean => (((bitmap[s >> 3] ?? 0) >> (7 - (s & 7))) & 1) === 1;
  for (let s = first; s < Math.min(end, byteFrom * 8); s++) if (!present(s)) return false;
  for (let s = Math.max(first, byteTo * 8); s < end; s++) if (!present(s)) return false;
  return true;
}

function setBits(bitmap: Uint8Array, first: number, count: number): void {
  for (let s = first; s < first + count; s++) bitmap[s >> 3] = (bitmap[s >> 3] ?? 0) | (0x80 >> (s & 7));
}

/** Seconds since 2000-01-01 UTC, as VHD stores times. */
export function vhdTimestamp(date: Date): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH_SECONDS) >>> 0;
}
