/**
 * VHDX images: open (with log replay), create, read, write, discard, resize. What the
 * bytes mean is in `format.ts`; this file decides what to read and write, and in which
 * order so that a crash at any write leaves an image that opens with no flushed data lost:
 *
 * 1. a new block is made by growing the file, and its data is written there;
 * 2. the file is flushed (the data, and every earlier metadata change, are durable);
 * 3. the metadata change (BAT entries, sector bitmap sectors, metadata items) is written
 *    as one log entry at the start of the log, and the file flushed again;
 * 4. the change is written in place (replaying the entry after a crash does the same).
 *
 * Every entry starts at log offset 0 and names itself as the tail, so the log never holds
 * more than one entry header: a torn entry fails its checksum and nothing is replayed,
 * which is right because its change was never applied. On close, the header's LogGuid is
 * cleared, which other tools require (an image is always closed with an empty log).
 */
import type { AllocationRange, BlockImage, DiskType } from "../block-image.js";
import { alignWrite, assertNoDataPast, bitmapRuns, blockSpans, checkRange, Mutex, namingFile, pushDataRun, pushRange, readFileInto, type SectorRun } from "../blocks.js";
import { DiskError, DiskFormatError } from "../errors.js";
import { OverlayFile, readonlyError, type StorageFile } from "../file.js";
import { guidIsZero, guidToString, newGuid } from "../guid.js";
import {
  batGeometry,
  bitmapEntryIndex,
  chooseHeader,
  encodeBatEntry,
  findActiveSequence,
  HEADER_OFFSETS,
  HEADER_SECTION_SIZE,
  LOG_SECTOR_SIZE,
  maxSectorsPerEntry,
  MAX_VIRTUAL_DISK_SIZE,
  MiB,
  parseBat,
  parseFileIdentifier,
  parseMetadata,
  parseRegionTable,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  payloadEntryIndex,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
  serializeFileIdentifier,
  serializeHeader,
  serializeLogEntry,
  serializeMetadata,
  serializeRegionTable,
  BAT_REGION_GUID,
  METADATA_REGION_GUID,
  VIRTUAL_DISK_SIZE_GUID,
  type Bat,
  type BatGeometry,
  type LogEntry,
  type ParentLocator,
  type VhdxHeader,
  type VhdxMetadata,
  type VhdxRegions,
} from "./format.js";

/** Opens the parent of a differencing VHDX from its locator (paths are resolved by the caller). */
export type ParentOpener = (locator: ParentLocator, child: string) => Promise<BlockImage & { dataWriteGuid?: Uint8Array }>;

export interface VhdxOpenOptions {
  readonly readonly: boolean;
  /** Needed for differencing images. */
  readonly openParent?: ParentOpener;
  /**
   * Keep the DataWriteGuid while writing (`merge` writes a child's data into its parent:
   * the child must stay valid if the merge is cut short and re-run).
   */
  readonly keepDataWriteGuid?: boolean;
  /**
   * Write metadata in place, without the log and without flushes between steps; only for
   * an image nobody else sees until it is flushed and closed (`convert` and `compact`
   * write a temporary file and rename it). A crash leaves a file that may not open.
   */
  readonly bulk?: boolean;
}

export interface VhdxCreateOptions {
  readonly sizeBytes: number;
  readonly type: DiskType;
  readonly blockSizeBytes?: number;
  readonly logicalSectorBytes?: number;
  readonly physicalSectorBytes?: number;
  /** For differencing images: the parent, opened, and the locator paths to store. */
  readonly parent?: { readonly image: VhdxImage; readonly relativePath: string; readonly absolutePath: string };
  readonly creator?: string;
  /** See {@link VhdxOpenOptions.bulk}. */
  readonly bulk?: boolean;
}

const LOG_OFFSET = 1 * MiB;
const LOG_LENGTH = 1 * MiB;
const METADATA_OFFSET = 2 * MiB;
const METADATA_LENGTH = 1 * MiB;
const BAT_OFFSET = 3 * MiB;

const roundUp = (value: number, to: number): number => Math.ceil(value / to) * to;

/** A VHDX image (fixed, dynamic or differencing). Use {@link VhdxImage.open} or {@link VhdxImage.create}. */
export class VhdxImage implements BlockImage {
  readonly format = "vhdx";
  readonly path: string;
  readonly readonly: boolean;
  readonly parent: (BlockImage & { dataWriteGuid?: Uint8Array }) | undefined;
  /** True when the open found log entries to replay (the image had not been closed cleanly). */
  readonly replayedLog: boolean;
  readonly #file: StorageFile;
  #header: VhdxHeader;
  #headerIndex: number;
  readonly #regions: VhdxRegions;
  #meta: VhdxMetadata;
  #geometry: BatGeometry;
  readonly #bat: Bat;
  readonly #bitmaps = new Map<number, Uint8Array>();
  readonly #mutex = new Mutex();
  #fileEnd: number;
  #sessionStarted = false;
  #sequence: bigint;
  readonly #keepDataWriteGuid: boolean;
  readonly #bulk: boolean;
  /** Bulk mode: BAT entries and sector bitmap chunks changed since the last flush. */
  #bulkDirty = false;
  readonly #bulkBitmaps = new Set<number>();
  #closed = false;

  private constructor(o: {
    file: StorageFile;
    readonly: boolean;
    header: VhdxHeader;
    headerIndex: number;
    regions: VhdxRegions;
    meta: VhdxMetadata;
    bat: Bat;
    fileEnd: number;
    parent: (BlockImage & { dataWriteGuid?: Uint8Array }) | undefined;
    replayedLog: boolean;
    sequence: bigint;
    keepDataWriteGuid: boolean;
    bulk: boolean;
  }) {
    this.#file = o.file;
    this.path = o.file.path;
    this.readonly = o.readonly;
    this.#header = o.header;
    this.#headerIndex = o.headerIndex;
    this.#regions = o.regions;
    this.#meta = o.meta;
    this.#geometry = batGeometry(o.meta.virtualDiskSizeBytes, o.meta.blockSizeBytes, o.meta.logicalSectorBytes, o.meta.hasParent);
    this.#bat = o.bat;
    this.#fileEnd = o.fileEnd;
    this.parent = o.parent;
    this.replayedLog = o.replayedLog;
    this.#sequence = o.sequence;
    this.#keepDataWriteGuid = o.keepDataWriteGuid;
    this.#bulk = o.bulk;
  }

  get type(): DiskType {
    return this.#meta.hasParent ? "differencing" : this.#meta.leaveBlocksAllocated ? "fixed" : "dynamic";
  }
  get sizeBytes(): number {
    return this.#meta.virtualDiskSizeBytes;
  }
  get logicalSectorBytes(): number {
    return this.#meta.logicalSectorBytes;
  }
  get physicalSectorBytes(): number {
    return this.#meta.physicalSectorBytes;
  }
  get blockSizeBytes(): number {
    return this.#meta.blockSizeBytes;
  }
  /** The DataWriteGuid children link to (`parent_linkage`). */
  get dataWriteGuid(): Uint8Array {
    return this.#header.dataWriteGuid;
  }
  get virtualDiskId(): string {
    return guidToString(this.#meta.virtualDiskId);
  }
  get parentLocator(): ParentLocator | undefined {
    return this.#meta.parentLocator;
  }

  /**
   * Opens a VHDX: checks the file identifier, picks the current header, replays a pending
   * log (in memory only when `readonly`), checks the region table, metadata and every BAT
   * entry, and opens the parent of a differencing image.
   * @throws {DiskFormatError} `vhdx.*` naming the structure, field, offset and value.
   * @throws {DiskError} `disk.parent-*` when the parent is missing or does not match.
   */
  static open(file: StorageFile, options: VhdxOpenOptions): Promise<VhdxImage> {
    return namingFile(file.path, () => VhdxImage.#open(file, options));
  }

  static async #open(baseFile: StorageFile, options: VhdxOpenOptions): Promise<VhdxImage> {
    const readonly = options.readonly || !baseFile.writable;
    let file = baseFile;
    const fileSizeBytes = await file.size();
    if (fileSizeBytes < HEADER_SECTION_SIZE) {
      throw new DiskFormatError("vhdx.truncated", { structure: "file", message: `${fileSizeBytes} bytes is shorter than the 1 MiB header section` });
    }
    const head = await file.read(0, REGION_TABLE_OFFSETS[1] + REGION_TABLE_SIZE);
    parseFileIdentifier(head);
    const { header, index } = chooseHeader([head.subarray(HEADER_OFFSETS[0], HEADER_OFFSETS[0] + 4096), head.subarray(HEADER_OFFSETS[1], HEADER_OFFSETS[1] + 4096)], fileSizeBytes);
    let replayedLog = false;
    let sequence = 0n;
    let currentHeader = header;
    let headerIndex = index;
    if (!guidIsZero(header.logGuid)) {
      const log = await file.read(header.logOffset, header.logLengthBytes);
      const entries = findActiveSequence(log, header.logGuid);
      if (entries.length > 0) {
        replayedLog = true;
        if (readonly) file = new OverlayFile(baseFile);
        await replay(file, entries, fileSizeBytes, { offset: header.logOffset, lengthBytes: header.logLengthBytes });
        sequence = entries[entries.length - 1]?.sequenceNumber ?? 0n;
      }
      if (!readonly) {
        // The log is applied (or held nothing): record that before anything else.
        await file.flush();
        const next = { ...header, logGuid: new Uint8Array(16) };
        headerIndex = await writeHeaderPair(file, next, index);
        currentHeader = { ...next, sequenceNumber: header.sequenceNumber + 2n };
      }
    }
    const sizeAfterReplay = await file.size();
    const logSpan = { offset: currentHeader.logOffset, lengthBytes: currentHeader.logLengthBytes };
    let regions: VhdxRegions;
    try {
      regions = parseRegionTable(head.subarray(REGION_TABLE_OFFSETS[0], REGION_TABLE_OFFSETS[0] + REGION_TABLE_SIZE), 0, sizeAfterReplay, logSpan);
    } catch (error: unknown) {
      if (!(error instanceof DiskFormatError)) throw error;
      try {
        regions = parseRegionTable(head.subarray(REGION_TABLE_OFFSETS[1], REGION_TABLE_OFFSETS[1] + REGION_TABLE_SIZE), 1, sizeAfterReplay, logSpan);
      } catch {
        throw error;
      }
    }
    if (regions.bat.fileOffset < regions.metadata.fileOffset + regions.metadata.lengthBytes && regions.metadata.fileOffset < regions.bat.fileOffset + regions.bat.lengthBytes) {
      throw new DiskFormatError("vhdx.bad-region-table", { structure: "region table", field: "BAT FileOffset", offset: REGION_TABLE_OFFSETS[0], message: "BAT region overlaps the metadata region" });
    }
    const meta = parseMetadata(await file.read(regions.metadata.fileOffset, regions.metadata.lengthBytes), regions.metadata.fileOffset);
    const geometry = batGeometry(meta.virtualDiskSizeBytes, meta.blockSizeBytes, meta.logicalSectorBytes, meta.hasParent);
    if (geometry.totalEntries * 8 > regions.bat.lengthBytes) {
      throw new DiskFormatError("vhdx.bad-bat", { structure: "BAT", field: "Length", offset: regions.bat.fileOffset, message: `region of ${regions.bat.lengthBytes} bytes cannot hold the ${geometry.totalEntries} entries a ${meta.virtualDiskSizeBytes}-byte disk needs` });
    }
    const bat = parseBat(await file.read(regions.bat.fileOffset, geometry.totalEntries * 8), regions.bat.fileOffset, geometry, {
      blockSizeBytes: meta.blockSizeBytes,
      hasParent: meta.hasParent,
      fileSizeBytes: sizeAfterReplay,
      reserved: [
        { start: 0, end: HEADER_SECTION_SIZE, name: "header section" },
        { start: logSpan.offset, end: logSpan.offset + logSpan.lengthBytes, name: "log" },
        { start: regions.bat.fileOffset, end: regions.bat.fileOffset + regions.bat.lengthBytes, name: "BAT region" },
        { start: regions.metadata.fileOffset, end: regions.metadata.fileOffset + regions.metadata.lengthBytes, name: "metadata region" },
      ],
    });
    let parent: (BlockImage & { dataWriteGuid?: Uint8Array }) | undefined;
    if (meta.hasParent) {
      const locator = meta.parentLocator;
      if (options.openParent === undefined || locator === undefined) {
        throw new DiskError(`${baseFile.path}: differencing image, but no way to open its parent was given`, "disk.parent-missing");
      }
      parent = await options.openParent(locator, baseFile.path);
      const linkage = (locator.get("parent_linkage") ?? "").replace(/[{}]/g, "").toUpperCase();
      const linkage2 = (locator.get("parent_linkage2") ?? "").replace(/[{}]/g, "").toUpperCase();
      const actual = parent.dataWriteGuid === undefined ? "" : guidToString(parent.dataWriteGuid);
      if (actual !== linkage && actual !== linkage2) {
        await parent.close();
        throw new DiskError(`${baseFile.path}: parent ${parent.path} has DataWriteGuid ${actual || "(none: not a VHDX)"}, but parent_linkage is ${linkage}`, "disk.parent-mismatch");
      }
      if (parent.sizeBytes !== meta.virtualDiskSizeBytes) {
        await parent.close();
        throw new DiskError(`${baseFile.path}: parent ${parent.path} is ${parent.sizeBytes} bytes, the child ${meta.virtualDiskSizeBytes}`, "disk.parent-mismatch");
      }
    }
    return new VhdxImage({
      file,
      readonly,
      header: currentHeader,
      headerIndex,
      regions,
      meta,
      bat,
      fileEnd: roundUp(sizeAfterReplay, MiB),
      parent,
      replayedLog,
      sequence,
      keepDataWriteGuid: options.keepDataWriteGuid ?? false,
      bulk: options.bulk ?? false,
    });
  }

  /**
   * Makes a new VHDX in an empty file: fixed (every block allocated), dynamic, or
   * differencing over `parent` (a VHDX). Defaults: 32 MiB blocks (2 MiB for
   * differencing), 512-byte logical and 4096-byte physical sectors, as Hyper-V.
   * @throws {DiskError} `disk.bad-size` for sizes or block sizes out of the spec's range.
   */
  static async create(file: StorageFile, o: VhdxCreateOptions): Promise<VhdxImage> {
    const hasParent = o.type === "differencing";
    const logicalSectorBytes = hasParent && o.parent ? o.parent.image.logicalSectorBytes : (o.logicalSectorBytes ?? 512);
    const physicalSectorBytes = o.physicalSectorBytes ?? 4096;
    const blockSizeBytes = o.blockSizeBytes ?? (hasParent ? 2 * MiB : 32 * MiB);
    const sizeBytes = hasParent && o.parent ? o.parent.image.sizeBytes : o.sizeBytes;
    if (hasParent && o.parent === undefined) throw new DiskError(`${file.path}: a differencing image needs a parent`, "disk.parent-missing");
    if (logicalSectorBytes !== 512 && logicalSectorBytes !== 4096) throw new DiskError(`${file.path}: logical sector size ${logicalSectorBytes} is not 512 or 4096`, "disk.bad-size");
    if (physicalSectorBytes !== 512 && physicalSectorBytes !== 4096) throw new DiskError(`${file.path}: physical sector size ${physicalSectorBytes} is not 512 or 4096`, "disk.bad-size");
    if (blockSizeBytes < MiB || blockSizeBytes > 256 * MiB || (blockSizeBytes & (blockSizeBytes - 1)) !== 0) {
      throw new DiskError(`${file.path}: block size ${blockSizeBytes} is not a power of 2 from 1 MiB to 256 MiB`, "disk.bad-size");
    }
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_VIRTUAL_DISK_SIZE || sizeBytes % logicalSectorBytes !== 0) {
      throw new DiskError(`${file.path}: size ${sizeBytes} is not a multiple of ${logicalSectorBytes} bytes from 1 sector to 64 TiB`, "disk.bad-size");
    }
    const geometry = batGeometry(sizeBytes, blockSizeBytes, logicalSectorBytes, hasParent);
    const batLength = roundUp(geometry.totalEntries * 8, MiB);
    const dataStart = BAT_OFFSET + batLength;
    const fixed = o.type === "fixed";
    const bat = new Uint8Array(batLength);
    const batView = new DataView(bat.buffer);
    let fileEnd = dataStart;
    if (fixed) {
      for (let block = 0; block < geometry.payloadBlocks; block++) {
        encodeBatEntry(PAYLOAD_BLOCK_FULLY_PRESENT, fileEnd, batView, payloadEntryIndex(block, geometry.chunkRatio) * 8);
        fileEnd += blockSizeBytes;
      }
    }
    const locator: ParentLocator | undefined = o.parent
      ? new Map([
          ["parent_linkage", `{${guidToString(o.parent.image.dataWriteGuid)}}`],
          ["relative_path", o.parent.relativePath],
          ["absolute_win32_path", o.parent.absolutePath],
        ])
      : undefined;
    const { region: metadataRegion } = serializeMetadata(
      { blockSizeBytes, leaveBlocksAllocated: fixed, hasParent, virtualDiskSizeBytes: sizeBytes, virtualDiskId: newGuid(), logicalSectorBytes, physicalSectorBytes, parentLocator: locator },
      METADATA_LENGTH,
    );
    const regionTable = serializeRegionTable([
      { guid: BAT_REGION_GUID, fileOffset: BAT_OFFSET, lengthBytes: batLength, required: true },
      { guid: METADATA_REGION_GUID, fileOffset: METADATA_OFFSET, lengthBytes: METADATA_LENGTH, required: true },
    ]);
    const header: VhdxHeader = { sequenceNumber: 1n, fileWriteGuid: newGuid(), dataWriteGuid: newGuid(), logGuid: new Uint8Array(16), logVersion: 0, version: 1, logLengthBytes: LOG_LENGTH, logOffset: LOG_OFFSET };
    await file.truncate(fileEnd);
    await file.write(BAT_OFFSET, bat);
    await file.write(METADATA_OFFSET, metadataRegion);
    await file.write(REGION_TABLE_OFFSETS[0], regionTable);
    await file.write(REGION_TABLE_OFFSETS[1], regionTable);
    await file.write(HEADER_OFFSETS[0], serializeHeader(header));
    await file.write(HEADER_OFFSETS[1], serializeHeader({ ...header, sequenceNumber: 2n }));
    // The signature goes last: a create cut short leaves a file no tool takes for a VHDX.
    await file.write(0, serializeFileIdentifier(o.creator ?? "Palisade"));
    if (o.bulk !== true) await file.flush();
    const parent = o.parent?.image;
    const bulk = o.bulk ?? false;
    return VhdxImage.open(file, parent === undefined ? { readonly: false, bulk } : { readonly: false, bulk, openParent: () => Promise.resolve(parent) });
  }

  // ------------------------------------------------------------ block map

  #entry(block: number): number {
    return payloadEntryIndex(block, this.#geometry.chunkRatio);
  }

  async #bitmap(chunk: number): Promise<Uint8Array | undefined> {
    const cached = this.#bitmaps.get(chunk);
    if (cached !== undefined) return cached;
    const index = bitmapEntryIndex(chunk, this.#geometry.chunkRatio);
    if (this.#bat.states[index] !== SB_BLOCK_PRESENT) return undefined;
    const bitmap = await this.#file.read(this.#bat.offsets[index] ?? 0, SECTOR_BITMAP_BLOCK_SIZE);
    this.#bitmaps.set(chunk, bitmap);
    return bitmap;
  }

  /** Runs of sectors of a partially present block: [start, length, present] in bytes within the block. */
  async #sectorRuns(block: number, within: number, length: number): Promise<SectorRun[]> {
    const sectorBytes = this.#meta.logicalSectorBytes;
    const bitmap = await this.#bitmap(Math.floor(block / this.#geometry.chunkRatio));
    const firstSector = (block % this.#geometry.chunkRatio) * (this.#meta.blockSizeBytes / sectorBytes);
    return bitmapRuns(bitmap, { firstSector, within, length, sectorBytes, bitOrder: "lsb-first" });
  }

  // ------------------------------------------------------------ BlockImage

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this, offset, length);
    const blockSize = this.#meta.blockSizeBytes;
    // Fast path (a guest's 4 KiB read): one fully present block, no copy.
    const firstBlock = Math.floor(offset / blockSize);
    if (length > 0 && Math.floor((offset + length - 1) / blockSize) === firstBlock) {
      const index = this.#entry(firstBlock);
      if (this.#bat.states[index] === PAYLOAD_BLOCK_FULLY_PRESENT) return this.#file.read((this.#bat.offsets[index] ?? 0) + offset - firstBlock * blockSize, length);
    }
    const out = new Uint8Array(length);
    for (const { pos, block, within, take, done } of blockSpans(offset, length, blockSize)) {
      const index = this.#entry(block);
      const state = this.#bat.states[index] ?? PAYLOAD_BLOCK_NOT_PRESENT;
      const fileOffset = this.#bat.offsets[index] ?? 0;
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        out.set(await this.#file.read(fileOffset + within, take), done);
      } else if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        for (const run of await this.#sectorRuns(block, within, take)) {
          const data = run.present ? await this.#file.read(fileOffset + run.start, run.length) : await this.#readParent(block * blockSize + run.start, run.length);
          out.set(data, done + run.start - within);
        }
      } else if (state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent !== undefined) {
        out.set(await this.parent.read(pos, take), done);
      }
    }
    return out;
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    checkRange(this, offset, into.length);
    const blockSize = this.#meta.blockSizeBytes;
    const block = Math.floor(offset / blockSize);
    const index = this.#entry(block);
    if (into.length > 0 && Math.floor((offset + into.length - 1) / blockSize) === block && this.#bat.states[index] === PAYLOAD_BLOCK_FULLY_PRESENT) {
      await readFileInto(this.#file, (this.#bat.offsets[index] ?? 0) + offset - block * blockSize, into);
      return;
    }
    into.set(await this.read(offset, into.length));
  }

  #readParent(offset: number, length: number): Promise<Uint8Array> {
    return this.parent ? this.parent.read(offset, length) : Promise.resolve(new Uint8Array(length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    checkRange(this, offset, data.length);
    // Fast path, what the loop below does for this case: whole sectors within one fully
    // present block, once the session has begun. Most of convert's writes are this; no
    // generator, no alignment await, and less for V8 to optimize during a short run.
    const blockSize = this.#meta.blockSizeBytes;
    const sectorBytes = this.#meta.logicalSectorBytes;
    const block = Math.floor(offset / blockSize);
    const within = offset - block * blockSize;
    const index = this.#entry(block);
    if (this.#sessionStarted && data.length > 0 && within + data.length <= blockSize && offset % sectorBytes === 0 && data.length % sectorBytes === 0 && this.#bat.states[index] === PAYLOAD_BLOCK_FULLY_PRESENT) {
      await this.#file.write((this.#bat.offsets[index] ?? 0) + within, data);
      return;
    }
    const aligned = await alignWrite(offset, data, this.#meta.logicalSectorBytes, (o, l) => this.read(o, l));
    await this.#beginSession();
    for (const { block, within, take, done } of blockSpans(aligned.offset, aligned.data.length, this.#meta.blockSizeBytes)) {
      const piece = aligned.data.subarray(done, done + take);
      const index = this.#entry(block);
      if (this.#bat.states[index] === PAYLOAD_BLOCK_FULLY_PRESENT) {
        await this.#file.write((this.#bat.offsets[index] ?? 0) + within, piece);
      } else {
        await this.#mutex.run(() => this.#writeSlow(block, within, piece));
      }
    }
  }

  /** A write to a block that is not fully present: allocate it, or mark sectors present. */
  async #writeSlow(block: number, within: number, piece: Uint8Array): Promise<void> {
    const index = this.#entry(block);
    const state = this.#bat.states[index] ?? PAYLOAD_BLOCK_NOT_PRESENT;
    const blockSize = this.#meta.blockSizeBytes;
    if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
      await this.#file.write((this.#bat.offsets[index] ?? 0) + within, piece);
      return;
    }
    const changes = new Set<number>(); // BAT entry indexes
    const bitmapSectors = new Set<number>(); // file offsets of changed 4 KiB bitmap sectors
    const wholeBlock = within === 0 && piece.length === blockSize;
    if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      await this.#file.write((this.#bat.offsets[index] ?? 0) + within, piece);
    } else {
      const at = this.#allocate(blockSize);
      if (!this.#bulk) await this.#file.truncate(this.#fileEnd);
      await this.#file.write(at + within, piece);
      this.#bat.offsets[index] = at;
      // Over a parent, a block never written reads the parent: only the sectors written
      // become present. A zero or unmapped block reads zeros, so all of it is present.
      const partial = this.parent !== undefined && state === PAYLOAD_BLOCK_NOT_PRESENT && !wholeBlock;
      this.#bat.states[index] = partial ? PAYLOAD_BLOCK_PARTIALLY_PRESENT : PAYLOAD_BLOCK_FULLY_PRESENT;
      changes.add(index);
      if (!partial) {
        await this.#commit(changes, bitmapSectors);
        return;
      }
    }
    // Mark the written sectors present in the chunk's sector bitmap.
    const chunk = Math.floor(block / this.#geometry.chunkRatio);
    const sbIndex = bitmapEntryIndex(chunk, this.#geometry.chunkRatio);
    let bitmap = await this.#bitmap(chunk);
    if (bitmap === undefined) {
      const at = this.#allocate(SECTOR_BITMAP_BLOCK_SIZE);
      if (!this.#bulk) await this.#file.truncate(this.#fileEnd);
      this.#bat.states[sbIndex] = SB_BLOCK_PRESENT;
      this.#bat.offsets[sbIndex] = at;
      changes.add(sbIndex);
      bitmap = new Uint8Array(SECTOR_BITMAP_BLOCK_SIZE);
      this.#bitmaps.set(chunk, bitmap);
    }
    const sector = this.#meta.logicalSectorBytes;
    const first = (block % this.#geometry.chunkRatio) * (blockSize / sector) + within / sector;
    const count = piece.length / sector;
    const sbOffset = this.#bat.offsets[sbIndex] ?? 0;
    for (let s = first; s < first + count; s++) {
      const byte = bitmap[s >> 3] ?? 0;
      if (((byte >> (s & 7)) & 1) === 0) {
        bitmap[s >> 3] = byte | (1 << (s & 7));
        bitmapSectors.add(sbOffset + Math.floor((s >> 3) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE);
      }
    }
    if (changes.size > 0 || bitmapSectors.size > 0) await this.#commit(changes, bitmapSectors);
  }

  #allocate(bytes: number): number {
    const at = this.#fileEnd;
    this.#fileEnd += roundUp(bytes, MiB);
    return at;
  }

  async flush(): Promise<void> {
    if (this.readonly) return;
    if (this.#bulk) await this.#mutex.run(() => this.#writeBulkMetadata());
    await this.#file.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    checkRange(this, offset, length);
    const blockSize = this.#meta.blockSizeBytes;
    for (const { pos, block, within, take } of blockSpans(offset, length, blockSize)) {
      const index = this.#entry(block);
      const state = this.#bat.states[index] ?? PAYLOAD_BLOCK_NOT_PRESENT;
      const blockEnd = Math.min(blockSize, this.sizeBytes - block * blockSize);
      if (within === 0 && take === blockEnd && this.type !== "fixed") {
        await this.#beginSession();
        await this.#mutex.run(async () => {
          if (this.#bat.states[index] === PAYLOAD_BLOCK_ZERO) return;
          this.#bat.states[index] = PAYLOAD_BLOCK_ZERO;
          this.#bat.offsets[index] = 0;
          await this.#commit(new Set([index]), new Set());
        });
      } else if (state !== PAYLOAD_BLOCK_ZERO && !(state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent === undefined)) {
        await this.write(pos, new Uint8Array(take));
      }
    }
  }

  async allocation(offset: number, length: number): Promise<AllocationRange[]> {
    checkRange(this, offset, length);
    const ranges: AllocationRange[] = [];
    const blockSize = this.#meta.blockSizeBytes;
    for (const { pos, block, within, take } of blockSpans(offset, length, blockSize)) {
      const index = this.#entry(block);
      const state = this.#bat.states[index] ?? PAYLOAD_BLOCK_NOT_PRESENT;
      const fileOffset = this.#bat.offsets[index] ?? 0;
      if (state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        pushDataRun(ranges, { offset: pos, length: take, fileOffset: fileOffset + within }, this.#file.dataRanges?.bind(this.#file));
      } else if (state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        for (const run of await this.#sectorRuns(block, within, take)) {
          const at = block * blockSize + run.start;
          pushRange(ranges, run.present ? { offset: at, length: run.length, state: "data", fileOffset: fileOffset + run.start } : { offset: at, length: run.length, state: "parent" });
        }
      } else {
        pushRange(ranges, { offset: pos, length: take, state: state === PAYLOAD_BLOCK_NOT_PRESENT && this.parent !== undefined ? "parent" : "zero" });
      }
    }
    return ranges;
  }

  allocatedBytes(): Promise<number> {
    return this.#file.size();
  }

  /**
   * Changes the virtual size. Growing needs room in the BAT region (1 MiB of BAT covers
   * at least 4 TiB with 32 MiB blocks); shrinking needs the cut-off tail to hold no data.
   * @throws {DiskError} `disk.bad-size`, `disk.unsupported`, `disk.readonly`.
   */
  async resize(sizeBytes: number): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    const sector = this.#meta.logicalSectorBytes;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_VIRTUAL_DISK_SIZE || sizeBytes % sector !== 0) {
      throw new DiskError(`${this.path}: size ${sizeBytes} is not a multiple of ${sector} bytes up to 64 TiB`, "disk.bad-size");
    }
    if (this.parent !== undefined) throw new DiskError(`${this.path}: a differencing disk has its parent's size; resize the parent chain instead`, "disk.unsupported");
    await this.#beginSession();
    await this.#mutex.run(async () => {
      const blockSize = this.#meta.blockSizeBytes;
      const next = batGeometry(sizeBytes, blockSize, sector, false);
      const old = this.#geometry;
      if (next.totalEntries * 8 > this.#regions.bat.lengthBytes) {
        throw new DiskError(`${this.path}: the BAT region (${this.#regions.bat.lengthBytes} bytes) cannot describe ${sizeBytes} bytes; convert to a new image instead`, "disk.unsupported");
      }
      const changes = new Set<number>();
      if (sizeBytes < this.sizeBytes) {
        // The last kept block may hold data past the new end, and later blocks may be
        // present: all of it must read as zeros.
        await assertNoDataPast(this, sizeBytes);
        const keep = Math.ceil(sizeBytes / blockSize);
        for (let block = keep; block < old.payloadBlocks; block++) {
          const index = this.#entry(block);
          this.#bat.states[index] = PAYLOAD_BLOCK_NOT_PRESENT;
          this.#bat.offsets[index] = 0;
          changes.add(index);
        }
      } else if (this.type === "fixed") {
        for (let block = old.payloadBlocks; block < next.payloadBlocks; block++) {
          const index = this.#entry(block);
          this.#bat.states[index] = PAYLOAD_BLOCK_FULLY_PRESENT;
          this.#bat.offsets[index] = this.#allocate(blockSize);
          changes.add(index);
        }
        await this.#file.truncate(this.#fileEnd);
      }
      // New entries are appended to the decoded BAT arrays in memory (they were read
      // only up to the old count), so grow the arrays first.
      this.#growBatArrays(next.totalEntries);
      await this.#commit(changes, new Set());
      const sizeEntry = this.#meta.entries.find((entry) => Buffer.from(entry.itemId).equals(VIRTUAL_DISK_SIZE_GUID));
      if (sizeEntry === undefined) throw new DiskError(`${this.path}: no virtual disk size item`, "vhdx.bad-metadata");
      const itemAt = this.#regions.metadata.fileOffset + sizeEntry.offset;
      const sectorAt = itemAt - (itemAt % LOG_SECTOR_SIZE);
      const sectorBytes = await this.#file.read(sectorAt, LOG_SECTOR_SIZE);
      new DataView(sectorBytes.buffer, sectorBytes.byteOffset, sectorBytes.byteLength).setBigUint64(itemAt - sectorAt, BigInt(sizeBytes), true);
      await this.#commitSectors([{ fileOffset: sectorAt, data: sectorBytes }]);
      this.#meta = { ...this.#meta, virtualDiskSizeBytes: sizeBytes };
      this.#geometry = next;
    });
  }

  #growBatArrays(totalEntries: number): void {
    if (totalEntries <= this.#bat.states.length) return;
    const states = new Uint8Array(totalEntries);
    states.set(this.#bat.states);
    const offsets = new Float64Array(totalEntries);
    offsets.set(this.#bat.offsets);
    // INVARIANT: #bat is only read through these two arrays, replaced together here.
    (this.#bat as { states: Uint8Array }).states = states;
    (this.#bat as { offsets: Float64Array }).offsets = offsets;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (!this.readonly && this.#sessionStarted) {
        await this.#mutex.run(async () => {
          if (this.#bulk) {
            // A file nobody sees yet: metadata once, headers, then the one flush.
            await this.#writeBulkMetadata();
            await this.#writeHeaders({ ...this.#header, logGuid: new Uint8Array(16) });
          } else {
            await this.#file.flush();
            await this.#writeHeaders({ ...this.#header, logGuid: new Uint8Array(16) });
          }
          await this.#file.flush();
        });
      }
      await this.#file.close();
    } finally {
      await this.parent?.close();
    }
  }

  // ------------------------------------------------------------ headers and log

  /** The first change of a session: new FileWriteGuid and DataWriteGuid, a LogGuid for the log. */
  async #beginSession(): Promise<void> {
    if (this.#sessionStarted) return;
    await this.#mutex.run(async () => {
      if (this.#sessionStarted) return;
      await this.#writeHeaders({
        ...this.#header,
        fileWriteGuid: newGuid(),
        dataWriteGuid: this.#keepDataWriteGuid ? this.#header.dataWriteGuid : newGuid(),
        logGuid: this.#bulk ? new Uint8Array(16) : newGuid(),
      });
      this.#sessionStarted = true;
    });
  }

  /** §2.2.2: update both headers, the older first, each flushed before the next. */
  async #writeHeaders(header: Omit<VhdxHeader, "sequenceNumber">): Promise<void> {
    this.#headerIndex = await writeHeaderPair(this.#file, { ...header, sequenceNumber: this.#header.sequenceNumber }, this.#headerIndex, !this.#bulk);
    this.#header = { ...header, sequenceNumber: this.#header.sequenceNumber + 2n };
  }

  /**
   * Bulk mode: the whole BAT in one write, each changed sector bitmap block in one write,
   * and the file grown to cover the last allocated block.
   */
  async #writeBulkMetadata(): Promise<void> {
    if (!this.#bulkDirty) return;
    const count = this.#bat.states.length;
    const bytes = new Uint8Array(roundUp(count * 8, LOG_SECTOR_SIZE));
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < count; i++) encodeBatEntry(this.#bat.states[i] ?? 0, this.#bat.offsets[i] ?? 0, view, i * 8);
    await this.#file.write(this.#regions.bat.fileOffset, bytes);
    for (const chunk of this.#bulkBitmaps) {
      const bitmap = this.#bitmaps.get(chunk);
      const at = this.#bat.offsets[bitmapEntryIndex(chunk, this.#geometry.chunkRatio)];
      if (bitmap !== undefined && at !== undefined) await this.#file.write(at, bitmap);
    }
    this.#bulkBitmaps.clear();
    if ((await this.#file.size()) < this.#fileEnd) await this.#file.truncate(this.#fileEnd);
    this.#bulkDirty = false;
  }

  /** Writes the BAT sectors holding `entries` and the given bitmap sectors through the log. */
  async #commit(entries: Set<number>, bitmapSectors: Set<number>): Promise<void> {
    if (this.#bulk) {
      // Written once, by flush or close (#writeBulkMetadata).
      this.#bulkDirty = true;
      for (const at of bitmapSectors) {
        for (const [chunk] of this.#bitmaps) {
          const sb = this.#bat.offsets[bitmapEntryIndex(chunk, this.#geometry.chunkRatio)] ?? -1;
          if (at >= sb && at < sb + SECTOR_BITMAP_BLOCK_SIZE) this.#bulkBitmaps.add(chunk);
        }
      }
      return;
    }
    const sectors = new Map<number, Uint8Array>();
    const perSector = LOG_SECTOR_SIZE / 8;
    for (const index of entries) {
      const first = Math.floor(index / perSector) * perSector;
      const at = this.#regions.bat.fileOffset + first * 8;
      if (sectors.has(at)) continue;
      const bytes = new Uint8Array(LOG_SECTOR_SIZE);
      const view = new DataView(bytes.buffer);
      const count = Math.min(perSector, this.#bat.states.length - first);
      for (let i = 0; i < count; i++) encodeBatEntry(this.#bat.states[first + i] ?? 0, this.#bat.offsets[first + i] ?? 0, view, i * 8);
      sectors.set(at, bytes);
    }
    for (const at of bitmapSectors) {
      const chunkEntry = [...this.#bitmaps.entries()].find(([chunk]) => {
        const sb = this.#bat.offsets[bitmapEntryIndex(chunk, this.#geometry.chunkRatio)] ?? -1;
        return at >= sb && at < sb + SECTOR_BITMAP_BLOCK_SIZE;
      });
      if (chunkEntry === undefined) continue;
      const sb = this.#bat.offsets[bitmapEntryIndex(chunkEntry[0], this.#geometry.chunkRatio)] ?? 0;
      sectors.set(at, chunkEntry[1].slice(at - sb, at - sb + LOG_SECTOR_SIZE));
    }
    await this.#commitSectors([...sectors.entries()].map(([fileOffset, data]) => ({ fileOffset, data })));
  }

  /** One or more log transactions (each as large as the log allows), then the in-place writes. */
  async #commitSectors(sectors: { fileOffset: number; data: Uint8Array }[]): Promise<void> {
    if (this.#bulk) {
      for (const sector of sectors) await this.#file.write(sector.fileOffset, sector.data);
      return;
    }
    const max = maxSectorsPerEntry(this.#header.logLengthBytes);
    for (let i = 0; i < sectors.length; i += max) {
      const batch = sectors.slice(i, i + max);
      // Data written so far, and the previous transaction's in-place writes, are durable
      // before this entry replaces the previous one at the start of the log.
      await this.#file.flush();
      const fileSize = await this.#file.size();
      this.#sequence += 1n;
      const entry = serializeLogEntry(batch, { sequenceNumber: this.#sequence, logGuid: this.#header.logGuid, logOffset: 0, flushedFileOffset: fileSize, lastFileOffset: fileSize });
      await this.#file.write(this.#header.logOffset, entry);
      await this.#file.flush();
      for (const sector of batch) await this.#file.write(sector.fileOffset, sector.data);
    }
  }
}

/** Writes `header` to both header slots, the non-current first; returns the new current index. */
async function writeHeaderPair(file: StorageFile, header: VhdxHeader, currentIndex: number, flush = true): Promise<number> {
  const older = 1 - currentIndex;
  await file.write(HEADER_OFFSETS[older as 0 | 1], serializeHeader({ ...header, sequenceNumber: header.sequenceNumber + 1n }));
  if (flush) await file.flush();
  await file.write(HEADER_OFFSETS[currentIndex as 0 | 1], serializeHeader({ ...header, sequenceNumber: header.sequenceNumber + 2n }));
  if (flush) await file.flush();
  return currentIndex;
}

/** §2.3.3 replay: checks the file size the entries expect, then writes every descriptor. */
async function replay(file: StorageFile, entries: readonly LogEntry[], fileSizeBytes: number, log: { offset: number; lengthBytes: number }): Promise<void> {
  const last = entries[entries.length - 1];
  const limit = Math.max(fileSizeBytes, last?.lastFileOffset ?? 0);
  for (const entry of entries) {
    if (entry.flushedFileOffset > fileSizeBytes) {
      throw new DiskFormatError("vhdx.bad-log", {
        structure: "log entry",
        field: "FlushedFileOffset",
        offset: log.offset + entry.logOffset + 48,
        message: `0x${entry.flushedFileOffset.toString(16)} is past the end of the file (0x${fileSizeBytes.toString(16)}): data the log relies on was lost`,
      });
    }
    for (const d of entry.descriptors) {
      const end = d.fileOffset + d.lengthBytes;
      if (d.fileOffset < HEADER_SECTION_SIZE || (d.fileOffset < log.offset + log.lengthBytes && end > log.offset) || end > limit || d.lengthBytes > 256 * MiB) {
        throw new DiskFormatError("vhdx.bad-log", { structure: "log descriptor", field: "FileOffset", offset: log.offset + entry.logOffset, message: `0x${d.fileOffset.toString(16)}+0x${d.lengthBytes.toString(16)} is outside the file's payload area` });
      }
    }
  }
  for (const entry of entries) {
    for (const d of entry.descriptors) await file.write(d.fileOffset, d.data ?? new Uint8Array(d.lengthBytes));
  }
  if (last !== undefined && (await file.size()) < last.lastFileOffset) await file.truncate(last.lastFileOffset);
}

