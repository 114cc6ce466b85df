/**
 * Checks that a file is a Linux kernel QEMU can boot on x86-64 before QEMU is asked to, so
 * a wrong file gets a clear error instead of a silent guest: a bzImage (the boot protocol's
 * setup header), or an uncompressed ELF vmlinux with a PVH entry point (the Xen ELF note
 * QEMU's PVH loader enters by; the image builder makes one, since a guest then skips
 * decompressing itself, ~0.5 s of TCG time per boot).
 */
import { open } from "node:fs/promises";
import { ConfigError } from "../util/errors.js";

/** Linux x86 boot protocol (Documentation/arch/x86/boot.rst): setup header fields. */
const BOOT_FLAG_OFFSET = 0x1fe;
const BOOT_FLAG = 0xaa55;
const HEADER_MAGIC_OFFSET = 0x202;
const HEADER_MAGIC = "HdrS";
const PROTOCOL_VERSION_OFFSET = 0x206;
/** bzImage loading needs boot protocol 2.00 or later. */
const MIN_PROTOCOL = 0x200;
const HEADER_BYTES = 0x210;

export interface BzImageHeader {
  readonly protocolVersion: number;
}

/**
 * Parses the start of a kernel file; pure.
 * @throws {ConfigError} naming the field that is wrong.
 */
export function parseBzImageHeader(bytes: Uint8Array, path: string): BzImageHeader {
  if (bytes.length < HEADER_BYTES) {
    throw new ConfigError(`Kernel ${path} is not a bzImage: only ${bytes.length} bytes`, "config.bad-kernel");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bootFlag = view.getUint16(BOOT_FLAG_OFFSET, true);
  if (bootFlag !== BOOT_FLAG) {
    throw new ConfigError(
      `Kernel ${path} is not a bzImage: boot flag at 0x1fe is 0x${bootFlag.toString(16)}, expected 0xaa55`,
      "config.bad-kernel",
    );
  }
  const magic = new TextDecoder("latin1").decode(
    bytes.subarray(HEADER_MAGIC_OFFSET, HEADER_MAGIC_OFFSET + 4),
  );
  if (magic !== HEADER_MAGIC) {
    throw new ConfigError(
      `Kernel ${path} is not a bzImage: no "HdrS" setup header at 0x202`,
      "config.bad-kernel",
    );
  }
  const protocolVersion = view.getUint16(PROTOCOL_VERSION_OFFSET, true);
  if (protocolVersion < MIN_PROTOCOL) {
    throw new ConfigError(
      `Kernel ${path} uses boot protocol ${protocolVersion.toString(16)}, bzImage needs 2.00 or later`,
      "config.bad-kernel",
    );
  }
  return { protocolVersion };
}

/** ELF64 (System V gABI) and the PVH entry note (Xen's public elfnote.h). */
const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const ELF_HEADER_BYTES = 64;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EM_X86_64 = 62;
const PT_NOTE = 4;
const PROGRAM_HEADER_BYTES = 56;
/** More program headers than any kernel has: a bound on what a hostile file makes us read. */
const MAX_PROGRAM_HEADERS = 64;
/** A kernel's note segments are a few KiB; a bound on what one makes us read. */
const MAX_NOTE_SEGMENT = 1 << 20;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Where an ELF file's note segments are; pure. */
export interface ElfLayout {
  readonly noteSegments: readonly { readonly offset: number; readonly size: number }[];
}

function isElf(bytes: Uint8Array): boolean {
  return ELF_MAGIC.every((byte, index) => bytes[index] === byte);
}

/**
 * Parses an ELF header and its program headers (`bytes` from offset 0, at least through
 * the program header table); pure.
 * @throws {ConfigError} naming the field that rules the file out as an x86-64 kernel.
 */
export function parseElfLayout(bytes: Uint8Array, path: string): ElfLayout {
  const bad = (why: string): ConfigError =>
    new ConfigError(`Kernel ${path} is an ELF file but ${why}`, "config.bad-kernel");
  if (bytes.length < ELF_HEADER_BYTES) throw bad(`only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes[4] !== ELFCLASS64) throw bad(`EI_CLASS is ${bytes[4] ?? "?"}, expected 2 (64-bit)`);
  if (bytes[5] !== ELFDATA2LSB) throw bad(`EI_DATA is ${bytes[5] ?? "?"}, expected 1 (little-endian)`);
  const machine = view.getUint16(18, true);
  if (machine !== EM_X86_64) throw bad(`e_machine is ${machine}, expected 62 (x86-64)`);
  const phoff = Number(view.getBigUint64(32, true));
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  if (phentsize !== PROGRAM_HEADER_BYTES) throw bad(`e_phentsize is ${phentsize}, expected 56`);
  if (phnum === 0 || phnum > MAX_PROGRAM_HEADERS)
    throw bad(`e_phnum is ${phnum}, expected 1–${MAX_PROGRAM_HEADERS}`);
  if (phoff + phnum * phentsize > bytes.length)
    throw bad(`its program headers (e_phoff ${phoff}) lie beyond the bytes read`);
  const noteSegments = [];
  for (let index = 0; index < phnum; index++) {
    const at = phoff + index * phentsize;
    if (view.getUint32(at, true) !== PT_NOTE) continue;
    const offset = Number(view.getBigUint64(at + 8, true));
    const size = Number(view.getBigUint64(at + 32, true));
    if (size > MAX_NOTE_SEGMENT)
      throw bad(`note segment ${index} is ${size} bytes (p_filesz), more than a kernel's`);
    noteSegments.push({ offset, size });
  }
  return { noteSegments };
}

/** Whether an ELF note segment holds the PVH entry note (name "Xen", type 18); pure, bounds-checked. */
export function hasPvhEntryNote(segment: Uint8Array): boolean {
  const view = new DataView(segment.buffer, segment.byteOffset, segment.byteLength);
  const align4 = (n: number): number => (n + 3) & ~3;
  let at = 0;
  while (at + 12 <= segment.length) {
    const nameSize = view.getUint32(at, true);
    const descSize = view.getUint32(at + 4, true);
    const type = view.getUint32(at + 8, true);
    const name = segment.subarray(at + 12, Math.min(segment.length, at + 12 + nameSize));
    if (
      type === XEN_ELFNOTE_PHYS32_ENTRY &&
      nameSize === 4 &&
      new TextDecoder("latin1").decode(name) === "Xen\0"
    )
      return true;
    const next = at + 12 + align4(nameSize) + align4(descSize);
    if (next <= at || next > segment.length) return false;
    at = next;
  }
  return false;
}

/** What {@link checkKernelFile} found. */
export type KernelFormat = ({ readonly format: "bzImage" } & BzImageHeader) | { readonly format: "pvh-elf" };

/**
 * Reads and checks a kernel file.
 * @throws {ConfigError} when it is missing, unreadable, or neither a bzImage nor a PVH vmlinux.
 */
export async function checkKernelFile(path: string): Promise<KernelFormat> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error: unknown) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "EACCES"
          ? "is not readable"
          : `cannot be opened (${code ?? "?"})`;
    throw new ConfigError(`Kernel ${path} ${why}`, "config.bad-kernel", { cause: error });
  }
  try {
    const head = new Uint8Array(4096);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const bytes = head.subarray(0, bytesRead);
    if (!isElf(bytes)) return { format: "bzImage", ...parseBzImageHeader(bytes, path) };
    for (const segment of parseElfLayout(bytes, path).noteSegments) {
      const notes = new Uint8Array(segment.size);
      const { bytesRead: noteBytes } = await handle.read(notes, 0, segment.size, segment.offset);
      if (hasPvhEntryNote(notes.subarray(0, noteBytes))) return { format: "pvh-elf" };
    }
    throw new ConfigError(
      `Kernel ${path} is an ELF vmlinux without a PVH entry note (Xen ELF note 18): QEMU cannot boot it; use its bzImage, or a kernel built with CONFIG_PVH=y`,
      "config.bad-kernel",
    );
  } catch (error: unknown) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`Kernel ${path} cannot be read: ${(error as Error).message}`, "config.bad-kernel", {
      cause: error,
    });
  } finally {
    await handle.close();
  }
}
