/**
 * Unpacks a bzImage's compressed kernel into the ELF vmlinux it carries, so that QEMU can
 * enter it through its PVH note: the guest then skips decompressing itself, which under
 * TCG is ~0.5 s of every boot (measured: `npm run bench -- boot`). Firecracker boots
 * vmlinux for the same reason.
 *
 * The payload's place is in the boot protocol's setup header (Documentation/arch/x86/
 * boot.rst, protocol 2.08+: `payload_offset`, `payload_length`); its compression is
 * named by its magic. gzip is inflated by Node; the others by their Debian tools.
 */
import { gunzipSync } from "node:zlib";
import { open, rm, writeFile } from "node:fs/promises";
import { checkKernelFile } from "../engine/kernel-image.js";
import { HostError } from "../util/errors.js";
import { runCommand, stderrSummary } from "./host-command.js";

const SETUP_SECTS_OFFSET = 0x1f1;
const PROTOCOL_VERSION_OFFSET = 0x206;
const PAYLOAD_OFFSET_OFFSET = 0x248;
const PAYLOAD_LENGTH_OFFSET = 0x24c;
const HEADER_BYTES = 0x250;
/** `payload_offset` and `payload_length` exist from boot protocol 2.08. */
const PAYLOAD_PROTOCOL = 0x208;

/** The compressions Linux's x86 build offers, by the magic that starts the payload. */
const COMPRESSIONS: readonly {
  readonly name: string;
  readonly magic: readonly number[];
  readonly tool?: readonly string[];
}[] = [
  { name: "gzip", magic: [0x1f, 0x8b] },
  { name: "lz4", magic: [0x02, 0x21, 0x4c, 0x18], tool: ["lz4", "-dc"] },
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], tool: ["xz", "-dcq"] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], tool: ["zstd", "-dcq"] },
];

/** Where a bzImage's compressed kernel lies in the file; pure. */
export function payloadRange(
  header: Uint8Array,
): { offset: number; length: number } | { unsupported: string } {
  if (header.length < HEADER_BYTES) return { unsupported: `only ${header.length} bytes of setup header` };
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const protocol = view.getUint16(PROTOCOL_VERSION_OFFSET, true);
  if (protocol < PAYLOAD_PROTOCOL)
    return { unsupported: `boot protocol ${protocol.toString(16)} has no payload fields (2.08+)` };
  const declared = header[SETUP_SECTS_OFFSET] ?? 0;
  const setupSectors = declared === 0 ? 4 : declared; // 0 means 4, for old boot loaders
  return {
    offset: (setupSectors + 1) * 512 + view.getUint32(PAYLOAD_OFFSET_OFFSET, true),
    length: view.getUint32(PAYLOAD_LENGTH_OFFSET, true),
  };
}

/** The compression a payload starts with, or undefined; pure. */
export function payloadCompression(payload: Uint8Array): (typeof COMPRESSIONS)[number] | undefined {
  return COMPRESSIONS.find((candidate) => candidate.magic.every((byte, index) => payload[index] === byte));
}

/**
 * Writes the vmlinux inside `bzImagePath` to `outPath` and returns true, or returns the
 * reason it cannot (an old boot protocol, an unknown compression, a kernel without PVH);
 * the caller then boots the bzImage as before.
 *
 * @throws {HostError} when the payload is there but will not decompress.
 */
export async function extractPvhVmlinux(bzImagePath: string, outPath: string): Promise<true | string> {
  const handle = await open(bzImagePath, "r");
  let payload: Uint8Array;
  try {
    const header = new Uint8Array(HEADER_BYTES);
    const { bytesRead } = await handle.read(header, 0, HEADER_BYTES, 0);
    const range = payloadRange(header.subarray(0, bytesRead));
    if ("unsupported" in range) return range.unsupported;
    const { size } = await handle.stat();
    if (range.length === 0 || range.offset + range.length > size)
      return `payload (${range.length} bytes at ${range.offset}) lies outside the file`;
    payload = new Uint8Array(range.length);
    await handle.read(payload, 0, range.length, range.offset);
  } finally {
    await handle.close();
  }
  const compression = payloadCompression(payload);
  if (compression === undefined)
    return "the payload's compression is not one Palisade unpacks (gzip, lz4, xz, zstd)";
  const vmlinux = await decompress(payload, compression, outPath);
  await writeFile(outPath, vmlinux);
  try {
    const format = await checkKernelFile(outPath);
    if (format.format === "pvh-elf") return true;
  } catch {
    // Not an ELF with a PVH note: an older kernel, or one built without CONFIG_PVH.
  }
  await rm(outPath, { force: true });
  return "the kernel has no PVH entry point (CONFIG_PVH)";
}

async function decompress(
  payload: Uint8Array,
  compression: (typeof COMPRESSIONS)[number],
  outPath: string,
): Promise<Uint8Array> {
  if (compression.tool === undefined) {
    try {
      return gunzipSync(payload);
    } catch (error: unknown) {
      throw new HostError(
        `The kernel's gzip payload does not inflate: ${(error as Error).message}`,
        "image.kernel-payload",
        { cause: error },
      );
    }
  }
  // The tools read a file: the payload goes beside the output (same filesystem, same cleanup).
  const input = `${outPath}.${compression.name}`;
  await writeFile(input, payload);
  try {
    const [tool, ...args] = compression.tool;
    const result = await runCommand(tool ?? compression.name, [...args, input], { timeoutMs: 120_000 });
    // The kernel's build appends the uncompressed size after the frames, which lz4 and
    // xz report as trailing garbage; the ELF check after decompression is the judge.
    if (result.stdout.length === 0) {
      throw new HostError(
        `The kernel's ${compression.name} payload does not decompress: ${stderrSummary(result.stderr) || `exit ${String(result.code)}`}`,
        "image.kernel-payload",
      );
    }
    return result.stdout;
  } finally {
    await rm(input, { force: true });
  }
}
