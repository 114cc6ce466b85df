/**
 * `npm run bench -- disk [--size-mib 2048] [--runs 5] [--dir DIR]`: Palisade's disk
 * conversion and BlockImage random I/O, side by side with qemu-img in the same run.
 *
 * 1. convert raw→vhdx, vhdx→raw, vhd→vhdx of an image with mixed data and holes (per
 *    32 MiB: 8 MiB of data, the rest holes), `palisade disk convert` (the shipped CLI
 *    bundle; also the library in a process of its own, and in this process: no start-up)
 *    vs `qemu-img convert`;
 * 2. 4 KiB random reads and writes through BlockImage on a dynamic VHDX and on raw, at
 *    queue depth 1 and 32 (a 512 MiB fully allocated working set).
 * Prints the median and the best of `--runs` runs and the ratios. Targets: every convert
 * ≤ qemu-img's time; dynamic VHDX random I/O ≥ 0.8× raw.
 *
 * Two like-for-like convert comparisons: `palisade disk convert` leaves a durable file
 * (flushed, renamed, directory synced), against `qemu-img convert` + `sync FILE`; and
 * `palisade disk convert --no-flush`, which like qemu-img's default (cache=unsafe) returns
 * with the output still in the page cache, against plain `qemu-img convert`.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, openSync, closeSync, writeSync, rmSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { convertImage, openImage, type BlockImage, type DiskFormat } from "../src/storage/index.js";

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
/**
 * The shipped CLI: the bundle scripts/bundle.mjs makes (dist/bin/palisade.cjs, or
 * OUTDIR/bin/palisade.cjs when the bench was compiled into another OUTDIR).
 */
const CLI = join(here, "..", "bin", "palisade.cjs");

function flag(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? (args[i + 1] ?? fallback) : fallback;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

function run(command: string, args: string[]): number {
  // Start each timed run with no dirty pages of earlier runs left to write back.
  spawnSync("sync", [], { timeout: 120_000 });
  const started = performance.now();
  const r = spawnSync(command, args, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8", timeout: 600_000 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${r.stderr}`);
  return (performance.now() - started) / 1000;
}

/** Writes a sparse raw image: per 32 MiB, 8 MiB of incompressible data at a varying place. */
function makeSource(path: string, sizeBytes: number): void {
  const fd = openSync(path, "w");
  ftruncateSync(fd, sizeBytes);
  const chunk = randomBytes(8 * MiB);
  for (let at = 0, i = 0; at < sizeBytes; at += 32 * MiB, i++) {
    chunk[i % chunk.length] = i & 0xff; // no two stripes alike
    writeSync(fd, chunk, 0, chunk.length, at + (i % 4) * 8 * MiB);
  }
  closeSync(fd);
}

function remove(...paths: string[]): void {
  for (const p of paths) rmSync(p, { force: true });
}

async function randomIo(image: BlockImage, kind: "read" | "write", depth: number, ops: number, spanBytes: number): Promise<number> {
  const blocks = spanBytes / 4096;
  const data = randomBytes(4096);
  let issued = 0;
  let x = 88172645;
  const nextBlock = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % blocks;
  };
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (issued < ops) {
      issued++;
      const offset = nextBlock() * 4096;
      if (kind === "read") await image.read(offset, 4096);
      else await image.write(offset, data);
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  if (kind === "write") await image.flush();
  return ops / ((performance.now() - started) / 1000);
}

export async function main(args: string[]): Promise<void> {
  const sizeBytes = Number(flag(args, "--size-mib", "2048")) * MiB;
  const runs = Number(flag(args, "--runs", "5"));
  const dir = flag(args, "--dir", join(tmpdir(), "palisade-bench-disk"));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const src = join(dir, "source.raw");
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: bundle the CLI first (npm run build)`);
  console.log(`disk bench: ${sizeBytes / MiB} MiB image (8 MiB data per 32 MiB), ${runs} runs each, in ${dir}`);
  makeSource(src, sizeBytes);
  const vhdx = join(dir, "source.vhdx");
  const vhd = join(dir, "source.vhd");
  await convertImage(src, vhdx, { format: "vhdx" });
  await convertImage(src, vhd, { format: "vhd" });

  // Palisade's convert in a process of its own, like qemu-img: Node plus the storage
  // library. The `palisade` CLI column is the shipped program (bin/palisade.cjs) and adds
  // the CLI's start-up.
  const library = join(here, "..", "src", "storage", "index.js");
  const libraryConvert = (from: string, to: string, format: string): number =>
    run(process.execPath, ["--input-type=module", "-e", `const s = await import(${JSON.stringify(library)}); await s.convertImage(${JSON.stringify(from)}, ${JSON.stringify(to)}, { format: ${JSON.stringify(format)} });`]);
  const cases: { name: string; from: string; to: string; format: DiskFormat; qemu: string[] }[] = [
    { name: "raw -> vhdx", from: src, to: join(dir, "out.vhdx"), format: "vhdx", qemu: ["-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic"] },
    { name: "vhdx -> raw", from: vhdx, to: join(dir, "out.raw"), format: "raw", qemu: ["-f", "vhdx", "-O", "raw"] },
    { name: "vhd -> vhdx", from: vhd, to: join(dir, "out.vhdx"), format: "vhdx", qemu: ["-f", "vpc", "-O", "vhdx", "-o", "subformat=dynamic"] },
  ];
  // `disk --help` loads what `disk convert` loads (the CLI and the disk command group);
  // `--version` would load every group.
  const startup = (args: string[]): string => median([0, 0, 0, 0, 0].map(() => run(process.execPath, args))).toFixed(2);
  const startupOf = (argv: string[]): string => median([0, 0, 0, 0, 0].map(() => run(argv[0] ?? "", argv.slice(1)))).toFixed(2);
  console.log(`\nCLI: ${CLI}\nstart-up, median of 5: node alone ${startup(["-e", "0"])} s; palisade disk --help ${startupOf([CLI, "disk", "--help"])} s (the bin as a user runs it)`);
  // qemu-img convert writes its output with cache=unsafe: nothing is flushed at the end.
  // Palisade flushes the new image before renaming it into place; "qemu-img+sync" is
  // qemu-img followed by an fsync of its output, the same durability.
  // "in-process" is convertImage called in this process: the conversion without any
  // process start-up (the CLI's cost is that plus Node's and the CLI's start-up).
  // "CLI --no-flush" is the shipped CLI with qemu-img's durability: nothing flushed.
  console.log("convert, seconds: median (best)  palisade CLI     palisade lib     in-process       qemu-img+sync    CLI --no-flush   qemu-img (no flush)   CLI/(qemu-img+sync) (target <= 1.00)   in-process/(qemu-img+sync)   (CLI --no-flush)/qemu-img (target <= 1.00)");
  type Who = "inProcess" | "library" | "cli" | "cliNoFlush" | "qemu" | "qemuSync";
  for (const c of cases) {
    const times: Record<Who, number[]> = { inProcess: [], library: [], cli: [], cliNoFlush: [], qemu: [], qemuSync: [] };
    const runners: Record<Who, () => Promise<number>> = {
      inProcess: async () => {
        spawnSync("sync", [], { timeout: 120_000 });
        const started = performance.now();
        await convertImage(c.from, c.to, { format: c.format });
        return (performance.now() - started) / 1000;
      },
      library: () => Promise.resolve(libraryConvert(c.from, c.to, c.format)),
      cli: () => Promise.resolve(run(CLI, ["disk", "convert", c.from, c.to, "--format", c.format])),
      cliNoFlush: () => Promise.resolve(run(CLI, ["disk", "convert", "--no-flush", c.from, c.to, "--format", c.format])),
      qemu: () => Promise.resolve(run("qemu-img", ["convert", ...c.qemu, c.from, c.to])),
      qemuSync: () => Promise.resolve(run("sh", ["-c", 'qemu-img convert "$@" && sync "$0"', c.to, ...c.qemu, c.from, c.to])),
    };
    for (let i = 0; i < runs; i++) {
      // Rotate who goes first: the page cache favours later readers.
      const all: Who[] = ["inProcess", "library", "cli", "cliNoFlush", "qemu", "qemuSync"];
      for (const who of all.map((_, k) => all[(k + i) % all.length] ?? "qemu")) {
        remove(c.to);
        times[who].push(await runners[who]());
      }
      remove(c.to);
    }
    const cell = (values: number[]): string => `${median(values).toFixed(2)} (${Math.min(...values).toFixed(2)})`.padStart(13);
    const ratio = (a: number[], b: number[]): string => `${(median(a) / median(b)).toFixed(2)} (${(Math.min(...a) / Math.min(...b)).toFixed(2)})`;
    console.log(
      `  ${c.name.padEnd(30)} ${cell(times.cli)}    ${cell(times.library)}    ${cell(times.inProcess)}    ${cell(times.qemuSync)}    ${cell(times.cliNoFlush)}    ${cell(times.qemu)}         ${ratio(times.cli, times.qemuSync).padStart(14)}                   ${ratio(times.inProcess, times.qemuSync).padStart(14)}               ${ratio(times.cliNoFlush, times.qemu)}`,
    );
  }

  // Random I/O: a 512 MiB fully written working set, as raw and as dynamic VHDX.
  const span = 512 * MiB;
  const ioRaw = join(dir, "io.raw");
  const fd = openSync(ioRaw, "w");
  const fill = randomBytes(8 * MiB);
  for (let at = 0; at < span; at += fill.length) writeSync(fd, fill, 0, fill.length, at);
  closeSync(fd);
  const ioVhdx = join(dir, "io.vhdx");
  await convertImage(ioRaw, ioVhdx, { format: "vhdx" });
  console.log("\n4 KiB random I/O (IOPS, median)  raw        vhdx      ratio (vhdx/raw, target >= 0.80)");
  for (const kind of ["read", "write"] as const) {
    for (const depth of [1, 32]) {
      const ops = depth === 1 ? 20_000 : 60_000;
      const rawRuns: number[] = [];
      const vhdxRuns: number[] = [];
      for (let i = 0; i < runs; i++) {
        for (const [path, into] of [
          [ioRaw, rawRuns],
          [ioVhdx, vhdxRuns],
        ] as const) {
          const image = await openImage(path, { readonly: false });
          into.push(await randomIo(image, kind, depth, ops, span));
          await image.close();
        }
      }
      const r = median(rawRuns);
      const v = median(vhdxRuns);
      console.log(`  ${`${kind} QD${depth}`.padEnd(30)} ${r.toFixed(0).padStart(8)}   ${v.toFixed(0).padStart(8)}   ${(v / r).toFixed(2)}`);
    }
  }
  rmSync(dir, { recursive: true, force: true });
}
