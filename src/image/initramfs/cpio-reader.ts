/**
 * Reads newc cpio archives back into entries: used to check what the writer made (tests,
 * `palisade image build` self-check) and safe on untrusted bytes (every field and length
 * is checked against the buffer before use).
 */
import { PalisadeError } from "../../util/errors.js";
import {
  type CpioEntry,
  NEWC_FIELDS,
  NEWC_HEADER_SIZE,
  NEWC_MAGIC,
  NEWC_TRAILER_NAME,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  padTo4,
} from "./cpio-format.js";

/** The bytes are not a well-formed newc archive; the message names the offset and field. */
export class CpioFormatError extends PalisadeError {
  readonly code = "image.cpio-format";
  constructor(
    message: string,
    readonly offset: number,
    readonly field: string,
  ) {
    super(message);
  }
}

/** A member as read, with the raw header fields for checks on what the writer chose. */
export interface CpioReadEntry {
  readonly entry: CpioEntry;
  readonly ino: number;
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly mtime: number;
}

const decoder = new TextDecoder("utf-8", { fatal: false });

function readField(bytes: Uint8Array, offset: number, index: number): number {
  const field = NEWC_FIELDS[index] ?? "unknown";
  const start = offset + NEWC_MAGIC.length + index * 8;
  const text = decoder.decode(bytes.subarray(start, start + 8));
  if (!/^[0-9a-fA-F]{8}$/.test(text)) {
    throw new CpioFormatError(
      `Cpio header at 0x${offset.toString(16)}: field ${field} is "${text}", not 8 hex digits`,
      start,
      field,
    );
  }
  return Number.parseInt(text, 16);
}

/**
 * Parses a whole newc archive up to its trailer.
 *
 * @throws {CpioFormatError} on a bad magic, a non-hex field, a name or data running past
 *   the end, a name without its NUL, an unknown file type, or a missing trailer.
 */
export function readCpioArchive(bytes: Uint8Array): CpioReadEntry[] {
  const result: CpioReadEntry[] = [];
  let offset = 0;
  for (;;) {
    if (offset + NEWC_HEADER_SIZE > bytes.length) {
      throw new CpioFormatError(
        `Cpio archive ends at 0x${bytes.length.toString(16)} without a ${NEWC_TRAILER_NAME} member`,
        offset,
        "magic",
      );
    }
    const magic = decoder.decode(bytes.subarray(offset, offset + NEWC_MAGIC.length));
    if (magic !== NEWC_MAGIC) {
      throw new CpioFormatError(
        `Cpio header at 0x${offset.toString(16)}: magic is "${magic}", expected ${NEWC_MAGIC}`,
        offset,
        "magic",
      );
    }
    const field = (name: (typeof NEWC_FIELDS)[number]): number =>
      readField(bytes, offset, NEWC_FIELDS.indexOf(name));
    const ino = field("ino");
    const mode = field("mode");
    const uid = field("uid");
    const gid = field("gid");
    const nlink = field("nlink");
    const mtime = field("mtime");
    const filesize = field("filesize");
    const rdevmajor = field("rdevmajor");
    const rdevminor = field("rdevminor");
    const namesize = field("namesize");
    const nameStart = offset + NEWC_HEADER_SIZE;
    if (namesize === 0 || nameStart + namesize > bytes.length) {
      throw new CpioFormatError(
        `Cpio header at 0x${offset.toString(16)}: name size ${namesize} runs past the end of the archive`,
        offset,
        "namesize",
      );
    }
    if (bytes[nameStart + namesize - 1] !== 0) {
      throw new CpioFormatError(
        `Cpio header at 0x${offset.toString(16)}: name is not NUL-terminated`,
        nameStart,
        "name",
      );
    }
    const name = decoder.decode(bytes.subarray(nameStart, nameStart + namesize - 1));
    const dataStart = nameStart + namesize + padTo4(NEWC_HEADER_SIZE + namesize);
    if (dataStart + filesize > bytes.length) {
      throw new CpioFormatError(
        `Cpio member "${name}" at 0x${offset.toString(16)}: size ${filesize} runs past the end of the archive`,
        offset,
        "filesize",
      );
    }
    if (name === NEWC_TRAILER_NAME) return result;
    const data = bytes.subarray(dataStart, dataStart + filesize);
    const permissions = mode & 0o7777;
    let entry: CpioEntry;
    switch (mode & S_IFMT) {
      case S_IFDIR:
        entry = { kind: "directory", path: name, mode: permissions };
        break;
      case S_IFREG:
        entry = { kind: "file", path: name, mode: permissions, data: Uint8Array.from(data) };
        break;
      case S_IFLNK:
        entry = { kind: "symlink", path: name, target: decoder.decode(data) };
        break;
      case S_IFCHR:
      case S_IFBLK:
        entry = {
          kind: (mode & S_IFMT) === S_IFCHR ? "char-device" : "block-device",
          path: name,
          mode: permissions,
          major: rdevmajor,
          minor: rdevminor,
        };
        break;
      default:
        throw new CpioFormatError(
          `Cpio member "${name}" at 0x${offset.toString(16)}: file type 0o${(mode & S_IFMT).toString(8)} is not supported`,
          offset,
          "mode",
        );
    }
    result.push({ entry, ino, uid, gid, nlink, mtime });
    offset = dataStart + filesize + padTo4(filesize);
  }
}
