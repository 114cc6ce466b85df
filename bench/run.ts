/**
 * `npm run bench -- NAME [ARGS…]` runs `bench/NAME.ts`, which exports `main(args)`.
 * Benchmarks measure Palisade side by side with its peer in the same run and print ratios.
 */
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

interface Bench {
  main(args: string[]): Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));
const names = readdirSync(here)
  .filter((file) => file.endsWith(".js") && file !== "run.js" && !file.startsWith("lib-"))
  .map((file) => file.slice(0, -3));
const [name, ...args] = process.argv.slice(2);
if (name === undefined || !existsSync(join(here, `${name}.js`)) || !names.includes(name)) {
  console.error(`usage: npm run bench -- NAME [ARGS…]\nbenchmarks: ${names.join(", ") || "(none)"}`);
  process.exitCode = 2;
} else {
  const bench = (await import(join(here, `${name}.js`))) as Bench;
  await bench.main(args);
}
