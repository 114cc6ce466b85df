#!/usr/bin/env node
/**
 * Bundles the compiled CLI into the program `npm start`, the `palisade` bin and the tests run:
 *   dist/bin/cli.cjs       the whole CLI (dist/src/cli/main.js) as one CommonJS file
 *   dist/bin/palisade.cjs  the launcher (dist/src/cli/launcher.js): compiles cli.cjs with
 *                          V8's code cache (dist/bin/.v8-cache/, written by earlier runs)
 *
 * Why: `palisade run` sits between the user and the guest's first instruction. Loaded as
 * ~250 ES modules Node spent ~150 ms before QEMU was spawned; as tree-shaken ES module
 * chunks, ~50 ms of resolving, linking and compiling remained. One CommonJS file plus the
 * bytecode of an earlier run leaves little of it (docs/design/boot-path.md; bench:
 * `npm run bench -- boot`). Command groups stay lazy: a group's module code runs only
 * when its command does.
 *
 * Native add-ons (koffi, better-sqlite3) cannot be bundled; fastify is left as a
 * package because it loads parts of itself by path at run time, and only the service
 * (whose start-up time does not matter) loads it.
 */
import { build } from "esbuild";
import { chmodSync, readFileSync, rmSync } from "node:fs";

const outdir = "dist/bin";
rmSync(outdir, { recursive: true, force: true });
const common = {
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: "warning",
};
await build({
  ...common,
  entryPoints: ["dist/src/cli/main.js"],
  outfile: `${outdir}/cli.cjs`,
  external: ["koffi", "better-sqlite3", "fastify", "@fastify/*"],
  // The sources are ES modules; in one CommonJS file import.meta.url is this file's URL.
  define: { "import.meta.url": "__palisadeBundleUrl" },
  // The banner comes before esbuild's own "use strict", which would then be no directive:
  // the sources are ES modules, so the bundle must stay strict.
  banner: { js: '"use strict";const __palisadeBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  // The launcher compiles the bundle with vm.Script and V8's code cache; in Node 20 such a
  // script cannot import(), so every import() becomes require().
  supported: { "dynamic-import": false },
  sourcemap: "linked",
});
if (/\bimport\(/.test(readFileSync(`${outdir}/cli.cjs`, "utf8").replace(/\/\/# sourceMappingURL.*$/m, "")))
  throw new Error(`${outdir}/cli.cjs still contains import(): the launcher's vm.Script cannot run it`);
await build({
  ...common,
  entryPoints: ["dist/src/cli/launcher.js"],
  outfile: `${outdir}/palisade.cjs`,
  banner: { js: "#!/usr/bin/env -S NODE_EXTRA_CA_CERTS= node" },
});
chmodSync(`${outdir}/palisade.cjs`, 0o755);
