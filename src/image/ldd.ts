/**
 * Parses what `ldd` prints: the shared libraries (and the dynamic loader) a binary needs,
 * each with the host path the loader would use. Pure; running `ldd` is the builder's job.
 */
import { ConfigError } from "../util/errors.js";

/** One library a binary needs. */
export interface SharedLibrary {
  /** Name the binary asks for (`libc.so.6`; for the loader, its path). */
  readonly name: string;
  /** Absolute host path the loader resolved it to; also its path in the guest. */
  readonly path: string;
}

/** What `ldd` found for one binary. */
export interface LddResult {
  /** The binary is statically linked (`not a dynamic executable`, `statically linked`). */
  readonly isStatic: boolean;
  /** Libraries with a host path, the loader included; virtual ones (vDSO) left out. */
  readonly libraries: readonly SharedLibrary[];
  /** Names `ldd` could not resolve (`=> not found`). */
  readonly missing: readonly string[];
}

// `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f…)`
const RESOLVED = /^(\S+)\s+=>\s+(\/\S+)(?:\s+\(0x[0-9a-fA-F]+\))?$/;
// `libfoo.so.1 => not found`
const NOT_FOUND = /^(\S+)\s+=>\s+not found$/;
// `/lib64/ld-linux-x86-64.so.2 (0x00007f…)`
const LOADER = /^(\/\S+)(?:\s+\(0x[0-9a-fA-F]+\))?$/;
// `linux-vdso.so.1 (0x…)` or `linux-vdso.so.1 =>  (0x…)` (older glibc)
const VIRTUAL = /^(\S+)\s+(?:=>\s+)?\(0x[0-9a-fA-F]+\)$/;

/**
 * Parses `ldd BINARY` output (stdout and stderr together is fine).
 *
 * @throws {ConfigError} (`image.ldd`) on a line it does not understand, quoting it, so a
 *   changed `ldd` format fails loudly instead of leaving libraries out.
 * @example
 * parseLddOutput("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f00)\n").libraries
 * // [{ name: "libc.so.6", path: "/lib/x86_64-linux-gnu/libc.so.6" }]
 */
export function parseLddOutput(output: string): LddResult {
  const libraries: SharedLibrary[] = [];
  const missing: string[] = [];
  let isStatic = false;
  for (const rawLine of output.split("\n")) {
    const line = rawLine.trim();
    if (line === "") continue;
    if (/not a dynamic executable|statically linked/.test(line)) {
      isStatic = true;
      continue;
    }
    let match = NOT_FOUND.exec(line);
    if (match?.[1] !== undefined) {
      missing.push(match[1]);
      continue;
    }
    match = RESOLVED.exec(line);
    if (match?.[1] !== undefined && match[2] !== undefined) {
      libraries.push({ name: match[1], path: match[2] });
      continue;
    }
    match = LOADER.exec(line);
    if (match?.[1] !== undefined) {
      libraries.push({ name: match[1], path: match[1] });
      continue;
    }
    if (VIRTUAL.test(line)) continue;
    throw new ConfigError(`Cannot read this line of ldd's output: "${line.slice(0, 120)}"`, "image.ldd");
  }
  return { isStatic, libraries, missing };
}
