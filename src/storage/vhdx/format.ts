/**
 * What the bytes of a VHDX file are: structures, field offsets, signatures and limits as
 * in [MS-VHDX] v20220915 ("VHDX Format Specification"), with pure parsers that check every
 * field against the spec and the file's real size, and pure serializers. No I/O here:
 * `image.ts` decides what to read and write.
 */
import { crc32cWithZeroField } from "../crc32c.js";
import { DiskFormatError } from "../errors.js";
import { guidFromString, guidIsZero } from "../guid.js";

export const KiB = 1024;
export const MiB = 1024 * 1024;

// §2.1 File layout: the 1 MiB header section.
export const FILE_IDENTIFIER_OFFSET = 0;
export const FILE_IDENTIFIER_SIGNATURE = "vhdxfile";
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const;
export const REGION_TABLE_SIZE = 64 * KiB;
export const HEADER_SECTION_SIZE = 1 * MiB;

// §2.2.2 Header.
export const HEADER_SIGNATURE = 0x64616568; // "head"
export const HEADER_VERSION = 1;
export const HEADER_LOG_VERSION = 0;

// §2.2.3 Region table.
export const REGION_TABLE_SIGNATURE = 0x69676572; // "regi"
export const REGION_TABLE_MAX_ENTRIES = 2047;
export const BAT_REGION_GUID = guidFromString("2DC27766-F623-4200-9D64-115E9BFD4A08");
export const METADATA_REGION_GUID = guidFromString("8B7CA206-4790-4B9A-B8FE-575F050F886E");

// §2.5 Metadata region.
export const METADATA_TABLE_SIGNATURE = "metadata";
export const METADATA_TABLE_SIZE = 64 * KiB;
export const METADATA_MAX_ENTRIES = 2047;
export const FILE_PARAMETERS_GUID = guidFromString("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
export const VIRTUAL_DISK_SIZE_GUID = guidFromString("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
export const VIRTUAL_DISK_ID_GUID = guidFromString("BECA12AB-B2E6-4523-93EF-C309E000C746");
export const LOGICAL_SECTOR_SIZE_GUID = guidFromString("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
export const PHYSICAL_SECTOR_SIZE_GUID = guidFromString("CDA348C7-445D-4471-9CC9-E9885251C556");
export const PARENT_LOCATOR_GUID = guidFromString("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
export const VHDX_PARENT_LOCATOR_TYPE_GUID = guidFromString("B04AEFB7-D19E-4A81-B789-25B8E9445913");
export const METADATA_FLAG_IS_USER = 1;
export const METADATA_FLAG_IS_VIRTUAL_DISK = 2;
export const METADATA_FLAG_IS_REQUIRED = 4;
export const FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED = 1;
export const FILE_PARAMETERS_HAS_PARENT = 2;

// §2.5.2.1 and §2.5.2.2: limits.
export const MIN_BLOCK_SIZE = 1 * MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
export const MAX_VIRTUAL_DISK_SIZE = 64 * 1024 * 1024 * MiB; // 64 TiB

// §2.4 BAT.
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;
export const SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB;
/** Sectors one sector-bitmap block describes: 2^23 (1 MiB of bits). */
export const SECTORS_PER_BITMAP_BLOCK = 8 * MiB;

// §2.3 Log.
export const LOG_ENTRY_SIGNATURE = 0x65676f6c; // "loge"
export const LOG_ZERO_DESCRIPTOR_SIGNATURE = 0x6f72657a; // "zero"
export const LOG_DATA_DESCRIPTOR_SIGNATURE = 0x63736564; // "desc"
export const LOG_DATA_SECTOR_SIGNATURE = 0x61746164; // "data"
export const LOG_SECTOR_SIZE = 4 * KiB;
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;

const ERR = "vhdx";

function fail(code: string, structure: string, field: string, offset: number | undefined, message: string): never {
  throw new DiskFormatError(`${ERR}.${code}`, offset === undefined ? { structure, field, message } : { structure, field, offset, message });
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const hex = (value: number | bigint): string => `0x${value.toString(16)}`;

/** Converts a 64-bit field to a number, failing above 2^53 rather than rounding. */
export function toSafeNumber(value: bigint, structure: string, field: string, offset: number): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail("bad-field", structure, field, offset, `value ${hex(value)} is too large`);
  return Number(value);
}

// ---------------------------------------------------------------- file identifier

/** §2.2.1: checks the "vhdxfile" signature at offset 0. */
export function parseFileIdentifier(bytes: Uint8Array): { creator: string } {
  const signature = new TextDecoder("latin1").decode(bytes.subarray(0, 8));
  if (signature !== FILE_IDENTIFIER_SIGNATURE) {
    fail("bad-signature", "file identifier", "Signature", 0, `"${signature.replace(/[^\x20-\x7e]/g, "?")}" is not "vhdxfile" (not a VHDX file)`);
  }
  const creatorBytes = bytes.subarray(8, 8 + 512);
  let end = 0;
  while (end + 1 < creatorBytes.length && ((creatorBytes[end] ?? 0) !== 0 || (creatorBytes[end + 1] ?? 0) !== 0)) end += 2;
  return { creator: Buffer.from(creatorBytes.subarray(0, end)).toString("utf16le") };
}

export function serializeFileIdentifier(creator: string): Uint8Array {
  const out = new Uint8Array(64 * KiB);
  out.set(new TextEncoder().encode(FILE_IDENTIFIER_SIGNATURE), 0);
  out.set(Buffer.from(creator.slice(0, 255), "utf16le"), 8);
  return out;
}

// ---------------------------------------------------------------- headers

/** §2.2.2 one of the two headers. */
export interface VhdxHeader {
  readonly sequenceNumber: bigint;
  readonly fileWriteGuid: Uint8Array;
  readonly dataWriteGuid: Uint8Array;
  readonly logGuid: Uint8Array;
  readonly logVersion: number;
  readonly version: number;
  readonly logLengthBytes: number;
  readonly logOffset: number;
}

/**
 * Parses header `index` (0 or 1) from its 4 KiB; checks signature, checksum, versions and
 * the log's placement against the file size.
 * @throws {DiskFormatError} `vhdx.bad-header`.
 */
export function parseHeader(bytes: Uint8Array, index: number, fileSizeBytes: number): VhdxHeader {
  const at = HEADER_OFFSETS[index] ?? 0;
  const structure = `header ${index + 1}`;
  if (bytes.length < HEADER_SIZE) fail("bad-header", structure, "", at, "truncated");
  const v = view(bytes);
  const signature = v.getUint32(0, true);
  if (signature !== HEADER_SIGNATURE) fail("bad-header", structure, "Signature", at, `${hex(signature)} is not "head"`);
  const checksum = v.getUint32(4, true);
  const computed = crc32cWithZeroField(bytes.subarray(0, HEADER_SIZE), 4);
  if (checksum !== computed) fail("bad-header", structure, "Checksum", at + 4, `${hex(checksum)} does not match the contents (${hex(computed)})`);
  const header: VhdxHeader = {
    sequenceNumber: v.getBigUint64(8, true),
    fileWriteGuid: bytes.slice(16, 32),
    dataWriteGuid: bytes.slice(32, 48),
    logGuid: bytes.slice(48, 64),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLengthBytes: v.getUint32(68, true),
    logOffset: toSafeNumber(v.getBigUint64(72, true), structure, "LogOffset", at + 72),
  };
  if (header.version !== HEADER_VERSION) fail("bad-header", structure, "Version", at + 66, `${header.version} is not 1`);
  if (header.logVersion !== HEADER_LOG_VERSION) fail("bad-header", structure, "LogVersion", at + 64, `${header.logVersion} is not 0`);
  if (header.logLengthBytes === 0 || header.logLengthBytes % MiB !== 0) {
    fail("bad-header", structure, "LogLength", at + 68, `${hex(header.logLengthBytes)} is not a non-zero multiple of 1 MiB`);
  }
  if (header.logOffset < HEADER_SECTION_SIZE || header.logOffset % MiB !== 0) {
    fail("bad-header", structure, "LogOffset", at + 72, `${hex(header.logOffset)} is not a multiple of 1 MiB past the header section`);
  }
  if (header.logOffset + header.logLengthBytes > fileSizeBytes) {
    fail("bad-header", structure, "LogOffset", at + 72, `log ${hex(header.logOffset)}+${hex(header.logLengthBytes)} ends past the end of the file (${hex(fileSizeBytes)})`);
  }
  return header;
}

/**
 * §2.2.2: the current header is the valid one with the higher sequence number.
 * @throws {DiskFormatError} `vhdx.bad-header` when neither is valid (the first error).
 */
export function chooseHeader(candidates: readonly [Uint8Array, Uint8Array], fileSizeBytes: number): { header: VhdxHeader; index: number } {
  const parsed: ({ header: VhdxHeader; index: number } | DiskFormatError)[] = candidates.map((bytes, index) => {
    try {
      return { header: parseHeader(bytes, index, fileSizeBytes), index };
    } catch (error: unknown) {
      if (error instanceof DiskFormatError) return error;
      throw error;
    }
  });
  const valid = parsed.filter((p): p is { header: VhdxHeader; index: number } => !(p instanceof DiskFormatError));
  if (valid.length === 0) throw parsed[0] as DiskFormatError;
  const [first, second] = valid;
  if (first === undefined) throw parsed[0] as DiskFormatError;
  if (second === undefined) return first;
  if (first.header.sequenceNumber === second.header.sequenceNumber) {
    // Two valid headers with one sequence number: the spec calls the file corrupt, but
    // they are identical in practice (written by us or by QEMU); take the first.
    return first;
  }
  return first.header.sequenceNumber > second.header.sequenceNumber ? first : second;
}

export function serializeHeader(header: VhdxHeader): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = view(out);
  v.setUint32(0, HEADER_SIGNATURE, true);
  v.setBigUint64(8, header.sequenceNumber, true);
  out.set(header.fileWriteGuid, 16);
  out.set(header.dataWriteGuid, 32);
  out.set(header.logGuid, 48);
  v.setUint16(64, header.logVersion, true);
  v.setUint16(66, header.version, true);
  v.setUint32(68, header.logLengthBytes, true);
  v.setBigUint64(72, BigInt(header.logOffset), true);
  v.setUint32(4, crc32cWithZeroField(out, 4), true);
  return out;
}

// ---------------------------------------------------------------- region table

export interface RegionEntry {
  readonly guid: Uint8Array;
  readonly fileOffset: number;
  readonly lengthBytes: number;
  readonly required: boolean;
}

export interface VhdxRegions {
  readonly bat: RegionEntry;
  readonly metadata: RegionEntry;
  readonly all: readonly RegionEntry[];
}

/**
 * §2.2.3: parses a region table; requires the BAT and metadata regions, refuses unknown
 * required regions, regions outside the file or overlapping each other or the log.
 * @throws {DiskFormatError} `vhdx.bad-region-table`.
 */
export function parseRegionTable(bytes: Uint8Array, index: number, fileSizeBytes: number, log: { offset: number; lengthBytes: number }): VhdxRegions {
  const at = REGION_TABLE_OFFSETS[index] ?? 0;
  const structure = `region table ${index + 1}`;
  if (bytes.length < REGION_TABLE_SIZE) fail("bad-region-table", structure, "", at, "truncated");
  const v = view(bytes);
  const signature = v.getUint32(0, true);
  if (signature !== REGION_TABLE_SIGNATURE) fail("bad-region-table", structure, "Signature", at, `${hex(signature)} is not "regi"`);
  const checksum = v.getUint32(4, true);
  const computed = crc32cWithZeroField(bytes.subarray(0, REGION_TABLE_SIZE), 4);
  if (checksum !== computed) fail("bad-region-table", structure, "Checksum", at + 4, `${hex(checksum)} does not match the contents (${hex(computed)})`);
  const count = v.getUint32(8, true);
  if (count > REGION_TABLE_MAX_ENTRIES) fail("bad-region-table", structure, "EntryCount", at + 8, `${count} is more than ${REGION_TABLE_MAX_ENTRIES}`);
  const entries: RegionEntry[] = [];
  let bat: RegionEntry | undefined;
  let metadata: RegionEntry | undefined;
  const spans: { start: number; end: number; name: string }[] = [{ start: 0, end: HEADER_SECTION_SIZE, name: "header section" }, { start: log.offset, end: log.offset + log.lengthBytes, name: "log" }];
  for (let i = 0; i < count; i++) {
    const e = 16 + i * 32;
    const field = `entry ${i}`;
    const entry: RegionEntry = {
      guid: bytes.slice(e, e + 16),
      fileOffset: toSafeNumber(v.getBigUint64(e + 16, true), structure, `${field} FileOffset`, at + e + 16),
      lengthBytes: v.getUint32(e + 24, true),
      required: (v.getUint32(e + 28, true) & 1) === 1,
    };
    const isBat = Buffer.from(entry.guid).equals(BAT_REGION_GUID);
    const isMetadata = Buffer.from(entry.guid).equals(METADATA_REGION_GUID);
    if (!isBat && !isMetadata) {
      if (entry.required) fail("bad-region-table", structure, `${field} Guid`, at + e, "unknown region marked required");
      continue;
    }
    if ((isBat && bat !== undefined) || (isMetadata && metadata !== undefined)) fail("bad-region-table", structure, `${field} Guid`, at + e, "region listed twice");
    if (entry.fileOffset % MiB !== 0 || entry.fileOffset < HEADER_SECTION_SIZE) fail("bad-region-table", structure, `${field} FileOffset`, at + e + 16, `${hex(entry.fileOffset)} is not a multiple of 1 MiB past the header section`);
    if (entry.lengthBytes === 0 || entry.lengthBytes % MiB !== 0) fail("bad-region-table", structure, `${field} Length`, at + e + 24, `${hex(entry.lengthBytes)} is not a non-zero multiple of 1 MiB`);
    if (entry.fileOffset + entry.lengthBytes > fileSizeBytes) fail("bad-region-table", structure, `${field} FileOffset`, at + e + 16, `region ${hex(entry.fileOffset)}+${hex(entry.lengthBytes)} ends past the end of the file (${hex(fileSizeBytes)})`);
    const name = isBat ? "BAT region" : "metadata region";
    for (const span of spans) {
      if (entry.fileOffset < span.end && span.start < entry.fileOffset + entry.lengthBytes) fail("bad-region-table", structure, `${field} FileOffset`, at + e + 16, `${name} ${hex(entry.fileOffset)}+${hex(entry.lengthBytes)} overlaps the ${span.name}`);
    }
    spans.push({ start: entry.fileOffset, end: entry.fileOffset + entry.lengthBytes, name });
    if (isBat) bat = entry;
    else metadata = entry;
    entries.push(entry);
  }
  if (bat === undefined) fail("bad-region-table", structure, "", at, "no BAT region");
  if (metadata === undefined) fail("bad-region-table", structure, "", at, "no metadata region");
  return { bat, metadata, all: entries };
}

export function serializeRegionTable(entries: readonly RegionEntry[]): Uint8Array {
  const out = new Uint8Array(REGION_TABLE_SIZE);
  const v = view(out);
  v.setUint32(0, REGION_TABLE_SIGNATURE, true);
  v.setUint32(8, entries.length, true);
  entries.forEach((entry, i) => {
    const e = 16 + i * 32;
    out.set(entry.guid, e);
    v.setBigUint64(e + 16, BigInt(entry.fileOffset), true);
    v.setUint32(e + 24, entry.lengthBytes, true);
    v.setUint32(e + 28, entry.required ? 1 : 0, true);
  });
  v.setUint32(4, crc32cWithZeroField(out, 4), true);
  return out;
}

// ---------------------------------------------------------------- metadata

export interface MetadataEntry {
  readonly itemId: Uint8Array;
  /** Offset of the item from the start of the metadata region. */
  readonly offset: number;
  readonly lengthBytes: number;
  readonly flags: number;
}

/** §2.6.2.6 parent locator key/value pairs ("parent_linkage", "relative_path", …). */
export type ParentLocator = ReadonlyMap<string, string>;

export interface VhdxMetadata {
  readonly blockSizeBytes: number;
  readonly leaveBlocksAllocated: boolean;
  readonly hasParent: boolean;
  readonly virtualDiskSizeBytes: number;
  readonly virtualDiskId: Uint8Array;
  readonly logicalSectorBytes: number;
  readonly physicalSectorBytes: number;
  readonly parentLocator: ParentLocator | undefined;
  /** Where each known item sits, relative to the region: `resize` rewrites the size item. */
  readonly entries: readonly MetadataEntry[];
}

const KNOWN_ITEMS = [FILE_PARAMETERS_GUID, VIRTUAL_DISK_SIZE_GUID, VIRTUAL_DISK_ID_GUID, LOGICAL_SECTOR_SIZE_GUID, PHYSICAL_SECTOR_SIZE_GUID, PARENT_LOCATOR_GUID];

/**
 * §2.6: parses the metadata region (its table and every required item) and checks each
 * value's range. `regionOffset` is only for messages.
 * @throws {DiskFormatError} `vhdx.bad-metadata`.
 */
export function parseMetadata(region: Uint8Array, regionOffset: number): VhdxMetadata {
  const structure = "metadata table";
  const v = view(region);
  if (region.length < METADATA_TABLE_SIZE) fail("bad-metadata", structure, "", regionOffset, "truncated");
  const signature = new TextDecoder("latin1").decode(region.subarray(0, 8));
  if (signature !== METADATA_TABLE_SIGNATURE) fail("bad-metadata", structure, "Signature", regionOffset, `"${signature.replace(/[^\x20-\x7e]/g, "?")}" is not "metadata"`);
  const count = v.getUint16(10, true);
  if (count > METADATA_MAX_ENTRIES) fail("bad-metadata", structure, "EntryCount", regionOffset + 10, `${count} is more than ${METADATA_MAX_ENTRIES}`);
  const entries: MetadataEntry[] = [];
  const items = new Map<string, { entry: MetadataEntry; data: Uint8Array }>();
  for (let i = 0; i < count; i++) {
    const e = 32 + i * 32;
    const entry: MetadataEntry = { itemId: region.slice(e, e + 16), offset: v.getUint32(e + 16, true), lengthBytes: v.getUint32(e + 20, true), flags: v.getUint32(e + 24, true) };
    const field = `entry ${i}`;
    const known = KNOWN_ITEMS.some((guid) => Buffer.from(guid).equals(entry.itemId));
    if (!known && (entry.flags & METADATA_FLAG_IS_REQUIRED) !== 0) fail("bad-metadata", structure, `${field} ItemId`, regionOffset + e, "unknown item marked required");
    if (entry.lengthBytes === 0 && entry.offset === 0) continue;
    if (entry.offset < METADATA_TABLE_SIZE || entry.offset + entry.lengthBytes > region.length) {
      fail("bad-metadata", structure, `${field} Offset`, regionOffset + e + 16, `item ${hex(entry.offset)}+${hex(entry.lengthBytes)} is outside the metadata region (${hex(region.length)})`);
    }
    const key = Buffer.from(entry.itemId).toString("hex");
    if (items.has(key)) fail("bad-metadata", structure, `${field} ItemId`, regionOffset + e, "item listed twice");
    items.set(key, { entry, data: region.subarray(entry.offset, entry.offset + entry.lengthBytes) });
    entries.push(entry);
  }
  const item = (guid: Uint8Array, name: string, minLength: number): { entry: MetadataEntry; data: DataView } => {
    const found = items.get(Buffer.from(guid).toString("hex"));
    if (found === undefined) fail("bad-metadata", name, "", regionOffset, "required item missing");
    if (found.data.length < minLength) fail("bad-metadata", name, "Length", regionOffset + found.entry.offset, `${found.data.length} bytes, need ${minLength}`);
    return { entry: found.entry, data: view(found.data) };
  };
  const params = item(FILE_PARAMETERS_GUID, "file parameters", 8);
  const blockSizeBytes = params.data.getUint32(0, true);
  const paramFlags = params.data.getUint32(4, true);
  if (blockSizeBytes < MIN_BLOCK_SIZE || blockSizeBytes > MAX_BLOCK_SIZE || (blockSizeBytes & (blockSizeBytes - 1)) !== 0) {
    fail("bad-metadata", "file parameters", "BlockSize", regionOffset + params.entry.offset, `${hex(blockSizeBytes)} is not a power of 2 from 1 MiB to 256 MiB`);
  }
  const size = item(VIRTUAL_DISK_SIZE_GUID, "virtual disk size", 8);
  const logical = item(LOGICAL_SECTOR_SIZE_GUID, "logical sector size", 4);
  const logicalSectorBytes = logical.data.getUint32(0, true);
  if (logicalSectorBytes !== 512 && logicalSectorBytes !== 4096) fail("bad-metadata", "logical sector size", "LogicalSectorSize", regionOffset + logical.entry.offset, `${logicalSectorBytes} is not 512 or 4096`);
  const physical = item(PHYSICAL_SECTOR_SIZE_GUID, "physical sector size", 4);
  const physicalSectorBytes = physical.data.getUint32(0, true);
  if (physicalSectorBytes !== 512 && physicalSectorBytes !== 4096) fail("bad-metadata", "physical sector size", "PhysicalSectorSize", regionOffset + physical.entry.offset, `${physicalSectorBytes} is not 512 or 4096`);
  const sizeRaw = size.data.getBigUint64(0, true);
  if (sizeRaw === 0n || sizeRaw > BigInt(MAX_VIRTUAL_DISK_SIZE) || sizeRaw % BigInt(logicalSectorBytes) !== 0n) {
    fail("bad-metadata", "virtual disk size", "VirtualDiskSize", regionOffset + size.entry.offset, `${hex(sizeRaw)} is not a non-zero multiple of the ${logicalSectorBytes}-byte sector up to 64 TiB`);
  }
  const id = item(VIRTUAL_DISK_ID_GUID, "virtual disk id", 16);
  const hasParent = (paramFlags & FILE_PARAMETERS_HAS_PARENT) !== 0;
  let parentLocator: ParentLocator | undefined;
  if (hasParent) {
    const locator = item(PARENT_LOCATOR_GUID, "parent locator", 20);
    parentLocator = parseParentLocator(new Uint8Array(locator.data.buffer, locator.data.byteOffset, locator.data.byteLength), regionOffset + locator.entry.offset);
  }
  return {
    blockSizeBytes,
    leaveBlocksAllocated: (paramFlags & FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED) !== 0,
    hasParent,
    virtualDiskSizeBytes: Number(sizeRaw),
    virtualDiskId: new Uint8Array(id.data.buffer.slice(id.data.byteOffset, id.data.byteOffset + 16)),
    logicalSectorBytes,
    physicalSectorBytes,
    parentLocator,
    entries,
  };
}

/** §2.6.2.6: parent locator header and key/value entries (UTF-16LE). */
export function parseParentLocator(data: Uint8Array, at: number): ParentLocator {
  const structure = "parent locator";
  const v = view(data);
  if (!Buffer.from(data.subarray(0, 16)).equals(VHDX_PARENT_LOCATOR_TYPE_GUID)) fail("bad-metadata", structure, "LocatorType", at, "not the VHDX parent locator type");
  const count = v.getUint16(18, true);
  if (20 + count * 12 > data.length) fail("bad-metadata", structure, "KeyValueCount", at + 18, `${count} entries do not fit in ${data.length} bytes`);
  const pairs = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const e = 20 + i * 12;
    const keyOffset = v.getUint32(e, true);
    const valueOffset = v.getUint32(e + 4, true);
    const keyLength = v.getUint16(e + 8, true);
    const valueLength = v.getUint16(e + 10, true);
    if (keyOffset + keyLength > data.length || valueOffset + valueLength > data.length || keyLength === 0) {
      fail("bad-metadata", structure, `entry ${i}`, at + e, "key or value outside the locator");
    }
    const key = Buffer.from(data.subarray(keyOffset, keyOffset + keyLength)).toString("utf16le");
    const value = Buffer.from(data.subarray(valueOffset, valueOffset + valueLength)).toString("utf16le");
    if (pairs.has(key)) fail("bad-metadata", structure, `entry ${i}`, at + e, `key "${key}" listed twice`);
    pairs.set(key, value);
  }
  if (!pairs.has("parent_linkage")) fail("bad-metadata", structure, "parent_linkage", at, "missing");
  return pairs;
}

export function serializeParentLocator(pairs: ParentLocator): Uint8Array {
  const list = [...pairs.entries()].map(([key, value]) => [Buffer.from(key, "utf16le"), Buffer.from(value, "utf16le")] as const);
  let cursor = 20 + list.length * 12;
  const size = cursor + list.reduce((sum, [k, value]) => sum + k.length + value.length, 0);
  const out = new Uint8Array(size);
  const v = view(out);
  out.set(VHDX_PARENT_LOCATOR_TYPE_GUID, 0);
  v.setUint16(18, list.length, true);
  list.forEach(([key, value], i) => {
    const e = 20 + i * 12;
    v.setUint32(e, cursor, true);
    v.setUint16(e + 8, key.length, true);
    out.set(key, cursor);
    cursor += key.length;
    v.setUint32(e + 4, cursor, true);
    v.setUint16(e + 10, value.length, true);
    out.set(value, cursor);
    cursor += value.length;
  });
  return out;
}

/** Builds a whole metadata region (table and items) for a new image. */
export function serializeMetadata(m: Omit<VhdxMetadata, "entries">, regionLengthBytes: number): { region: Uint8Array; entries: MetadataEntry[] } {
  const out = new Uint8Array(regionLengthBytes);
  const v = view(out);
  out.set(new TextEncoder().encode(METADATA_TABLE_SIGNATURE), 0);
  const required = METADATA_FLAG_IS_REQUIRED;
  const disk = METADATA_FLAG_IS_REQUIRED | METADATA_FLAG_IS_VIRTUAL_DISK;
  const items: { guid: Uint8Array; data: Uint8Array; flags: number }[] = [];
  const u32 = (value: number): Uint8Array => {
    const b = new Uint8Array(4);
    view(b).setUint32(0, value, true);
    return b;
  };
  const params = new Uint8Array(8);
  view(params).setUint32(0, m.blockSizeBytes, true);
  view(params).setUint32(4, (m.leaveBlocksAllocated ? FILE_PARAMETERS_LEAVE_BLOCKS_ALLOCATED : 0) | (m.hasParent ? FILE_PARAMETERS_HAS_PARENT : 0), true);
  items.push({ guid: FILE_PARAMETERS_GUID, data: params, flags: required });
  const size = new Uint8Array(8);
  view(size).setBigUint64(0, BigInt(m.virtualDiskSizeBytes), true);
  items.push({ guid: VIRTUAL_DISK_SIZE_GUID, data: size, flags: disk });
  items.push({ guid: VIRTUAL_DISK_ID_GUID, data: m.virtualDiskId, flags: disk });
  items.push({ guid: LOGICAL_SECTOR_SIZE_GUID, data: u32(m.logicalSectorBytes), flags: disk });
  items.push({ guid: PHYSICAL_SECTOR_SIZE_GUID, data: u32(m.physicalSectorBytes), flags: disk });
  if (m.parentLocator !== undefined) items.push({ guid: PARENT_LOCATOR_GUID, data: serializeParentLocator(m.parentLocator), flags: required });
  v.setUint16(10, items.length, true);
  let cursor = METADATA_TABLE_SIZE;
  const entries: MetadataEntry[] = [];
  items.forEach((item, i) => {
    const e = 32 + i * 32;
    out.set(item.guid, e);
    v.setUint32(e + 16, cursor, true);
    v.setUint32(e + 20, item.data.length, true);
    v.setUint32(e + 24, item.flags, true);
    out.set(item.data, cursor);
    entries.push({ itemId: item.guid, offset: cursor, lengthBytes: item.data.length, flags: item.flags });
    cursor += Math.ceil(item.data.length / 8) * 8;
  });
  return { region: out, entries };
}

// ---------------------------------------------------------------- BAT

/** §2.4: how many entries of each kind a disk needs, and where they sit. */
export interface BatGeometry {
  readonly chunkRatio: number;
  readonly payloadBlocks: number;
  readonly bitmapBlocks: number;
  readonly totalEntries: number;
}

export function batGeometry(virtualDiskSizeBytes: number, blockSizeBytes: number, logicalSectorBytes: number, hasParent: boolean): BatGeometry {
  const chunkRatio = (SECTORS_PER_BITMAP_BLOCK * logicalSectorBytes) / blockSizeBytes;
  const payloadBlocks = Math.ceil(virtualDiskSizeBytes / blockSizeBytes);
  const bitmapBlocks = Math.ceil(payloadBlocks / chunkRatio);
  const totalEntries = hasParent ? bitmapBlocks * (chunkRatio + 1) : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  return { chunkRatio, payloadBlocks, bitmapBlocks, totalEntries };
}

/** Index in the BAT of payload block `block`. */
export function payloadEntryIndex(block: number, chunkRatio: number): number {
  return block + Math.floor(block / chunkRatio);
}

/** Index in the BAT of the sector-bitmap entry of chunk `chunk`. */
export function bitmapEntryIndex(chunk: number, chunkRatio: number): number {
  return chunk * (chunkRatio + 1) + chunkRatio;
}

/** A decoded BAT: a state and a file offset (bytes) per entry. */
export interface Bat {
  readonly states: Uint8Array;
  readonly offsets: Float64Array;
}

/**
 * §2.4: decodes and checks a BAT: states valid for their kind, present blocks inside the
 * file and clear of the header section, log, regions and each other.
 * @throws {DiskFormatError} `vhdx.bad-bat`.
 */
export function parseBat(
  bytes: Uint8Array,
  batOffset: number,
  g: BatGeometry,
  o: { blockSizeBytes: number; hasParent: boolean; fileSizeBytes: number; reserved: readonly { start: number; end: number; name: string }[] },
): Bat {
  if (bytes.length < g.totalEntries * 8) fail("bad-bat", "BAT", "", batOffset, `region holds ${Math.floor(bytes.length / 8)} entries, need ${g.totalEntries}`);
  const v = view(bytes);
  const states = new Uint8Array(g.totalEntries);
  const offsets = new Float64Array(g.totalEntries);
  const used: { start: number; end: number; index: number }[] = [];
  for (let i = 0; i < g.totalEntries; i++) {
    const lo = v.getUint32(i * 8, true);
    const hi = v.getUint32(i * 8 + 4, true);
    const state = lo & 7;
    const fileOffset = (hi * 4096 + (lo >>> 20)) * MiB;
    const isBitmap = (i + 1) % (g.chunkRatio + 1) === 0;
    const at = batOffset + i * 8;
    const field = isBitmap ? `sector bitmap entry ${i}` : `payload entry ${i}`;
    let length = 0;
    if (isBitmap) {
      if (state === SB_BLOCK_PRESENT) length = SECTOR_BITMAP_BLOCK_SIZE;
      else if (state !== SB_BLOCK_NOT_PRESENT) fail("bad-bat", "BAT", field, at, `state ${state} is not a sector bitmap state`);
      if (state === SB_BLOCK_PRESENT && !o.hasParent) fail("bad-bat", "BAT", field, at, "sector bitmap present in a disk without a parent");
    } else {
      switch (state) {
        case PAYLOAD_BLOCK_NOT_PRESENT:
        case PAYLOAD_BLOCK_UNDEFINED:
        case PAYLOAD_BLOCK_ZERO:
        case PAYLOAD_BLOCK_UNMAPPED:
          break;
        case PAYLOAD_BLOCK_FULLY_PRESENT:
          length = o.blockSizeBytes;
          break;
        case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
          if (!o.hasParent) fail("bad-bat", "BAT", field, at, "partially present block in a disk without a parent");
          length = o.blockSizeBytes;
          break;
        default:
          fail("bad-bat", "BAT", field, at, `state ${state} is not a payload block state`);
      }
    }
    if (length > 0) {
      if (fileOffset < HEADER_SECTION_SIZE || fileOffset + length > o.fileSizeBytes) {
        fail("bad-bat", "BAT", `${field} FileOffset`, at, `block ${hex(fileOffset)}+${hex(length)} is outside the file (size ${hex(o.fileSizeBytes)})`);
      }
      for (const r of o.reserved) {
        if (fileOffset < r.end && r.start < fileOffset + length) fail("bad-bat", "BAT", `${field} FileOffset`, at, `block ${hex(fileOffset)} overlaps the ${r.name}`);
      }
      used.push({ start: fileOffset, end: fileOffset + length, index: i });
    }
    states[i] = state;
    offsets[i] = length > 0 ? fileOffset : 0;
  }
  used.sort((a, b) => a.start - b.start);
  for (let i = 1; i < used.length; i++) {
    const prev = used[i - 1];
    const cur = used[i];
    if (prev !== undefined && cur !== undefined && cur.start < prev.end) {
      fail("bad-bat", "BAT", `entry ${cur.index} FileOffset`, batOffset + cur.index * 8, `block ${hex(cur.start)} overlaps the block of entry ${prev.index}`);
    }
  }
  return { states, offsets };
}

/** Encodes BAT entry `index` into `out` (8 bytes, little-endian). */
export function encodeBatEntry(state: number, fileOffset: number, out: DataView, at: number): void {
  const mb = fileOffset / MiB;
  out.setUint32(at, ((mb % 4096) << 20) | state, true);
  out.setUint32(at + 4, Math.floor(mb / 4096), true);
}

// ---------------------------------------------------------------- log

export interface LogDescriptor {
  readonly kind: "data" | "zero";
  readonly fileOffset: number;
  /** Zero descriptors: bytes to zero. Data descriptors: 4096. */
  readonly lengthBytes: number;
  /** Data descriptors: the 4 KiB to write. */
  readonly data?: Uint8Array;
}

export interface LogEntry {
  /** Offset of the entry within the log. */
  readonly logOffset: number;
  readonly entryLengthBytes: number;
  readonly tail: number;
  readonly sequenceNumber: bigint;
  readonly flushedFileOffset: number;
  readonly lastFileOffset: number;
  readonly descriptors: readonly LogDescriptor[];
}

/**
 * §2.3.1: parses the log entry starting at `logOffset` of the log `log` (the whole log
 * region); undefined when there is no valid entry there (a log is full of stale and torn
 * entries by design: that is not an error).
 */
export function parseLogEntry(log: Uint8Array, logOffset: number, logGuid: Uint8Array): LogEntry | undefined {
  if (logOffset + LOG_SECTOR_SIZE > log.length) return undefined;
  const v = view(log);
  if (v.getUint32(logOffset, true) !== LOG_ENTRY_SIGNATURE) return undefined;
  const entryLength = v.getUint32(logOffset + 8, true);
  const tail = v.getUint32(logOffset + 12, true);
  const sequenceNumber = v.getBigUint64(logOffset + 16, true);
  const descriptorCount = v.getUint32(logOffset + 24, true);
  if (entryLength === 0 || entryLength % LOG_SECTOR_SIZE !== 0 || logOffset + entryLength > log.length) return undefined;
  if (tail % LOG_SECTOR_SIZE !== 0 || tail >= log.length || sequenceNumber === 0n) return undefined;
  if (!Buffer.from(log.subarray(logOffset + 32, logOffset + 48)).equals(logGuid)) return undefined;
  const descriptorBytes = Math.ceil((LOG_ENTRY_HEADER_SIZE + descriptorCount * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  if (descriptorBytes > entryLength) return undefined;
  const entry = log.subarray(logOffset, logOffset + entryLength);
  if (v.getUint32(logOffset + 4, true) !== crc32cWithZeroField(entry, 4)) return undefined;
  const ev = view(entry);
  const flushedFileOffset = ev.getBigUint64(48, true);
  const lastFileOffset = ev.getBigUint64(56, true);
  if (flushedFileOffset > BigInt(Number.MAX_SAFE_INTEGER) || lastFileOffset > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  const descriptors: LogDescriptor[] = [];
  let dataSector = descriptorBytes;
  for (let i = 0; i < descriptorCount; i++) {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    const signature = ev.getUint32(d, true);
    const fileOffsetBig = ev.getBigUint64(d + 16, true);
    if (ev.getBigUint64(d + 24, true) !== sequenceNumber) return undefined;
    if (fileOffsetBig > BigInt(Number.MAX_SAFE_INTEGER) || fileOffsetBig % BigInt(LOG_SECTOR_SIZE) !== 0n) return undefined;
    const fileOffset = Number(fileOffsetBig);
    if (signature === LOG_ZERO_DESCRIPTOR_SIGNATURE) {
      const length = ev.getBigUint64(d + 8, true);
      if (length % BigInt(LOG_SECTOR_SIZE) !== 0n || length > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
      descriptors.push({ kind: "zero", fileOffset, lengthBytes: Number(length) });
    } else if (signature === LOG_DATA_DESCRIPTOR_SIGNATURE) {
      if (dataSector + LOG_SECTOR_SIZE > entryLength) return undefined;
      if (ev.getUint32(dataSector, true) !== LOG_DATA_SECTOR_SIGNATURE) return undefined;
      const high = ev.getUint32(dataSector + 4, true);
      const low = ev.getUint32(dataSector + 4092, true);
      if ((BigInt(high) << 32n) + BigInt(low) !== sequenceNumber) return undefined;
      const data = new Uint8Array(LOG_SECTOR_SIZE);
      data.set(entry.subarray(d + 8, d + 16), 0); // LeadingBytes
      data.set(entry.subarray(dataSector + 8, dataSector + 4092), 8);
      data.set(entry.subarray(d + 4, d + 8), 4092); // TrailingBytes
      descriptors.push({ kind: "data", fileOffset, lengthBytes: LOG_SECTOR_SIZE, data });
      dataSector += LOG_SECTOR_SIZE;
    } else {
      return undefined;
    }
  }
  return { logOffset, entryLengthBytes: entryLength, tail, sequenceNumber, flushedFileOffset: Number(flushedFileOffset), lastFileOffset: Number(lastFileOffset), descriptors };
}

/**
 * §2.3.3: finds the active sequence of a log: runs of valid entries with consecutive
 * sequence numbers, each run's last entry naming (by its tail) the first one to replay.
 * Returns the entries to replay in order, empty when none.
 */
export function findActiveSequence(log: Uint8Array, logGuid: Uint8Array): LogEntry[] {
  if (guidIsZero(logGuid)) return [];
  const valid = new Map<number, LogEntry>();
  for (let at = 0; at + LOG_SECTOR_SIZE <= log.length; at += LOG_SECTOR_SIZE) {
    const entry = parseLogEntry(log, at, logGuid);
    if (entry !== undefined) valid.set(at, entry);
  }
  let best: LogEntry[] = [];
  let bestSequence = 0n;
  for (const start of valid.values()) {
    const run: LogEntry[] = [start];
    let current = start;
    for (;;) {
      const next = valid.get((current.logOffset + current.entryLengthBytes) % log.length);
      if (next?.sequenceNumber !== current.sequenceNumber + 1n || run.includes(next)) break;
      run.push(next);
      current = next;
    }
    const head = run[run.length - 1] ?? start;
    const tailIndex = run.findIndex((entry) => entry.logOffset === head.tail);
    if (tailIndex < 0) continue;
    if (head.sequenceNumber > bestSequence) {
      bestSequence = head.sequenceNumber;
      best = run.slice(tailIndex);
    }
  }
  return best;
}

/**
 * Builds one log entry writing 4 KiB `sectors` (file offsets 4 KiB-aligned), placed at
 * log offset `logOffset` with its tail there too (each entry is a whole transaction).
 */
export function serializeLogEntry(
  sectors: readonly { fileOffset: number; data: Uint8Array }[],
  o: { sequenceNumber: bigint; logGuid: Uint8Array; logOffset: number; flushedFileOffset: number; lastFileOffset: number },
): Uint8Array {
  const descriptorBytes = Math.ceil((LOG_ENTRY_HEADER_SIZE + sectors.length * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  const out = new Uint8Array(descriptorBytes + sectors.length * LOG_SECTOR_SIZE);
  const v = view(out);
  v.setUint32(0, LOG_ENTRY_SIGNATURE, true);
  v.setUint32(8, out.length, true);
  v.setUint32(12, o.logOffset, true);
  v.setBigUint64(16, o.sequenceNumber, true);
  v.setUint32(24, sectors.length, true);
  out.set(o.logGuid, 32);
  v.setBigUint64(48, BigInt(o.flushedFileOffset), true);
  v.setBigUint64(56, BigInt(o.lastFileOffset), true);
  const high = Number(o.sequenceNumber >> 32n);
  const low = Number(o.sequenceNumber & 0xffffffffn);
  sectors.forEach((sector, i) => {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    v.setUint32(d, LOG_DATA_DESCRIPTOR_SIGNATURE, true);
    out.set(sector.data.subarray(4092, 4096), d + 4);
    out.set(sector.data.subarray(0, 8), d + 8);
    v.setBigUint64(d + 16, BigInt(sector.fileOffset), true);
    v.setBigUint64(d + 24, o.sequenceNumber, true);
    const s = descriptorBytes + i * LOG_SECTOR_SIZE;
    v.setUint32(s, LOG_DATA_SECTOR_SIGNATURE, true);
    v.setUint32(s + 4, high, true);
    out.set(sector.data.subarray(8, 4092), s + 8);
    v.setUint32(s + 4092, low, true);
  });
  v.setUint32(4, crc32cWithZeroField(out, 4), true);
  return out;
}

/** Data sectors that fit in one entry of a log `logLengthBytes` long. */
export function maxSectorsPerEntry(logLengthBytes: number): number {
  // n data sectors + ceil((64 + 32n) / 4096) descriptor sectors <= log sectors.
  const logSectors = logLengthBytes / LOG_SECTOR_SIZE;
  let n = logSectors - 1;
  while (n > 0 && n + Math.ceil((LOG_ENTRY_HEADER_SIZE + n * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR_SIZE) > logSectors) n--;
  return n;
}
