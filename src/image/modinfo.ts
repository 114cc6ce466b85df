/**
 * Reads a kernel module's `.modinfo` section (the `key=value\0` strings `modinfo` prints)
 * from its ELF bytes. Used to work out `modules.dep` when a kernel package ships none
 * (Debian's packages leave that to `depmod` at install time), without needing kmod.
 *
 * Reference: ELF-64 Object File Format (section header table), Linux
 * `include/linux/moduleparam.h` (`__MODULE_INFO`), `scripts/mod/modpost.c` (`depends=`).
 */
import { PalisadeError } from "../util/errors.js";

/** The bytes are not an ELF-64 little-endian object with a readable `.modinfo`. */
export class ModinfoFormatError extends PalisadeError {
  readonly code = "image.modinfo-format";
}

// ELF-64 header fields (offsets in bytes).
const EI_CLASS = 4;
const ELFCLASS64 = 2;
const EI_DATA = 5;
const ELFDATA2LSB = 1;
const E_SHOFF = 0x28;
const E_SHENTSIZE = 0x3a;
const E_SHNUM = 0x3c;
const E_SHSTRNDX = 0x3e;
const ELF64_HEADER_SIZE = 0x40;
// ELF-64 section header fields.
const SH_NAME = 0x00;
const SH_OFFSET = 0x18;
const SH_SIZE = 0x20;
const ELF64_SECTION_HEADER_SIZE = 0x40;

function checkedRange(offset: bigint, size: bigint, fileSize: number, what: string): [number, number] {
  const end = offset + size;
  if (offset < 0n || size < 0n || end > BigInt(fileSize)) {
    throw new ModinfoFormatError(
      `ELF ${what} at 0x${offset.toString(16)} (size 0x${size.toString(16)}) runs past the end of the file (0x${fileSize.toString(16)})`,
    );
  }
  return [Number(offset), Number(end)];
}

/**
 * The `.modinfo` strings of a module, in file order (keys repeat, e.g. `alias`).
 *
 * @throws {ModinfoFormatError} when the bytes are not ELF-64 LE or a table runs past the end.
 */
export function readModinfo(bytes: Uint8Array): [string, string][] {
  if (
    bytes.length < ELF64_HEADER_SIZE ||
    bytes[0] !== 0x7f ||
    bytes[1] !== 0x45 ||
    bytes[2] !== 0x4c ||
    bytes[3] !== 0x46
  ) {
    throw new ModinfoFormatError("Not an ELF file (no \\x7fELF magic at offset 0)");
  }
  if (bytes[EI_CLASS] !== ELFCLASS64 || bytes[EI_DATA] !== ELFDATA2LSB) {
    throw new ModinfoFormatError(
      `ELF class ${bytes[EI_CLASS]}/data ${bytes[EI_DATA]} is not 64-bit little-endian`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shoff = view.getBigUint64(E_SHOFF, true);
  const shentsize = view.getUint16(E_SHENTSIZE, true);
  const shnum = view.getUint16(E_SHNUM, true);
  const shstrndx = view.getUint16(E_SHSTRNDX, true);
  if (shentsize !== ELF64_SECTION_HEADER_SIZE || shstrndx >= shnum) {
    throw new ModinfoFormatError(
      `ELF section table: entry size ${shentsize}, string table index ${shstrndx} of ${shnum} sections`,
    );
  }
  const [tableStart] = checkedRange(
    shoff,
    BigInt(shnum) * BigInt(shentsize),
    bytes.length,
    "section header table",
  );
  const section = (index: number): { name: number; range: [number, number] } => {
    const at = tableStart + index * shentsize;
    return {
      name: view.getUint32(at + SH_NAME, true),
      range: checkedRange(
        view.getBigUint64(at + SH_OFFSET, true),
        view.getBigUint64(at + SH_SIZE, true),
        bytes.length,
        `section ${index}`,
      ),
    };
  };
  const [strStart, strEnd] = section(shstrndx).range;
  const decoder = new TextDecoder();
  const nameAt = (offset: number): string => {
    const start = strStart + offset;
    if (start >= strEnd) return "";
    let end = start;
    while (end < strEnd && bytes[end] !== 0) end += 1;
    return decoder.decode(bytes.subarray(start, end));
  };
  for (let index = 0; index < shnum; index += 1) {
    const { name, range } = section(index);
    if (nameAt(name) !== ".modinfo") continue;
    return decoder
      .decode(bytes.subarray(range[0], range[1]))
      .split("\0")
      .filter((item) => item.includes("="))
      .map((item) => {
        const equals = item.indexOf("=");
        return [item.slice(0, equals), item.slice(equals + 1)];
      });
  }
  throw new ModinfoFormatError("ELF file has no .modinfo section: not a kernel module");
}

/** Module names from a module's `depends=` field (empty when it needs none). */
export function modinfoDepends(modinfo: readonly [string, string][]): string[] {
  const depends = modinfo.find(([key]) => key === "depends")?.[1] ?? "";
  return depends
    .split(",")
    .map((name) => name.trim().replaceAll("-", "_"))
    .filter((name) => name !== "");
}
