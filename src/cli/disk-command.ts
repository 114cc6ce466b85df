/**
 * `palisade disk …`: create, inspect, check, resize, compact, merge, convert and map
 * virtual disks (raw, VHD, VHDX). Flags are parsed into typed values here, once; the work
 * is `storage/`'s.
 */
import type { Command } from "commander";
import { ConfigError } from "../util/errors.js";
import { formatByteSize, parseByteSize } from "../util/byte-size.js";
import { ProgressBar } from "../util/progress.js";
import {
  checkImage,
  compactImage,
  convertImage,
  createImage,
  describeImage,
  imageInfo,
  imageMap,
  mergeImage,
  resizeImage,
  type AllocationRange,
  type DiskFormat,
  type DiskType,
  type ImageInfo,
  type ProgressCallback,
} from "../storage/index.js";

const FORMATS = ["raw", "vhd", "vhdx"] as const;
const TYPES = ["fixed", "dynamic", "differencing"] as const;

/** A flag value that must be one of a list. */
export function parseChoice<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(value)) throw new ConfigError(`${flag}: "${value}" is not one of ${allowed.join(", ")}`, "disk.bad-flag");
  return value as T;
}

/** The format a file name suggests: `.vhdx`, `.vhd` (or `.vpc`), else raw. */
export function formatFromName(path: string): DiskFormat {
  const lower = path.toLowerCase();
  if (lower.endsWith(".vhdx")) return "vhdx";
  if (lower.endsWith(".vhd") || lower.endsWith(".vpc")) return "vhd";
  return "raw";
}

/** A size flag as a safe number of bytes. */
export function parseSizeFlag(text: string, flag: string): number {
  const bytes = parseByteSize(text, flag);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER) || bytes <= 0n) throw new ConfigError(`${flag}: "${text}" is out of range`, "disk.bad-flag");
  return Number(bytes);
}

function sectorFlag(text: string, flag: string): number {
  if (text !== "512" && text !== "4096") throw new ConfigError(`${flag}: "${text}" is not 512 or 4096`, "disk.bad-flag");
  return Number(text);
}

/** Geometry flags a format has no field for are refused rather than ignored. */
export function checkFormatFlags(format: DiskFormat, o: { blockSize?: string | undefined; logicalSector?: string | undefined; physicalSector?: string | undefined }): void {
  const given: Record<string, string | undefined> = { "--block-size": o.blockSize, "--logical-sector": o.logicalSector, "--physical-sector": o.physicalSector };
  const applies = format === "vhdx" ? Object.keys(given) : format === "vhd" ? ["--block-size"] : [];
  const bad = Object.keys(given).filter((flag) => given[flag] !== undefined && !applies.includes(flag));
  if (bad.length > 0) {
    const why = format === "vhd" ? "VHD sectors are always 512 bytes" : "a raw image has no blocks and no sector size field";
    throw new ConfigError(`${bad.join(", ")}: not a setting of ${format} images (${why})`, "disk.bad-flag");
  }
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** The `disk info` text: one `key: value` line each, as `qemu-img info` prints. */
export function formatInfo(info: ImageInfo): string {
  const lines = [
    `image: ${info.path}`,
    `format: ${info.format}`,
    `type: ${info.type}`,
    `virtual size: ${formatByteSize(info.virtualSizeBytes)} (${info.virtualSizeBytes} bytes)`,
    `block size: ${formatByteSize(info.blockSizeBytes)}`,
    `sector size: ${info.logicalSectorBytes} logical, ${info.physicalSectorBytes} physical`,
    `file size: ${formatByteSize(info.fileSizeBytes)}`,
    `allocated: ${formatByteSize(info.allocatedBytes)}`,
  ];
  if (info.identifier !== undefined) lines.push(`identifier: ${info.identifier}`);
  if (info.creator !== undefined) lines.push(`creator: "${info.creator}"`);
  if (info.logPending === true) lines.push("log: entries pending replay (run disk check --repair)");
  if (info.parentChain.length > 0) lines.push(`parent chain: ${info.parentChain.join(" -> ")}`);
  return lines.join("\n");
}

/** The `disk map` text: one allocated or zero run per line. */
export function formatMap(ranges: readonly AllocationRange[]): string {
  return ranges.map((r) => `0x${r.offset.toString(16).padStart(12, "0")} 0x${r.length.toString(16).padStart(12, "0")} ${r.state}${r.fileOffset !== undefined ? ` @0x${r.fileOffset.toString(16)}` : ""}`).join("\n");
}

function progress(label: string): { onProgress: ProgressCallback; finish: () => void } {
  let bar: ProgressBar | undefined;
  return {
    onProgress: (done, total) => {
      bar ??= new ProgressBar(label, total);
      bar.update(done);
    },
    finish: () => bar?.finish(),
  };
}

export function registerDiskCommands(program: Command): void {
  const disk = program.command("disk").description("virtual disks: raw, VHD and VHDX (fixed, dynamic, differencing)");

  disk
    .command("create")
    .description("create a disk image")
    .argument("<file>", "image to create (must not exist)")
    .option("--format <format>", "vhdx, vhd or raw (default: from the file name)")
    .option("--size <size>", "virtual size, e.g. 20G (a differencing disk takes its parent's)")
    .option("--type <type>", "fixed, dynamic or differencing (default: dynamic; differencing with --parent)")
    .option("--block-size <size>", "block size (VHDX 1M-256M, default 32M, 2M differencing; VHD default 2M)")
    .option("--logical-sector <bytes>", "VHDX logical sector size: 512 (default) or 4096")
    .option("--physical-sector <bytes>", "VHDX physical sector size: 512 or 4096 (default)")
    .option("--parent <base>", "parent image: make a differencing disk over it")
    .option("--json", "print the new image's info as JSON")
    .action(async (file: string, o: { format?: string; size?: string; type?: string; blockSize?: string; logicalSector?: string; physicalSector?: string; parent?: string; json?: boolean }) => {
      const format = o.format !== undefined ? parseChoice(o.format, FORMATS, "--format") : formatFromName(file);
      const type: DiskType | undefined = o.type !== undefined ? parseChoice(o.type, TYPES, "--type") : undefined;
      if (o.size === undefined && o.parent === undefined) throw new ConfigError("--size is needed (or --parent for a differencing disk)", "disk.bad-flag");
      if (o.size !== undefined && o.parent !== undefined) throw new ConfigError("--size: a differencing disk takes its parent's size; leave --size out with --parent", "disk.bad-flag");
      checkFormatFlags(format, o);
      const image = await createImage(file, {
        format,
        sizeBytes: o.size !== undefined ? parseSizeFlag(o.size, "--size") : 0,
        ...(type !== undefined ? { type } : {}),
        ...(o.blockSize !== undefined ? { blockSizeBytes: parseSizeFlag(o.blockSize, "--block-size") } : {}),
        ...(o.logicalSector !== undefined ? { logicalSectorBytes: sectorFlag(o.logicalSector, "--logical-sector") } : {}),
        ...(o.physicalSector !== undefined ? { physicalSectorBytes: sectorFlag(o.physicalSector, "--physical-sector") } : {}),
        ...(o.parent !== undefined ? { parentPath: o.parent } : {}),
      });
      const line = `created ${file}: ${image.format} ${image.type}, ${formatByteSize(image.sizeBytes)}${image.parent ? ` over ${image.parent.path}` : ""}`;
      const info = o.json ? await describeImage(image) : undefined;
      await image.close();
      if (info !== undefined) printJson(info);
      else process.stdout.write(`${line}\n`);
    });

  disk
    .command("info")
    .description("show format, type, sizes, allocation and parent chain (opens read-only)")
    .argument("<file>")
    .option("--json", "print JSON")
    .action(async (file: string, o: { json?: boolean }) => {
      const info = await imageInfo(file);
      if (o.json) printJson(info);
      else process.stdout.write(`${formatInfo(info)}\n`);
    });

  disk
    .command("check")
    .description("check every header, table, BAT entry and the parent chain; exit 1 on problems")
    .argument("<file>")
    .option("--repair", "replay a pending VHDX log, or rewrite a VHD's lost footer")
    .option("--json", "print JSON")
    .action(async (file: string, o: { repair?: boolean; json?: boolean }) => {
      const result = await checkImage(file, { repair: o.repair === true });
      if (o.json) printJson(result);
      else {
        for (const line of result.repaired) process.stdout.write(`repaired: ${line}\n`);
        for (const line of result.problems) process.stdout.write(`problem: ${line}\n`);
        if (result.ok) process.stdout.write(`${file}: no problems found\n`);
      }
      if (!result.ok) process.exitCode = 1;
    });

  disk
    .command("resize")
    .description("change the virtual size (shrinking only when the cut-off tail holds no data)")
    .argument("<file>")
    .requiredOption("--size <size>", "new virtual size, e.g. 40G")
    .option("--json", "print JSON")
    .action(async (file: string, o: { size: string; json?: boolean }) => {
      const size = parseSizeFlag(o.size, "--size");
      await resizeImage(file, size);
      if (o.json) printJson({ path: file, virtualSizeBytes: size });
      else process.stdout.write(`${file}: virtual size now ${formatByteSize(size)}\n`);
    });

  disk
    .command("compact")
    .description("rewrite a dynamic or differencing image without all-zero and discarded blocks")
    .argument("<file>")
    .option("--json", "print JSON")
    .action(async (file: string, o: { json?: boolean }) => {
      const bar = progress("compact");
      const result = await compactImage(file, { onProgress: bar.onProgress });
      bar.finish();
      if (o.json) printJson({ path: file, ...result });
      else process.stdout.write(`${file}: ${formatByteSize(result.beforeBytes)} -> ${formatByteSize(result.afterBytes)}\n`);
    });

  disk
    .command("merge")
    .description("merge a differencing disk into its parent (crash-safe), then delete it")
    .argument("<child>")
    .option("--keep-child", "keep the child file after merging")
    .option("--json", "print JSON")
    .action(async (child: string, o: { keepChild?: boolean; json?: boolean }) => {
      const bar = progress("merge");
      const parent = await mergeImage(child, { onProgress: bar.onProgress, keepChild: o.keepChild === true });
      bar.finish();
      if (o.json) printJson({ child, parent, childDeleted: o.keepChild !== true });
      else process.stdout.write(`merged ${child} into ${parent}${o.keepChild ? "" : `; ${child} deleted`}\n`);
    });

  disk
    .command("convert")
    .description("copy a disk (its parent chain flattened) into another format; holes stay holes")
    .argument("<src>")
    .argument("<dst>", "image to create (must not exist)")
    .option("--format <format>", "vhdx, vhd or raw (default: from the file name)")
    .option("--type <type>", "fixed or dynamic (default: dynamic)")
    .option("--block-size <size>", "block size of the new image")
    .option("--logical-sector <bytes>", "VHDX logical sector size: 512 or 4096")
    .option("--no-flush", "do not wait for DST to reach the disk (qemu-img convert's default, cache=unsafe): faster, but a crash in the next ~30 s can leave DST empty or missing; run `sync DST` before deleting SRC")
    .option("--json", "print the new image's info as JSON")
    .action(async (src: string, dst: string, o: { format?: string; type?: string; blockSize?: string; logicalSector?: string; flush: boolean; json?: boolean }) => {
      const format = o.format !== undefined ? parseChoice(o.format, FORMATS, "--format") : formatFromName(dst);
      checkFormatFlags(format, o);
      const bar = progress("convert");
      await convertImage(src, dst, {
        format,
        ...(o.type !== undefined ? { type: parseChoice(o.type, ["fixed", "dynamic"] as const, "--type") } : {}),
        ...(o.blockSize !== undefined ? { blockSizeBytes: parseSizeFlag(o.blockSize, "--block-size") } : {}),
        ...(o.logicalSector !== undefined ? { logicalSectorBytes: sectorFlag(o.logicalSector, "--logical-sector") } : {}),
        onProgress: bar.onProgress,
        flush: o.flush,
      });
      bar.finish();
      if (o.json) printJson(await imageInfo(dst));
    });

  disk
    .command("map")
    .description("list the disk's runs: data (in this file), zero, parent")
    .argument("<file>")
    .option("--json", "print JSON")
    .action(async (file: string, o: { json?: boolean }) => {
      const ranges = await imageMap(file);
      if (o.json) printJson(ranges);
      else process.stdout.write(`${formatMap(ranges)}\n`);
    });
}
