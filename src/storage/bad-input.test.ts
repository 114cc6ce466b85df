/**
 * Bad input, one case per field the issue lists: wrong signatures, bad checksums, fields
 * out of range, BAT entries pointing outside the file, into metadata or at each other,
 * absurd sizes, truncated files, a parent that is not the one recorded. Each is refused
 * with its code and a message naming the file, the structure and the field, and neither
 * a read-only nor a read-write open writes a byte.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { BlockImage } from "./block-image.js";
import { crc32cWithZeroField } from "./crc32c.js";
import { DiskError, DiskFormatError } from "./errors.js";
import { MemoryFile } from "./file.js";
import { vhdChecksum } from "./vhd/format.js";
import { VhdImage } from "./vhd/image.js";
import { FILE_PARAMETERS_GUID, LOGICAL_SECTOR_SIZE_GUID, MiB, VIRTUAL_DISK_SIZE_GUID } from "./vhdx/format.js";
import { VhdxImage } from "./vhdx/image.js";

type Opener = (file: MemoryFile) => Promise<BlockImage>;

async function vhdxFixture(): Promise<Uint8Array> {
  const file = new MemoryFile();
  const image = await VhdxImage.create(file, { sizeBytes: 8 * MiB, type: "dynamic", blockSizeBytes: MiB });
  await image.write(0, new Uint8Array(4096).fill(7));
  await image.write(MiB, new Uint8Array(4096).fill(8));
  await image.close();
  return file.bytes();
}

async function vhdFixture(): Promise<Uint8Array> {
  const file = new MemoryFile();
  const image = await VhdImage.create(file, { sizeBytes: 8 * MiB, type: "dynamic", blockSizeBytes: MiB });
  await image.write(0, new Uint8Array(4096).fill(7));
  await image.write(MiB, new Uint8Array(4096).fill(8));
  await image.close();
  return file.bytes();
}

function flip(b: Uint8Array, at: number, mask: number): void {
  b[at] = (b[at] ?? 0) ^ mask;
}

const be = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Opens `bytes` read-only and read-write; both must fail alike and write nothing. */
async function assertRefused(label: string, bytes: Uint8Array, open: Opener, expected: { code: RegExp; message: RegExp }): Promise<void> {
  for (const writable of [false, true]) {
    const file = new MemoryFile(bytes, { writable, path: "bad.img" });
    const error = await open(file).then(
      async (image) => {
        await image.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    const mode = writable ? "read-write" : "read-only";
    assert.ok(error instanceof DiskFormatError || error instanceof DiskError, `${label} (${mode}): opened, or threw ${String(error)}`);
    assert.match(error.code, expected.code, `${label} (${mode}): ${error.message}`);
    assert.match(error.message, /^bad\.img: /, `${label}: the message does not start with the file`);
    assert.match(error.message, expected.message, `${label} (${mode}): ${error.message}`);
    assert.equal(error.message.split("\n").length, 1, `${label}: not one line`);
    assert.deepEqual(file.writes, [], `${label} (${mode}): the open wrote to a bad image`);
  }
}

const openVhdx: Opener = (file) => VhdxImage.open(file, { readonly: !file.writable });
const openVhd: Opener = (file) => VhdImage.open(file, { readonly: !file.writable });

/** Offset of a VHDX metadata item's value (region at 2 MiB, table entries from +32). */
function vhdxItem(bytes: Uint8Array, guid: Uint8Array): number {
  const region = 2 * MiB;
  const count = new DataView(bytes.buffer).getUint16(region + 10, true);
  for (let i = 0; i < count; i++) {
    const at = region + 32 + i * 32;
    if (Buffer.from(bytes.subarray(at, at + 16)).equals(guid)) return region + new DataView(bytes.buffer).getUint32(at + 16, true);
  }
  throw new Error("metadata item not found");
}

/** Offset of the metadata table entry (ItemId, Offset, Length, flags) of a VHDX item. */
function vhdxEntry(bytes: Uint8Array, guid: Uint8Array): number {
  const region = 2 * MiB;
  const count = new DataView(bytes.buffer).getUint16(region + 10, true);
  for (let i = 0; i < count; i++) {
    const at = region + 32 + i * 32;
    if (Buffer.from(bytes.subarray(at, at + 16)).equals(guid)) return at;
  }
  throw new Error("metadata item not found");
}

function setVhdxBat(bytes: Uint8Array, index: number, state: number, fileOffset: number): void {
  new DataView(bytes.buffer).setBigUint64(3 * MiB + index * 8, (BigInt(fileOffset / MiB) << 20n) | BigInt(state), true);
}

/** Rewrites a VHDX header's field and its CRC-32C, in both headers. */
function setVhdxHeaders(bytes: Uint8Array, edit: (view: DataView) => void): void {
  for (const at of [64 * 1024, 128 * 1024]) {
    const header = bytes.subarray(at, at + 4096);
    edit(new DataView(header.buffer, header.byteOffset, 4096));
    new DataView(header.buffer, header.byteOffset, 4096).setUint32(4, crc32cWithZeroField(header, 4), true);
  }
}

const VHDX_CASES: { label: string; edit: (b: Uint8Array) => Uint8Array | undefined; code: RegExp; message: RegExp }[] = [
  { label: "wrong file identifier signature", edit: (b) => { b.set(Buffer.from("vhdxFILE"), 0); }, code: /^vhdx\.bad-signature$/, message: /file identifier.*Signature/ },
  {
    label: "both headers fail their checksum",
    edit: (b) => {
      flip(b, 64 * 1024 + 100, 1);
      flip(b, 128 * 1024 + 100, 1);
    },
    code: /^vhdx\.bad-header$/,
    message: /header \d.*Checksum/,
  },
  {
    label: "header log offset past the end of the file",
    edit: (b) => {
      setVhdxHeaders(b, (v) => {
        v.setBigUint64(72, 1n << 40n, true);
      });
    },
    code: /^vhdx\.bad-header$/,
    message: /header \d.*Log/,
  },
  {
    label: "both region tables with a wrong signature",
    edit: (b) => {
      flip(b, 192 * 1024, 0xff);
      flip(b, 256 * 1024, 0xff);
    },
    code: /^vhdx\.bad-region-table$/,
    message: /region table.*Signature|region table.*Checksum/,
  },
  {
    label: "block size not a power of two",
    edit: (b) => {
      be(b).setUint32(vhdxItem(b, FILE_PARAMETERS_GUID), 3 * MiB, true);
    },
    code: /^vhdx\.bad-metadata$/,
    message: /BlockSize/i,
  },
  {
    label: "logical sector size 1000",
    edit: (b) => {
      be(b).setUint32(vhdxItem(b, LOGICAL_SECTOR_SIZE_GUID), 1000, true);
    },
    code: /^vhdx\.bad-metadata$/,
    message: /LogicalSectorSize/i,
  },
  {
    label: "virtual size of 1 EiB",
    edit: (b) => {
      be(b).setBigUint64(vhdxItem(b, VIRTUAL_DISK_SIZE_GUID), 1n << 60n, true);
    },
    code: /^vhdx\.bad-metadata$/,
    message: /VirtualDiskSize/i,
  },
  {
    label: "BAT entry pointing past the end of the file",
    edit: (b) => { setVhdxBat(b, 0, 6, 1024 * 1024 * MiB); },
    code: /^vhdx\.bad-bat$/,
    message: /BAT.*FileOffset/,
  },
  { label: "BAT entry pointing into the metadata region", edit: (b) => { setVhdxBat(b, 0, 6, 2 * MiB); }, code: /^vhdx\.bad-bat$/, message: /BAT.*metadata region/ },
  {
    label: "two BAT entries pointing at the same block",
    edit: (b) => {
      const view = new DataView(b.buffer);
      view.setBigUint64(3 * MiB + 8, view.getBigUint64(3 * MiB, true), true);
    },
    code: /^vhdx\.bad-bat$/,
    message: /BAT.*(overlap|same|also)/i,
  },
  { label: "BAT entry with an undefined state (4)", edit: (b) => { setVhdxBat(b, 0, 4, 4 * MiB); }, code: /^vhdx\.bad-bat$/, message: /BAT.*State/i },
  { label: "metadata table with a wrong signature", edit: (b) => { flip(b, 2 * MiB, 0xff); }, code: /^vhdx\.bad-metadata$/, message: /metadata.*Signature/ },
  {
    label: "a required metadata item missing (virtual disk size)",
    edit: (b) => {
      const at = vhdxEntry(b, VIRTUAL_DISK_SIZE_GUID);
      flip(b, at, 0xff); // another, unknown item id...
      be(b).setUint32(at + 24, 0, true); // ...not marked required
    },
    code: /^vhdx\.bad-metadata$/,
    message: /virtual disk size.*required item missing/,
  },
  {
    label: "an unknown metadata item marked required",
    edit: (b) => { flip(b, vhdxEntry(b, VIRTUAL_DISK_SIZE_GUID), 0xff); },
    code: /^vhdx\.bad-metadata$/,
    message: /metadata.*ItemId.*unknown item marked required/,
  },
  {
    label: "a metadata item outside the metadata region",
    edit: (b) => { be(b).setUint32(vhdxEntry(b, FILE_PARAMETERS_GUID) + 16, 0xfffff000, true); },
    code: /^vhdx\.bad-metadata$/,
    message: /metadata.*Offset.*outside the metadata region/,
  },
  { label: "truncated inside the BAT region", edit: (b) => b.slice(0, 3 * MiB + 512 * 1024), code: /^vhdx\.(truncated|bad-region-table|bad-bat)$/, message: /(region table|BAT)/ },
  { label: "truncated inside a payload block", edit: (b) => b.slice(0, 4 * MiB + 4096), code: /^vhdx\.bad-bat$/, message: /BAT.*FileOffset/ },
  { label: "truncated inside the header section", edit: (b) => b.slice(0, 100_000), code: /^vhdx\.truncated$/, message: /file.*header section/ },
];

for (const c of VHDX_CASES) {
  test(`bad input: VHDX ${c.label} is refused naming the structure and field, without a write`, async () => {
    const bytes = await vhdxFixture();
    const edited = c.edit(bytes) ?? bytes;

    await assertRefused(c.label, edited, openVhdx, c);
  });
}

/** Rewrites a VHD footer field and checksum, at the end and in the copy at offset 0. */
function setVhdFooters(bytes: Uint8Array, edit: (view: DataView) => void): void {
  for (const at of [0, bytes.length - 512]) {
    const footer = bytes.subarray(at, at + 512);
    const view = new DataView(footer.buffer, footer.byteOffset, 512);
    edit(view);
    view.setUint32(64, vhdChecksum(footer, 64));
  }
}

/** Rewrites a VHD dynamic header field (at 512) and its checksum. */
function setVhdDynamicHeader(bytes: Uint8Array, edit: (view: DataView) => void): void {
  const header = bytes.subarray(512, 1536);
  const view = new DataView(header.buffer, header.byteOffset, 1024);
  edit(view);
  view.setUint32(36, vhdChecksum(header, 36));
}

const BAT = 1536;

const VHD_CASES: typeof VHDX_CASES = [
  {
    label: "wrong footer cookie (both copies)",
    edit: (b) => {
      setVhdFooters(b, (v) => {
        v.setUint8(0, 0x43);
      });
    },
    code: /^vhd\.bad-footer$/,
    message: /footer.*Cookie/,
  },
  {
    label: "footer checksum mismatch (both copies)",
    edit: (b) => {
      flip(b, 40, 1);
      flip(b, b.length - 512 + 40, 1);
    },
    code: /^vhd\.bad-footer$/,
    message: /footer.*Checksum/,
  },
  {
    label: "virtual size of 1 PiB",
    edit: (b) => {
      setVhdFooters(b, (v) => {
        v.setBigUint64(48, 1n << 50n);
      });
    },
    code: /^vhd\.bad-(footer|dynamic-header)$/,
    message: /(CurrentSize|MaxTableEntries)/,
  },
  {
    label: "unknown disk type 7",
    edit: (b) => {
      setVhdFooters(b, (v) => {
        v.setUint32(60, 7);
      });
    },
    code: /^vhd\.bad-footer$/,
    message: /footer.*DiskType/,
  },
  {
    label: "wrong dynamic header cookie",
    edit: (b) => {
      setVhdDynamicHeader(b, (v) => {
        v.setUint8(0, 0x43);
      });
    },
    code: /^vhd\.bad-dynamic-header$/,
    message: /dynamic disk header.*Cookie/,
  },
  {
    label: "block size not a power of two",
    edit: (b) => {
      setVhdDynamicHeader(b, (v) => {
        v.setUint32(32, 3 * MiB);
      });
    },
    code: /^vhd\.bad-dynamic-header$/,
    message: /dynamic disk header.*BlockSize/,
  },
  {
    label: "BAT entry pointing past the end of the file",
    edit: (b) => { be(b).setUint32(BAT, 0x7ffffff0); },
    code: /^vhd\.bad-bat$/,
    message: /BAT.*entry 0/,
  },
  { label: "BAT entry pointing into the dynamic header", edit: (b) => { be(b).setUint32(BAT, 1); }, code: /^vhd\.bad-bat$/, message: /BAT.*entry 0/ },
  {
    label: "two BAT entries pointing at the same block",
    edit: (b) => { be(b).setUint32(BAT + 4, be(b).getUint32(BAT)); },
    code: /^vhd\.bad-bat$/,
    message: /BAT.*entry 1/,
  },
  {
    label: "parent locator pointing past the end of the file",
    edit: (b) => {
      setVhdDynamicHeader(b, (v) => {
        v.setUint32(576, 0x5732_6b75); // "W2ku"
        v.setUint32(576 + 4, 512);
        v.setUint32(576 + 8, 512);
        v.setBigUint64(576 + 16, 1n << 40n);
      });
    },
    code: /^vhd\.bad-dynamic-header$/,
    message: /dynamic disk header.*ParentLocatorEntry 0.*outside the file/,
  },
  { label: "truncated inside a block", edit: (b) => b.slice(0, 2048 + 512 + 100_000), code: /^vhd\.bad-bat$/, message: /BAT.*entry/ },
  { label: "truncated below one sector", edit: (b) => b.slice(0, 300), code: /^vhd\.truncated$/, message: /file/ },
];

for (const c of VHD_CASES) {
  test(`bad input: VHD ${c.label} is refused naming the structure and field, without a write`, async () => {
    const bytes = await vhdFixture();
    const edited = c.edit(bytes) ?? bytes;

    await assertRefused(c.label, edited, openVhd, c);
  });
}

test("bad input: a differencing VHD over a parent with another unique id is refused (disk.parent-mismatch)", async () => {
  const parentFile = new MemoryFile();
  await (await VhdImage.create(parentFile, { sizeBytes: 4 * MiB, type: "dynamic" })).close();
  const parent = await VhdImage.open(new MemoryFile(parentFile.bytes(), { writable: false }), { readonly: true });
  const childFile = new MemoryFile();
  await (await VhdImage.create(childFile, { sizeBytes: 0, type: "differencing", parent: { image: parent, relativePath: "p.vhd", absolutePath: "/p.vhd" } })).close();
  const otherFile = new MemoryFile();
  await (await VhdImage.create(otherFile, { sizeBytes: 4 * MiB, type: "dynamic" })).close();

  await assertRefused("parent swapped", childFile.bytes(), (file) =>
    VhdImage.open(file, { readonly: !file.writable, openParent: () => VhdImage.open(new MemoryFile(otherFile.bytes(), { writable: false, path: "p.vhd" }), { readonly: true }) }),
  { code: /^disk\.parent-mismatch$/, message: /parent p\.vhd has unique id/ });
});

test("bad input: a differencing VHDX over a parent with another DataWriteGuid is refused (disk.parent-mismatch)", async () => {
  const parentFile = new MemoryFile();
  await (await VhdxImage.create(parentFile, { sizeBytes: 4 * MiB, type: "dynamic" })).close();
  const parent = await VhdxImage.open(new MemoryFile(parentFile.bytes(), { writable: false }), { readonly: true });
  const childFile = new MemoryFile();
  await (await VhdxImage.create(childFile, { sizeBytes: 0, type: "differencing", parent: { image: parent, relativePath: "p.vhdx", absolutePath: "/p.vhdx" } })).close();
  const otherFile = new MemoryFile();
  await (await VhdxImage.create(otherFile, { sizeBytes: 4 * MiB, type: "dynamic" })).close();

  await assertRefused("parent swapped", childFile.bytes(), (file) =>
    VhdxImage.open(file, { readonly: !file.writable, openParent: () => VhdxImage.open(new MemoryFile(otherFile.bytes(), { writable: false, path: "p.vhdx" }), { readonly: true }) }),
  { code: /^disk\.parent-mismatch$/, message: /parent p\.vhdx has DataWriteGuid .* parent_linkage/ });
});
