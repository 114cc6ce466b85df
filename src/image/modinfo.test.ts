import assert from "node:assert/strict";
import { test } from "node:test";
import { ModinfoFormatError, modinfoDepends, readModinfo } from "./modinfo.js";

/** A minimal ELF-64 LE object: header, a .shstrtab and a .modinfo section, section table last. */
function elfWithModinfo(modinfo: string): Uint8Array {
  const shstrtab = Buffer.from("\0.shstrtab\0.modinfo\0", "latin1");
  const info = Buffer.from(modinfo, "latin1");
  const shstrtabOffset = 0x40;
  const infoOffset = shstrtabOffset + shstrtab.length;
  const shoff = infoOffset + info.length;
  const file = Buffer.alloc(shoff + 3 * 0x40);
  file.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  file.writeBigUInt64LE(BigInt(shoff), 0x28);
  file.writeUInt16LE(0x40, 0x3a); // e_shentsize
  file.writeUInt16LE(3, 0x3c); // e_shnum: null, .shstrtab, .modinfo
  file.writeUInt16LE(1, 0x3e); // e_shstrndx
  shstrtab.copy(file, shstrtabOffset);
  info.copy(file, infoOffset);
  const section = (index: number, name: number, offset: number, size: number): void => {
    const at = shoff + index * 0x40;
    file.writeUInt32LE(name, at);
    file.writeBigUInt64LE(BigInt(offset), at + 0x18);
    file.writeBigUInt64LE(BigInt(size), at + 0x20);
  };
  section(1, 1, shstrtabOffset, shstrtab.length);
  section(2, 11, infoOffset, info.length);
  return file;
}

test("modinfo: the key=value strings of .modinfo, and depends= as module names", () => {
  const bytes = elfWithModinfo(
    "license=GPL\0depends=net_failover,virtio,virtio_ring\0\0alias=virtio:d00000001v*\0",
  );

  const modinfo = readModinfo(bytes);

  assert.deepEqual(modinfo[0], ["license", "GPL"]);
  assert.deepEqual(modinfoDepends(modinfo), ["net_failover", "virtio", "virtio_ring"]);
});

test("modinfo: an empty depends= means no dependencies", () => {
  assert.deepEqual(modinfoDepends(readModinfo(elfWithModinfo("depends=\0"))), []);
});

test("modinfo: non-ELF bytes and tables past the end raise ModinfoFormatError", () => {
  const bytes = elfWithModinfo("depends=\0");

  assert.throws(() => readModinfo(new Uint8Array(100)), ModinfoFormatError);
  assert.throws(() => readModinfo(bytes.subarray(0, bytes.length - 1)), /runs past the end/);
  const bigOffset = Buffer.from(bytes);
  bigOffset.writeBigUInt64LE(0xffff_ffff_ffff_fff0n, 0x28);
  assert.throws(() => readModinfo(bigOffset), ModinfoFormatError);
});
