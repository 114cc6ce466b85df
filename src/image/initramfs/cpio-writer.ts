/**
 * Writes newc cpio archives (the Linux initramfs format) from a list of entries. Pure:
 * bytes in memory out, no file system access, deterministic (fixed mtime, uid and gid 0,
 * inode numbers in entry order), so the same entries always give the same archive.
 */
import { PalisadeError } from "../../util/errors.js";
import {
  type CpioEntry,
  NEWC_FIELD_MAX,
  NEWC_HEADER_SIZE,
  NEWC_MAGIC,
  NEWC_TRAILER_NAME,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  padTo4,
} from "./cpio-format.js";

/** An entry cannot be represented in a newc archive (name, size or number out of range). */
export class CpioEncodeError extends PalisadeError {
  readonly code = "image.cpio-encode";
}

const encoder = new TextEncoder();

interface HeaderFields {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  filesize: number;
  rdevmajor: number;
  rdevminor: number;
  namesize: number;
}

function hex8(value: number, field: string, path: string): string {
  if (!Number.isInteger(value) || value < 0 || value > NEWC_FIELD_MAX) {
    throw new CpioEncodeError(`Cpio member "${path}": ${field} ${value} does not fit in a newc header`);
  }
  return value.toString(16).padStart(8, "0");
}

function header(fields: HeaderFields, path: string): string {
  return (
    NEWC_MAGIC +
    hex8(fields.ino, "inode", path) +
    hex8(fields.mode, "mode", path) +
    hex8(0, "uid", path) +
    hex8(0, "gid", path) +
    hex8(fields.nlink, "link count", path) +
    hex8(fields.mtime, "mtime", path) +
    hex8(fields.filesize, "size", path) +
    hex8(0, "devmajor", path) +
    hex8(0, "devminor", path) +
    hex8(fields.rdevmajor, "rdevmajor", path) +
    hex8(fields.rdevminor, "rdevminor", path) +
    hex8(fields.namesize, "name size", path) +
    hex8(0, "check", path)
  );
}

/**
 * The archive name of a guest path: no leading slash, no empty, `.` or `..` components,
 * no NUL. The kernel resolves names relative to the root of the initramfs.
 *
 * @throws {CpioEncodeError} when the path cannot name a member safely.
 */
export function archiveName(path: string): string {
  const name = path.replace(/^\/+/, "");
  const parts = name.split("/");
  if (
    name === "" ||
    name.includes("\0") ||
    parts.some((part) => part === "" || part === "." || part === "..")
  ) {
    throw new CpioEncodeError(`Cpio member path "${path}" is not a normalized path inside the archive`);
  }
  return name;
}

function member(
  fields: Omit<HeaderFields, "namesize" | "filesize">,
  name: string,
  data: Uint8Array,
): Uint8Array[] {
  const nameBytes = encoder.encode(`${name}\0`);
  const head = encoder.encode(header({ ...fields, namesize: nameBytes.length, filesize: data.length }, name));
  const namePad = padTo4(NEWC_HEADER_SIZE + nameBytes.length);
  const chunks: Uint8Array[] = [head, nameBytes, new Uint8Array(namePad)];
  if (data.length > 0) chunks.push(data, new Uint8Array(padTo4(data.length)));
  return chunks;
}

function permissionBits(mode: number, path: string): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new CpioEncodeError(`Cpio member "${path}": mode 0o${mode.toString(8)} is not a permission mode`);
  }
  return mode;
}

/**
 * Encodes one entry as a newc member.
 *
 * @param ino inode number written in the header; must be unique within the archive
 *   (the kernel links members with equal inode and `nlink > 1`; all ours have nlink 1
 *   except directories).
 * @param mtime modification time in seconds since the epoch (0 for reproducible output).
 * @throws {CpioEncodeError} on a bad path, mode, device number or a file over 4 GiB.
 */
export function encodeCpioEntry(entry: CpioEntry, ino: number, mtime = 0): Uint8Array[] {
  const name = archiveName(entry.path);
  switch (entry.kind) {
    case "directory":
      return member(
        {
          ino,
          mode: S_IFDIR | permissionBits(entry.mode, name),
          nlink: 2,
          mtime,
          rdevmajor: 0,
          rdevminor: 0,
        },
        name,
        new Uint8Array(0),
      );
    case "file":
      return member(
        {
          ino,
          mode: S_IFREG | permissionBits(entry.mode, name),
          nlink: 1,
          mtime,
          rdevmajor: 0,
          rdevminor: 0,
        },
        name,
        entry.data,
      );
    case "symlink": {
      if (entry.target === "" || entry.target.includes("\0")) {
        throw new CpioEncodeError(
          `Cpio member "${name}": symlink target "${entry.target}" is empty or holds a NUL`,
        );
      }
      return member(
        { ino, mode: S_IFLNK | 0o777, nlink: 1, mtime, rdevmajor: 0, rdevminor: 0 },
        name,
        encoder.encode(entry.target),
      );
    }
    case "char-device":
    case "block-device": {
      const type = entry.kind === "char-device" ? S_IFCHR : S_IFBLK;
      return member(
        {
          ino,
          mode: type | permissionBits(entry.mode, name),
          nlink: 1,
          mtime,
          rdevmajor: entry.major,
          rdevminor: entry.minor,
        },
        name,
        new Uint8Array(0),
      );
    }
  }
}

/** The member that ends every archive. */
export function cpioTrailer(): Uint8Array[] {
  return member(
    { ino: 0, mode: 0, nlink: 1, mtime: 0, rdevmajor: 0, rdevminor: 0 },
    NEWC_TRAILER_NAME,
    new Uint8Array(0),
  );
}

/**
 * The chunks of a whole archive: every entry in the order given (parents must come
 * before their children, as the kernel creates them in order), then the trailer.
 * Inode numbers start at 1 (the trailer has 0, as GNU cpio writes it).
 *
 * @throws {CpioEncodeError} on an entry that cannot be encoded.
 * @example
 * const chunks = [...cpioArchive([{ kind: "directory", path: "etc", mode: 0o755 }])];
 * const archive = Buffer.concat(chunks);
 */
export function* cpioArchive(entries: Iterable<CpioEntry>, mtime = 0): Generator<Uint8Array> {
  let ino = 1;
  for (const entry of entries) {
    yield* encodeCpioEntry(entry, ino, mtime);
    ino += 1;
  }
  yield* cpioTrailer();
}
