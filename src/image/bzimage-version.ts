/**
 * The release string a bzImage carries in its setup header (`uname -r` of that kernel),
 * used to find its modules under `/lib/modules/<release>`. Pure.
 *
 * Reference: Linux `Documentation/arch/x86/boot.rst`, fields `boot_flag` (0x1FE),
 * `header` (0x202), `version` (0x206) and `kernel_version` (0x20E: offset of a
 * NUL-terminated string, minus 0x200).
 */
import { ConfigError } from "../util/errors.js";

const BOOT_FLAG_OFFSET = 0x1fe;
const HEADER_OFFSET = 0x202;
const VERSION_OFFSET = 0x206;
const KERNEL_VERSION_OFFSET = 0x20e;
/** Bytes of the file to read so the version string is in them (it lies in the setup code). */
export const BZIMAGE_PROBE_BYTES = 0x8000;

/**
 * The kernel release of a bzImage (`6.1.0-56-cloud-amd64`).
 *
 * @throws {ConfigError} (`image.bad-kernel`) when the bytes are not a bzImage or the
 *   version string is out of the bytes given, naming the field.
 */
export function bzImageRelease(bytes: Uint8Array, path: string): string {
  const bad = (why: string): ConfigError =>
    new ConfigError(`Kernel ${path} is not a bzImage: ${why}`, "image.bad-kernel");
  if (bytes.length < KERNEL_VERSION_OFFSET + 2) throw bad(`only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bootFlag = view.getUint16(BOOT_FLAG_OFFSET, true);
  if (bootFlag !== 0xaa55) throw bad(`boot flag at 0x1fe is 0x${bootFlag.toString(16)}, expected 0xaa55`);
  if (new TextDecoder("latin1").decode(bytes.subarray(HEADER_OFFSET, HEADER_OFFSET + 4)) !== "HdrS")
    throw bad('no "HdrS" setup header at 0x202');
  const protocol = view.getUint16(VERSION_OFFSET, true);
  if (protocol < 0x200) throw bad(`boot protocol 0x${protocol.toString(16)} is older than 2.00`);
  const start = view.getUint16(KERNEL_VERSION_OFFSET, true) + 0x200;
  const end = bytes.indexOf(0, start);
  if (start >= bytes.length || end === -1)
    throw bad(`kernel_version string at 0x${start.toString(16)} lies outside the setup code`);
  const release = new TextDecoder("latin1").decode(bytes.subarray(start, end)).split(" ")[0] ?? "";
  if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(release))
    throw bad(`kernel_version string "${release.slice(0, 40)}" is not a release name`);
  return release;
}
