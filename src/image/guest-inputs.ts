/**
 * Reads what the user adds to an image (`--add HOST:GUEST`, `--add-binary`) and busybox
 * from the host: file modes, SHA-256 for the build digest, and for ELF binaries the
 * shared libraries `ldd` reports.
 */
import { open, lstat, readdir, readlink, stat } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError, HostError } from "../util/errors.js";
import { runCommand } from "./host-command.js";
import { sha256File } from "./kernel-source.js";
import { parseLddOutput } from "./ldd.js";
import { type AddedPath, isReservedGuestPath } from "./options.js";

/** One file, directory or symlink to put in the guest. */
export type AddedEntry =
  | { readonly kind: "directory"; readonly guestPath: string; readonly mode: number }
  | {
      readonly kind: "file";
      readonly guestPath: string;
      readonly mode: number;
      readonly hostPath: string;
      readonly sha256: string;
    }
  | { readonly kind: "symlink"; readonly guestPath: string; readonly target: string };

/** A binary with the libraries it needs, each with its content digest. */
export interface BinaryInput {
  readonly path: string;
  readonly mode: number;
  readonly sha256: string;
  readonly libraries: readonly { readonly path: string; readonly sha256: string }[];
}

function describeErrno(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT"
    ? "does not exist"
    : code === "EACCES"
      ? "is not readable"
      : `cannot be read (${code ?? "?"})`;
}

/**
 * Everything one `--add` puts in the guest: the file, or the directory and all under it
 * (symlinks inside kept as symlinks), sorted.
 *
 * @throws {ConfigError} (`image.bad-add`) when the host path is missing or unreadable,
 *   holds something other than files, directories and symlinks, or reaches a guest path
 *   the image's `/init` owns.
 */
export async function readAddedPath(add: AddedPath): Promise<AddedEntry[]> {
  const flag = `--add ${add.hostPath}:${add.guestPath}`;
  let top;
  try {
    top = await stat(add.hostPath);
  } catch (error: unknown) {
    throw new ConfigError(`${flag}: ${add.hostPath} ${describeErrno(error)}`, "image.bad-add", {
      cause: error,
    });
  }
  const entries: AddedEntry[] = [];
  const visit = async (
    hostPath: string,
    guestPath: string,
    info: Awaited<ReturnType<typeof lstat>>,
  ): Promise<void> => {
    const reserved = isReservedGuestPath(guestPath);
    if (reserved !== undefined) {
      throw new ConfigError(
        `${flag}: ${hostPath} would land on ${guestPath}, and ${reserved} belongs to the image's /init`,
        "image.bad-add",
      );
    }
    const mode = Number(info.mode) & 0o7777;
    if (info.isDirectory()) {
      entries.push({ kind: "directory", guestPath, mode });
      for (const name of (await readdir(hostPath)).sort()) {
        const child = join(hostPath, name);
        await visit(child, `${guestPath}/${name}`, await lstat(child));
      }
    } else if (info.isFile()) {
      try {
        entries.push({ kind: "file", guestPath, mode, hostPath, sha256: await sha256File(hostPath) });
      } catch (error: unknown) {
        throw new ConfigError(`${flag}: ${hostPath} ${describeErrno(error)}`, "image.bad-add", {
          cause: error,
        });
      }
    } else if (info.isSymbolicLink()) {
      entries.push({ kind: "symlink", guestPath, target: await readlink(hostPath) });
    } else {
      throw new ConfigError(
        `${flag}: ${hostPath} is neither a file, a directory nor a symlink`,
        "image.bad-add",
      );
    }
  };
  await visit(add.hostPath, add.guestPath, top);
  return entries;
}

async function isElf(path: string): Promise<boolean> {
  const handle = await open(path, "r");
  try {
    const magic = new Uint8Array(4);
    const { bytesRead } = await handle.read(magic, 0, 4, 0);
    return (
      bytesRead === 4 && magic[0] === 0x7f && magic[1] === 0x45 && magic[2] === 0x4c && magic[3] === 0x46
    );
  } finally {
    await handle.close();
  }
}

/**
 * A binary and, for a dynamically linked ELF file, the libraries `ldd` finds for it (the
 * loader included). Other files (scripts) come alone.
 *
 * @param flag how to name the binary in errors (`--add-binary /usr/bin/fio`).
 * @throws {ConfigError} (`image.bad-binary`) when it is missing, not a regular file, or
 *   needs a library the host does not have.
 */
export async function readBinary(path: string, flag: string): Promise<BinaryInput> {
  let info;
  try {
    info = await stat(path);
  } catch (error: unknown) {
    throw new ConfigError(`${flag}: ${path} ${describeErrno(error)}`, "image.bad-binary", { cause: error });
  }
  if (!info.isFile()) throw new ConfigError(`${flag}: ${path} is not a regular file`, "image.bad-binary");
  const sha256 = await sha256File(path).catch((error: unknown) => {
    throw new ConfigError(`${flag}: ${path} ${describeErrno(error)}`, "image.bad-binary", { cause: error });
  });
  const mode = info.mode & 0o7777;
  if (!(await isElf(path))) return { path, mode, sha256, libraries: [] };
  const result = await runCommand("ldd", [path], { timeoutMs: 30_000 });
  const ldd = parseLddOutput(`${result.stdout.toString("utf8")}\n${result.stderr}`);
  if (ldd.missing.length > 0) {
    throw new ConfigError(
      `${flag}: ${path} needs ${ldd.missing.join(", ")}, which ldd cannot find on this host`,
      "image.bad-binary",
    );
  }
  if (result.code !== 0 && !ldd.isStatic) {
    throw new HostError(`ldd ${path} failed with exit code ${result.code ?? "?"}`, "image.ldd");
  }
  const libraries = [];
  for (const library of ldd.libraries)
    libraries.push({ path: library.path, sha256: await sha256File(library.path) });
  return { path, mode, sha256, libraries };
}
