import { realpath, unlink } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import type { BlockImage, DiskFormat, DiskType } from "./block-image.js";
import { DiskError, DiskFormatError } from "./errors.js";
import { NodeFile, type StorageFile } from "./file.js";
import { RawImage } from "./raw.js";
import { VhdImage, type VhdParentNames } from "./vhd/image.js";
import { FOOTER_COOKIE } from "./vhd/format.js";
import { VhdxImage } from "./vhdx/image.js";
import { FILE_IDENTIFIER_SIGNATURE, type ParentLocator } from "./vhdx/format.js";

/** Parent chains deeper than this are refused (Hyper-V's own checkpoint chains stay far below). */
export const MAX_CHAIN_DEPTH = 64;

/** Guesses a file's format from its signatures: "vhdxfile" at 0, "conectix" at the end or at 0, else raw. */
export async function detectFormat(file: StorageFile): Promise<DiskFormat> {
  const size = await file.size();
  const head = await file.read(0, 8);
  const text = (bytes: Uint8Array): string => new TextDecoder("latin1").decode(bytes);
  if (text(head) === FILE_IDENTIFIER_SIGNATURE) return "vhdx";
  if (text(head) === FOOTER_COOKIE) return "vhd";
  if (size >= 512) {
    const tailAt = size - (size % 512 === 0 ? 512 : size % 512);
    if (text(await file.read(tailAt, 8)) === FOOTER_COOKIE) return "vhd";
  }
  return "raw";
}

export interface OpenOptions {
  /** Never write to the file (nor to any parent: parents are always opened read-only). */
  readonly readonly: boolean;
  /** Skip detection. */
  readonly format?: DiskFormat;
  /** See {@link VhdxImage.open}: `merge` keeps the parent's DataWriteGuid while writing it. */
  readonly keepDataWriteGuid?: boolean;
}

/**
 * Opens an image file of any format, with its parent chain (parents read-only). Loops
 * and chains deeper than {@link MAX_CHAIN_DEPTH} are refused.
 * @throws {DiskFormatError} bad bytes, naming the file, structure and field.
 * @throws {DiskError} `disk.not-found`, `disk.parent-missing`, `disk.parent-mismatch`, `disk.parent-loop`.
 * @example
 * const image = await openImage("child.vhdx", { readonly: true });
 * console.log(image.format, image.type, image.sizeBytes, image.parent?.path);
 * await image.close();
 */
export async function openImage(path: string, options: OpenOptions): Promise<BlockImage> {
  return openChain(path, options, []);
}

async function openChain(path: string, options: OpenOptions, seen: string[]): Promise<BlockImage> {
  const real = await realpath(path).catch(() => resolve(path));
  if (seen.includes(real)) throw new DiskError(`${path}: parent chain loops back to ${real} (${[...seen, real].join(" -> ")})`, "disk.parent-loop");
  if (seen.length >= MAX_CHAIN_DEPTH) throw new DiskError(`${path}: parent chain deeper than ${MAX_CHAIN_DEPTH}`, "disk.parent-loop");
  const chain = [...seen, real];
  const file = await NodeFile.open(path, { writable: !options.readonly });
  try {
    const format = options.format ?? (await detectFormat(file));
    switch (format) {
      case "raw":
        return await RawImage.open(file, { readonly: options.readonly });
      case "vhd":
        return await VhdImage.open(file, {
          readonly: options.readonly,
          openParent: (names, child) => openChain(resolveVhdParent(names, child), { readonly: true, format: "vhd" }, chain),
        });
      case "vhdx":
        return await VhdxImage.open(file, {
          readonly: options.readonly,
          keepDataWriteGuid: options.keepDataWriteGuid ?? false,
          openParent: async (locator, child) => openChain(await resolveVhdxParent(locator, child), { readonly: true, format: "vhdx" }, chain),
        });
    }
  } catch (error: unknown) {
    await file.close().catch(() => undefined);
    throw error;
  }
}

/** Turns a stored Windows or POSIX path into a POSIX one: `.\base.vhdx` → `./base.vhdx`. */
function posixPath(stored: string): string {
  return stored.replace(/\\/g, "/");
}

async function exists(path: string): Promise<boolean> {
  return realpath(path).then(
    () => true,
    () => false,
  );
}

/** Where a VHDX's parent is: relative_path beside the child, then the absolute paths, then the file name beside the child. */
export async function resolveVhdxParent(locator: ParentLocator, child: string): Promise<string> {
  const candidates: string[] = [];
  const rel = locator.get("relative_path");
  if (rel !== undefined) candidates.push(join(dirname(child), posixPath(rel)));
  for (const key of ["absolute_win32_path", "volume_path"]) {
    const value = locator.get(key);
    if (value === undefined) continue;
    const p = posixPath(value);
    if (isAbsolute(p)) candidates.push(p);
    candidates.push(join(dirname(child), basename(p)));
  }
  for (const candidate of candidates) if (await exists(candidate)) return candidate;
  throw new DiskError(`${child}: parent not found (tried ${candidates.join(", ") || "no path: the parent locator names none"})`, "disk.parent-missing");
}

function resolveVhdParent(names: VhdParentNames, child: string): string {
  const candidates: string[] = [];
  if (names.relativePath !== undefined) candidates.push(join(dirname(child), posixPath(names.relativePath)));
  if (names.absolutePath !== undefined) {
    const p = posixPath(names.absolutePath);
    if (isAbsolute(p)) candidates.push(p);
    candidates.push(join(dirname(child), basename(p)));
  }
  if (names.unicodeName !== "") candidates.push(join(dirname(child), basename(posixPath(names.unicodeName))));
  // INVARIANT: openChain reports the missing file; the first candidate names the intent.
  return candidates[0] ?? join(dirname(child), "(no parent name)");
}

export interface CreateOptions {
  readonly format: DiskFormat;
  readonly sizeBytes: number;
  readonly type?: DiskType;
  readonly blockSizeBytes?: number;
  readonly logicalSectorBytes?: number;
  readonly physicalSectorBytes?: number;
  /** Parent image path, for differencing disks (same format). */
  readonly parentPath?: string;
  /**
   * Skip crash-safety ordering while writing, write metadata once at flush or close, and
   * write data back as it comes: for a temporary file renamed into place once flushed.
   */
  readonly bulk?: boolean;
  /**
   * False: flushes do nothing, so the data reaches the disk when the kernel writes it
   * back (`convert --no-flush`, like qemu-img's default cache=unsafe). Default true.
   */
  readonly durable?: boolean;
}

/**
 * Creates an image file (refusing to overwrite one) and returns it open for writing.
 * A differencing disk takes its parent's size and records the parent's path relative to
 * the child and absolute.
 * @throws {DiskError} `disk.exists`, `disk.bad-size`, `disk.unsupported`; {@link DiskFormatError} for a bad parent.
 */
export async function createImage(path: string, o: CreateOptions): Promise<BlockImage> {
  const type: DiskType = o.parentPath !== undefined ? "differencing" : (o.type ?? (o.format === "raw" ? "fixed" : "dynamic"));
  if (o.format === "raw" && type !== "fixed") throw new DiskError(`${path}: raw images are neither dynamic nor differencing (a raw file is sparse anyway)`, "disk.unsupported");
  if (type === "differencing" && o.parentPath === undefined) throw new DiskError(`${path}: --type differencing needs --parent`, "disk.parent-missing");
  const parent = o.parentPath !== undefined ? await openImage(o.parentPath, { readonly: true }) : undefined;
  if (parent !== undefined && parent.format !== o.format) {
    await parent.close();
    throw new DiskError(`${path}: a ${o.format} differencing disk needs a ${o.format} parent, ${o.parentPath ?? ""} is ${parent.format}`, "disk.unsupported");
  }
  let file: NodeFile;
  try {
    file = await NodeFile.open(path, { writable: true, create: true, writeBehind: o.bulk === true, allocateOnWrite: o.bulk === true, durable: o.durable ?? true });
  } catch (error: unknown) {
    await parent?.close();
    if (error instanceof DiskError && error.cause instanceof Error && (error.cause as NodeJS.ErrnoException).code === "EEXIST") {
      throw new DiskError(`${path}: file exists (remove it first)`, "disk.exists", { cause: error });
    }
    throw error;
  }
  const parentPaths = o.parentPath !== undefined ? { relativePath: relative(dirname(resolve(path)), resolve(o.parentPath)), absolutePath: resolve(o.parentPath) } : undefined;
  try {
    switch (o.format) {
      case "raw":
        return await RawImage.create(file, o.sizeBytes);
      case "vhd":
        return await VhdImage.create(file, {
          sizeBytes: o.sizeBytes,
          type,
          bulk: o.bulk ?? false,
          ...(o.blockSizeBytes !== undefined ? { blockSizeBytes: o.blockSizeBytes } : {}),
          ...(parent instanceof VhdImage && parentPaths !== undefined ? { parent: { image: parent, ...parentPaths } } : {}),
        });
      case "vhdx":
        return await VhdxImage.create(file, {
          sizeBytes: o.sizeBytes,
          type,
          bulk: o.bulk ?? false,
          ...(o.blockSizeBytes !== undefined ? { blockSizeBytes: o.blockSizeBytes } : {}),
          ...(o.logicalSectorBytes !== undefined ? { logicalSectorBytes: o.logicalSectorBytes } : {}),
          ...(o.physicalSectorBytes !== undefined ? { physicalSectorBytes: o.physicalSectorBytes } : {}),
          ...(parent instanceof VhdxImage && parentPaths !== undefined ? { parent: { image: parent, ...parentPaths } } : {}),
        });
    }
  } catch (error: unknown) {
    await file.close().catch(() => undefined);
    await parent?.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw error instanceof DiskFormatError ? error.withPath(path) : error;
  }
}
