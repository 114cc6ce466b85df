/**
 * What the bytes of a VHD file are: the footer, the dynamic disk header, the BAT and the
 * sector bitmaps, as in Microsoft's "Virtual Hard Disk Image Format Specification" v1.0
 * (2006). Big-endian throughout. Pure parsers that check every field, pure serializers.
 */
import { DiskFormatError } from "../errors.js";

export const FOOTER_SIZE = 512;
export const FOOTER_COOKIE = "conectix";
export const FOOTER_FEATURES_RESERVED = 2;
export const FOOTER_VERSION = 0x00010000;
export const FIXED_DATA_OFFSET = 0xffffffffffffffffn;
export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;
/** Hyper-V's creator application: other tools trust the size field of such files (not CHS). */
export const CREATOR_APPLICATION = "win ";
export const CREATOR_HOST_OS_WINDOWS = 0x5769326b; // "Wi2k"
export const DYNAMIC_HEADER_SIZE = 1024;
export const DYNAMIC_HEADER_COOKIE = "cxsparse";
export const DYNAMIC_HEADER_VERSION = 0x00010000;
export const BAT_ENTRY_UNUSED = 0xffffffff;
export const PLATFORM_CODE_W2RU = 0x57327275; // "W2ru": relative Windows path, UTF-16LE
export const PLATFORM_CODE_W2KU = 0x57326b75; // "W2ku": absolute Windows path, UTF-16LE
/** The largest VHD Hyper-V makes: 2040 GiB. */
export const MAX_VHD_SIZE = 2040 * 1024 * 1024 * 1024;
/** Seconds between the Unix epoch and 2000-01-01 00:00:00 UTC, the VHD epoch. */
export const VHD_EPOCH_SECONDS = 946684800;

const hex = (value: number | bigint): string => `0x${value.toString(16)}`;

function fail(code: string, structure: string, field: string, offset: number, message: string): never {
  throw new DiskFormatError(`vhd.${code}`, { structure, field, offset, message });
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The VHD checksum: one's complement of the byte sum, the checksum field counted as zero. */
export function vhdChecksum(bytes: Uint8Array, fieldOffset: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) if (i < fieldOffset || i >= fieldOffset + 4) sum = (sum + (bytes[i] ?? 0)) >>> 0;
  return ~sum >>> 0;
}

export interface VhdFooter {
  readonly features: number;
  readonly dataOffset: bigint;
  readonly timestamp: number;
  readonly creatorApplication: string;
  readonly creatorVersion: number;
  readonly creatorHostOs: number;
  readonly originalSizeBytes: number;
  readonly currentSizeBytes: number;
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
  readonly diskType: number;
  readonly uniqueId: Uint8Array;
  readonly savedState: number;
}

/**
 * Parses a footer (or its copy at offset 0); `at` is only for messages.
 * @throws {DiskFormatError} `vhd.bad-footer`.
 */
export function parseFooter(bytes: Uint8Array, at: number): VhdFooter {
  const structure = at === 0 ? "footer copy" : "footer";
  if (bytes.length < FOOTER_SIZE) fail("bad-footer", structure, "", at, "truncated");
  const v = view(bytes);
  const cookie = new TextDecoder("latin1").decode(bytes.subarray(0, 8));
  if (cookie !== FOOTER_COOKIE) fail("bad-footer", structure, "Cookie", at, `"${cookie.replace(/[^\x20-\x7e]/g, "?")}" is not "conectix"`);
  const checksum = v.getUint32(64);
  const computed = vhdChecksum(bytes.subarray(0, FOOTER_SIZE), 64);
  if (checksum !== computed) fail("bad-footer", structure, "Checksum", at + 64, `${hex(checksum)} does not match the contents (${hex(computed)})`);
  const version = v.getUint32(12);
  if (version !== FOOTER_VERSION) fail("bad-footer", structure, "FileFormatVersion", at + 12, `${hex(version)} is not 0x10000`);
  const currentSize = v.getBigUint64(48);
  const diskType = v.getUint32(60);
  if (diskType !== DISK_TYPE_FIXED && diskType !== DISK_TYPE_DYNAMIC && diskType !== DISK_TYPE_DIFFERENCING) fail("bad-footer", structure, "DiskType", at + 60, `${diskType} is not 2 (fixed), 3 (dynamic) or 4 (differencing)`);
  if (currentSize === 0n || currentSize % 512n !== 0n || currentSize > BigInt(MAX_VHD_SIZE)) fail("bad-footer", structure, "CurrentSize", at + 48, `${hex(currentSize)} is not a non-zero multiple of 512 up to 2040 GiB`);
  const originalSize = v.getBigUint64(40);
  return {
    features: v.getUint32(8),
    dataOffset: v.getBigUint64(16),
    timestamp: v.getUint32(24),
    creatorApplication: new TextDecoder("latin1").decode(bytes.subarray(28, 32)),
    creatorVersion: v.getUint32(32),
    creatorHostOs: v.getUint32(36),
    originalSizeBytes: originalSize > BigInt(Number.MAX_SAFE_INTEGER) ? 0 : Number(originalSize),
    currentSizeBytes: Number(currentSize),
    cylinders: v.getUint16(56),
    heads: v.getUint8(58),
    sectorsPerTrack: v.getUint8(59),
    diskType,
    uniqueId: bytes.slice(68, 84),
    savedState: v.getUint8(84),
  };
}

export function serializeFooter(f: VhdFooter): Uint8Array {
  const out = new Uint8Array(FOOTER_SIZE);
  const v = view(out);
  out.set(new TextEncoder().encode(FOOTER_COOKIE), 0);
  v.setUint32(8, f.features);
  v.setUint32(12, FOOTER_VERSION);
  v.setBigUint64(16, f.dataOffset);
  v.setUint32(24, f.timestamp);
  out.set(new TextEncoder().encode(f.creatorApplication.padEnd(4).slice(0, 4)), 28);
  v.setUint32(32, f.creatorVersion);
  v.setUint32(36, f.creatorHostOs);
  v.setBigUint64(40, BigInt(f.originalSizeBytes));
  v.setBigUint64(48, BigInt(f.currentSizeBytes));
  v.setUint16(56, f.cylinders);
  v.setUint8(58, f.heads);
  v.setUint8(59, f.sectorsPerTrack);
  v.setUint32(60, f.diskType);
  out.set(f.uniqueId, 68);
  v.setUint8(84, f.savedState);
  v.setUint32(64, vhdChecksum(out, 64));
  return out;
}

/** The spec's CHS geometry for a size (appendix "CHS calculation"). */
export function chsGeometry(sizeBytes: number): { cylinders: number; heads: number; sectorsPerTrack: number } {
  let totalSectors = Math.floor(sizeBytes / 512);
  if (totalSectors > 65535 * 16 * 255) totalSectors = 65535 * 16 * 255;
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.floor((cylinderTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

export interface VhdParentLocatorEntry {
  readonly platformCode: number;
  readonly dataSpaceBytes: number;
  readonly dataLengthBytes: number;
  readonly dataOffset: number;
}

export interface VhdDynamicHeader {
  readonly tableOffset: number;
  readonly maxTableEntries: number;
  readonly blockSizeBytes: number;
  readonly parentUniqueId: Uint8Array;
  readonly parentTimestamp: number;
  readonly parentUnicodeName: string;
  readonly parentLocators: readonly VhdParentLocatorEntry[];
}

/**
 * Parses the dynamic disk header at `at` and checks it against the file size.
 * @throws {DiskFormatError} `vhd.bad-dynamic-header`.
 */
export function parseDynamicHeader(bytes: Uint8Array, at: number, fileSizeBytes: number): VhdDynamicHeader {
  const structure = "dynamic disk header";
  if (bytes.length < DYNAMIC_HEADER_SIZE) fail("bad-dynamic-header", structure, "", at, "truncated");
  const v = view(bytes);
  const cookie = new TextDecoder("latin1").decode(bytes.subarray(0, 8));
  if (cookie !== DYNAMIC_HEADER_COOKIE) fail("bad-dynamic-header", structure, "Cookie", at, `"${cookie.replace(/[^\x20-\x7e]/g, "?")}" is not "cxsparse"`);
  const checksum = v.getUint32(36);
  const computed = vhdChecksum(bytes.subarray(0, DYNAMIC_HEADER_SIZE), 36);
  if (checksum !== computed) fail("bad-dynamic-header", structure, "Checksum", at + 36, `${hex(checksum)} does not match the contents (${hex(computed)})`);
  const version = v.getUint32(24);
  if (version !== DYNAMIC_HEADER_VERSION) fail("bad-dynamic-header", structure, "HeaderVersion", at + 24, `${hex(version)} is not 0x10000`);
  const tableOffset = v.getBigUint64(16);
  const maxTableEntries = v.getUint32(28);
  const blockSizeBytes = v.getUint32(32);
  if (blockSizeBytes < 4096 || blockSizeBytes > 256 * 1024 * 1024 || (blockSizeBytes & (blockSizeBytes - 1)) !== 0) fail("bad-dynamic-header", structure, "BlockSize", at + 32, `${hex(blockSizeBytes)} is not a power of 2 from 4 KiB to 256 MiB`);
  if (tableOffset % 512n !== 0n || tableOffset < 512n || tableOffset + BigInt(maxTableEntries) * 4n > BigInt(fileSizeBytes)) {
    fail("bad-dynamic-header", structure, "TableOffset", at + 16, `BAT ${hex(tableOffset)} with ${maxTableEntries} entries is outside the file (size ${hex(fileSizeBytes)})`);
  }
  const parentLocators: VhdParentLocatorEntry[] = [];
  for (let i = 0; i < 8; i++) {
    const e = 576 + i * 24;
    const platformCode = v.getUint32(e);
    if (platformCode === 0) continue;
    const dataLengthBytes = v.getUint32(e + 8);
    const dataOffset = v.getBigUint64(e + 16);
    if (dataLengthBytes > 65536 || dataOffset + BigInt(dataLengthBytes) > BigInt(fileSizeBytes)) {
      fail("bad-dynamic-header", structure, `ParentLocatorEntry ${i}`, at + e, `locator ${hex(dataOffset)}+${hex(dataLengthBytes)} is outside the file`);
    }
    parentLocators.push({ platformCode, dataSpaceBytes: v.getUint32(e + 4), dataLengthBytes, dataOffset: Number(dataOffset) });
  }
  let nameEnd = 64;
  while (nameEnd < 64 + 512 && ((bytes[nameEnd] ?? 0) !== 0 || (bytes[nameEnd + 1] ?? 0) !== 0)) nameEnd += 2;
  const nameBytes = Buffer.from(bytes.subarray(64, nameEnd));
  return {
    tableOffset: Number(tableOffset),
    maxTableEntries,
    blockSizeBytes,
    parentUniqueId: bytes.slice(40, 56),
    parentTimestamp: v.getUint32(56),
    parentUnicodeName: Buffer.from(nameBytes.swap16()).toString("utf16le"),
    parentLocators,
  };
}

export function serializeDynamicHeader(h: VhdDynamicHeader): Uint8Array {
  const out = new Uint8Array(DYNAMIC_HEADER_SIZE);
  const v = view(out);
  out.set(new TextEncoder().encode(DYNAMIC_HEADER_COOKIE), 0);
  v.setBigUint64(8, 0xffffffffffffffffn);
  v.setBigUint64(16, BigInt(h.tableOffset));
  v.setUint32(24, DYNAMIC_HEADER_VERSION);
  v.setUint32(28, h.maxTableEntries);
  v.setUint32(32, h.blockSizeBytes);
  out.set(h.parentUniqueId, 40);
  v.setUint32(56, h.parentTimestamp);
  const name = Buffer.from(h.parentUnicodeName.slice(0, 255), "utf16le").swap16();
  out.set(name, 64);
  h.parentLocators.slice(0, 8).forEach((l, i) => {
    const e = 576 + i * 24;
    v.setUint32(e, l.platformCode);
    v.setUint32(e + 4, l.dataSpaceBytes);
    v.setUint32(e + 8, l.dataLengthBytes);
    v.setBigUint64(e + 16, BigInt(l.dataOffset));
  });
  v.setUint32(36, vhdChecksum(out, 36));
  return out;
}

/** Bytes of a block's sector bitmap: one bit per sector, padded to 512. */
export function bitmapBytes(blockSizeBytes: number): number {
  return Math.ceil(blockSizeBytes / 512 / 8 / 512) * 512;
}

/** A structure of the file blocks must stay clear of: `[start, end)` and its name. */
export interface ReservedRange {
  readonly start: number;
  readonly end: number;
  readonly name: string;
}

/**
 * Decodes the BAT (sector offsets, 0xFFFFFFFF unused) and checks each used block lies in
 * the file (after the footer copy, before `fileSizeBytes`), clear of every `reserved`
 * structure (dynamic header, BAT, parent locators: a grown disk's BAT may follow the
 * blocks) and of every other block.
 * @throws {DiskFormatError} `vhd.bad-bat`.
 */
export function parseBat(bytes: Uint8Array, tableOffset: number, o: { blocks: number; blockSizeBytes: number; fileSizeBytes: number; reserved: readonly ReservedRange[] }): Float64Array {
  const v = view(bytes);
  const out = new Float64Array(o.blocks).fill(-1);
  const span = bitmapBytes(o.blockSizeBytes) + o.blockSizeBytes;
  const used: { start: number; index: number }[] = [];
  for (let i = 0; i < o.blocks; i++) {
    const sector = v.getUint32(i * 4);
    if (sector === BAT_ENTRY_UNUSED) continue;
    const start = sector * 512;
    if (start < FOOTER_SIZE || start + span > o.fileSizeBytes) {
      fail("bad-bat", "BAT", `entry ${i}`, tableOffset + i * 4, `block at ${hex(start)}+${hex(span)} is outside the data area (${hex(FOOTER_SIZE)}..${hex(o.fileSizeBytes)})`);
    }
    const clash = o.reserved.find((r) => start < r.end && r.start < start + span);
    if (clash !== undefined) fail("bad-bat", "BAT", `entry ${i}`, tableOffset + i * 4, `block at ${hex(start)}+${hex(span)} overlaps the ${clash.name} (${hex(clash.start)}..${hex(clash.end)})`);
    out[i] = start;
    used.push({ start, index: i });
  }
  used.sort((a, b) => a.start - b.start);
  for (let i = 1; i < used.length; i++) {
    const prev = used[i - 1];
    const cur = used[i];
    if (prev !== undefined && cur !== undefined && cur.start < prev.start + span) fail("bad-bat", "BAT", `entry ${cur.index}`, tableOffset + cur.index * 4, `block at ${hex(cur.start)} overlaps the block of entry ${prev.index}`);
  }
  return out;
}
