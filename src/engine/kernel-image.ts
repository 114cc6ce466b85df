/**
 * Checks that a file is an x86 Linux bzImage before QEMU is asked to boot it, so a wrong
 * file gets a clear error instead of a silent guest.
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
  const magic = new TextDecoder("latin1").decode(bytes.subarray(HEADER_MAGIC_OFFSET, HEADER_MAGIC_OFFSET + 4));
  if (magic !== HEADER_MAGIC) {
    throw new ConfigError(`Kernel ${path} is not a bzImage: no "HdrS" setup header at 0x202`, "config.bad-kernel");
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

/**
 * Reads and checks a kernel file.
 * @throws {ConfigError} when it is missing, unreadable or not a bzImage.
 */
export async function checkKernelFile(path: string): Promise<BzImageHeader> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error: unknown) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "does not exist" : code === "EACCES" ? "is not readable" : `cannot be opened (${code ?? "?"})`;
    throw new ConfigError(`Kernel ${path} ${why}`, "config.bad-kernel", { cause: error });
  }
  try {
    const buffer = new Uint8Array(HEADER_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, HEADER_BYTES, 0);
    return parseBzImageHeader(buffer.subarray(0, bytesRead), path);
  } catch (error: unknown) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`Kernel ${path} cannot be read: ${(error as Error).message}`, "config.bad-kernel", { cause: error });
  } finally {
    await handle.close();
  }
}
