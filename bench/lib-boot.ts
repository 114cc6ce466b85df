/** Shared by the boot benchmarks: boot a guest command once and time it. */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_GUEST_APPEND } from "../src/image/index.js";
import { CLI, PROMPT, READY } from "../tests/harness/test-vm.js";

export interface BootSample {
  /** ms from spawn to the ready marker on the console; null when it never came. */
  readonly markerMs: number | null;
  /** ms from spawn to the process's exit after `poweroff`. */
  readonly exitMs: number | null;
  readonly exitCode: number | null;
  readonly hang: boolean;
}

let counter = 0;
const runRoot = mkdtempSync(join(tmpdir(), "palisade-bench-run-"));

/** `palisade run` arguments for the default guest, 256 MiB. */
export function palisadeRunArgs(kernel: string, initrd: string, name: string, cpus = 1): string[] {
  return [
    CLI, "run", "--kernel", kernel, "--initrd", initrd, "--memory", "256M", "--cpus", String(cpus),
    "--append", DEFAULT_GUEST_APPEND, "--ready-marker", READY, "--name", `${name}-${process.pid}-${++counter}`,
    "--run-dir", runRoot, "--boot-timeout", "120",
  ];
}

/**
 * Spawns `argv`, waits for the ready marker and the prompt, types `poweroff`, waits for
 * the exit. A boot that shows no marker within `timeoutMs` is a hang (the process is killed).
 */
export async function bootOnce(
  argv: readonly string[],
  options: { timeoutMs?: number; onRunning?: (pid: number) => void } = {},
): Promise<BootSample> {
  const started = performance.now();
  const child = spawn(argv[0] ?? "", argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  // An object, so the closure's writes are visible to the type checker below.
  const seen: { markerMs: number | null; typed: boolean } = { markerMs: null, typed: false };
  const exited = new Promise<number | null>((done) => child.on("exit", (code) => { done(code); }));
  const timer = setTimeout(() => {
    child.kill("SIGKILL");
  }, options.timeoutMs ?? 120_000);
  child.stderr.resume();
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString("latin1");
    if (seen.markerMs === null && output.includes(READY)) {
      seen.markerMs = performance.now() - started;
      if (child.pid !== undefined) options.onRunning?.(child.pid);
    }
    if (seen.markerMs !== null && !seen.typed && output.slice(output.indexOf(READY)).includes(PROMPT)) {
      seen.typed = true;
      child.stdin.write("poweroff\n");
    }
    if (output.length > 65536) output = output.slice(-4096);
  });
  const exitCode = await exited;
  clearTimeout(timer);
  const exitMs = performance.now() - started;
  return { markerMs: seen.markerMs, exitMs: seen.markerMs === null ? null : exitMs, exitCode, hang: seen.markerMs === null };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Private memory (clean + dirty) of a process, from smaps_rollup, in KiB. */
export function privateMemoryKiB(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return field("Private_Clean") + field("Private_Dirty");
  } catch {
    return NaN;
  }
}

/** Prints median/max per variant and ratios against `baseline`. */
export function printRows(samples: Record<string, BootSample[]>, baseline: string): void {
  const stats = (list: BootSample[], key: "markerMs" | "exitMs"): { median: number; max: number } => {
    const values = list.map((sample) => sample[key]).filter((value): value is number => value !== null);
    return { median: median(values), max: Math.max(...values) };
  };
  const base = samples[baseline] ?? [];
  const baseMarker = stats(base, "markerMs").median;
  const baseExit = stats(base, "exitMs").median;
  console.log("variant    runs hangs  marker median/max (ms)   exit median/max (ms)   ratio vs " + baseline + " (marker, exit)");
  for (const [name, list] of Object.entries(samples)) {
    const marker = stats(list, "markerMs");
    const exit = stats(list, "exitMs");
    const hangs = list.filter((sample) => sample.hang).length;
    console.log(
      `${name.padEnd(10)} ${String(list.length).padStart(4)} ${String(hangs).padStart(5)}  ` +
        `${marker.median.toFixed(0).padStart(8)} / ${marker.max.toFixed(0).padEnd(8)}     ` +
        `${exit.median.toFixed(0).padStart(8)} / ${exit.max.toFixed(0).padEnd(8)}   ` +
        `${(marker.median / baseMarker).toFixed(3)}, ${(exit.median / baseExit).toFixed(3)}`,
    );
  }
}

/**
 * Palisade's overhead as the median of per-run differences: run i of `variant` and run i
 * of `baseline` were booted back to back, so drifts in the host's speed (steal time,
 * frequency) cancel out in each pair, which they do not in a ratio of two medians.
 */
export function printPairedOverhead(variant: readonly BootSample[], baseline: readonly BootSample[], name: string, baseName: string): void {
  for (const key of ["markerMs", "exitMs"] as const) {
    const differences: number[] = [];
    for (let i = 0; i < Math.min(variant.length, baseline.length); i++) {
      const a = variant[i]?.[key];
      const b = baseline[i]?.[key];
      if (typeof a === "number" && typeof b === "number") differences.push(a - b);
    }
    const baseMedian = median(baseline.map((sample) => sample[key]).filter((value): value is number => value !== null));
    const mid = median(differences);
    const sorted = [...differences].sort((x, y) => x - y);
    const quartile = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
    console.log(
      `${name} - ${baseName}, paired by run, to ${key === "markerMs" ? "marker" : "exit"}: median ${mid.toFixed(0)} ms ` +
        `(${((100 * mid) / baseMedian).toFixed(1)}% of ${baseName}'s median), quartiles ${quartile(0.25).toFixed(0)} / ${quartile(0.75).toFixed(0)} ms, ${differences.length} pairs`,
    );
  }
}
