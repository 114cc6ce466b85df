/**
 * Fuzz runner: `npm run fuzz -- TARGET [--seconds N] [--seed S]` mutates the target's seed
 * inputs for N seconds; `npm run fuzz -- --smoke` replays every committed corpus file and
 * runs each target for a short seeded pass (what `npm test` does).
 *
 * A target is `fuzz/targets/NAME.fuzz.ts` exporting `seeds(): Uint8Array[]` (valid inputs
 * to mutate) and `fuzz(data)`, which must return or throw only the target's documented
 * error class; anything else, or an input that takes longer than its budget, is a finding,
 * saved under `fuzz/findings/` and printed.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { mutate, Rng } from "./mutate.js";

export interface FuzzTarget {
  seeds(): Uint8Array[] | Promise<Uint8Array[]>;
  fuzz(data: Uint8Array): void | Promise<void>;
  /** Per-input time budget; default 2000 ms. */
  budgetMs?: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..", "..");
const targetsDir = join(here, "targets");

async function loadTarget(name: string): Promise<FuzzTarget> {
  return (await import(join(targetsDir, `${name}.fuzz.js`))) as FuzzTarget;
}

function targetNames(): string[] {
  if (!existsSync(targetsDir)) return [];
  return readdirSync(targetsDir)
    .filter((file) => file.endsWith(".fuzz.js"))
    .map((file) => file.slice(0, -".fuzz.js".length))
    .sort();
}

async function runOne(target: FuzzTarget, name: string, input: Uint8Array, label: string): Promise<boolean> {
  const budgetMs = target.budgetMs ?? 2000;
  const started = performance.now();
  try {
    await target.fuzz(input);
  } catch (error: unknown) {
    report(name, input, label, error);
    return false;
  }
  const tookMs = performance.now() - started;
  if (tookMs > budgetMs) {
    report(name, input, label, new Error(`input took ${tookMs.toFixed(0)} ms, budget ${budgetMs} ms`));
    return false;
  }
  return true;
}

function report(name: string, input: Uint8Array, label: string, error: unknown): void {
  const dir = join(repoRoot, "fuzz", "findings", name);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${Date.now()}-${label.replace(/[^a-z0-9-]/gi, "_")}.bin`);
  writeFileSync(file, input);
  console.error(`fuzz ${name}: finding (${label}), saved to ${file}:`);
  console.error(error);
}

async function fuzzTarget(name: string, seconds: number, seed: number): Promise<boolean> {
  const target = await loadTarget(name);
  let ok = true;
  const corpusDir = join(repoRoot, "fuzz", "corpus", name);
  const corpus = existsSync(corpusDir) ? readdirSync(corpusDir).sort() : [];
  for (const file of corpus) {
    ok = (await runOne(target, name, new Uint8Array(readFileSync(join(corpusDir, file))), `corpus-${file}`)) && ok;
  }
  const seeds = await target.seeds();
  if (seeds.length === 0) throw new Error(`fuzz target ${name} has no seeds`);
  const rng = new Rng(seed);
  const deadline = Date.now() + seconds * 1000;
  let runs = 0;
  while (Date.now() < deadline) {
    const base = seeds[rng.below(seeds.length)] ?? new Uint8Array();
    const input = mutate(base, rng);
    ok = (await runOne(target, name, input, `seed${seed}-run${runs}`)) && ok;
    runs++;
  }
  console.log(`fuzz ${name}: ${corpus.length} corpus files replayed, ${runs} mutated inputs in ${seconds} s (seed ${seed}), ${ok ? "no findings" : "FINDINGS"}`);
  return ok;
}

async function main(argv: string[]): Promise<number> {
  const flag = (name: string): string | undefined => {
    const index = argv.indexOf(name);
    return index >= 0 ? argv[index + 1] : undefined;
  };
  const smoke = argv.includes("--smoke");
  const seconds = Number(flag("--seconds") ?? (smoke ? "3" : "60"));
  const seed = Number(flag("--seed") ?? (smoke ? "1" : String(Date.now() % 1_000_000)));
  const names = smoke ? targetNames() : argv.filter((arg, i) => !arg.startsWith("--") && !argv[i - 1]?.startsWith("--"));
  if (names.length === 0) {
    console.error(`usage: npm run fuzz -- TARGET [--seconds N] [--seed S] | --smoke\ntargets: ${targetNames().join(", ") || "(none)"}`);
    return 2;
  }
  let ok = true;
  for (const name of names) {
    if (!targetNames().includes(name)) {
      console.error(`fuzz: no target "${name}"; targets: ${targetNames().join(", ")}`);
      return 2;
    }
    ok = (await fuzzTarget(name, seconds, seed)) && ok;
  }
  return ok ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
