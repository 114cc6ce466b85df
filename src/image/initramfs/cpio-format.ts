/**
 * The "newc" cpio format (SVR4 portable, no CRC) as the Linux kernel unpacks an
 * initramfs: what the bytes are, apart from what is done with them.
 *
 * Reference: Linux `Documentation/driver-api/early-userspace/buffer-format.rst` and
 * `init/initramfs.c`. Each member is a 110-byte ASCII header of 13 eight-digit hex
 * fields, the NUL-terminated name padded so header plus name is a multiple of 4, then
 * the data padded to a multiple of 4. The archive ends with a member named `TRAILER!!!`.
 */

/** Magic of a newc header without checksums (`070702` would carry a CRC). */
export const NEWC_MAGIC = "070701";
/** Size of the fixed part of a newc header, in bytes. */
export const NEWC_HEADER_SIZE = 110;
/** Name of the member that ends an archive. */
export const NEWC_TRAILER_NAME = "TRAILER!!!";
/** Fields of a newc header after the magic, in order (each 8 hex digits). */
export const NEWC_FIELDS = [
  "ino",
  "mode",
  "uid",
  "gid",
  "nlink",
  "mtime",
  "filesize",
  "devmajor",
  "devminor",
  "rdevmajor",
  "rdevminor",
  "namesize",
  "check",
] as const;

/** File type bits of `mode` (`<sys/stat.h>`). */
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/** Largest value a newc field holds (8 hex digits). */
export const NEWC_FIELD_MAX = 0xffff_ffff;

/** One member of an archive, as the writer takes it and the reader returns it. */
export type CpioEntry =
  | { readonly kind: "directory"; readonly path: string; readonly mode: number }
  | { readonly kind: "file"; readonly path: string; readonly mode: number; readonly data: Uint8Array }
  | { readonly kind: "symlink"; readonly path: string; readonly target: string }
  | {
      readonly kind: "char-device" | "block-device";
      readonly path: string;
      readonly mode: number;
      readonly major: number;
      readonly minor: number;
    };

/** Bytes needed to pad `length` up to a multiple of 4. */
export function padTo4(length: number): number {
  return (4 - (length % 4)) % 4;
}
