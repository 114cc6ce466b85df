#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/src/cli/main.js) into dist/bin/palisade.js, the
 * program `npm start`, the `palisade` bin and the tests run.
 *
 * Why: `palisade run` sits between the user and the guest's first instruction. Loaded
 * as ~250 separate ES modules (zod alone is 99 files) Node spent ~150 ms resolving and
 * compiling them before QEMU was even spawned; one tree-shaken file per command group
 * is read and compiled in a fraction of that (bench: `npm run bench -- boot`).
 *
 * Native add-ons (koffi, better-sqlite3) cannot be bundled; fastify is left as a
 * package because it loads parts of itself by path at run time, and only the service
 * (whose start-up time does not matter) loads it.
 */
import { build } from "esbuild";
import { chmodSync, rmSync } from "node:fs";

const outdir = "dist/bin";
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { palisade: "dist/src/cli/main.js" },
  outdir,
  bundle: true,
  splitting: true, // each command group stays a lazily loaded chunk
  format: "esm",
  platform: "node",
  target: "node20",
  external: ["koffi", "better-sqlite3", "fastify", "@fastify/*"],
  // Bundled CommonJS packages (commander) call require() for Node's built-ins.
  banner: { js: 'import { createRequire as __palisadeRequire } from "node:module"; const require = __palisadeRequire(import.meta.url);' },
  sourcemap: "linked",
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: "warning",
});
chmodSync(`${outdir}/palisade.js`, 0o755);
