/**
 * The `palisade` program (bundled by scripts/bundle.mjs into dist/bin/palisade.cjs, next
 * to the CLI bundle cli.cjs). Its `#!` line clears NODE_EXTRA_CA_CERTS: Node parses that
 * CA bundle at start-up whether or not TLS is ever used (~90 ms on a machine whose
 * environment sets it), and no Palisade command makes a TLS connection from Node.
 * Only meaningful as that CommonJS bundle: `__dirname` is the bundle's directory.
 */
import { join } from "node:path";
import { loadBundle } from "./code-cache.js";

/** What Node itself exits with when a module's top-level await never settles. */
const EXIT_UNSETTLED = 13;

const cli = loadBundle(join(__dirname, "cli.cjs"), process.argv);
if (process.env.PALISADE_DEBUG) process.stderr.write(`palisade: code cache ${cli.cache}\n`);
let settled = false;
// A command whose work stopped waiting on nothing would otherwise end with 0 and no output.
process.once("exit", () => {
  if (settled) return;
  process.stderr.write("palisade: internal error: the command stopped before it finished (nothing left to wait for)\n");
  process.exitCode = EXIT_UNSETTLED;
});
cli.exports.runCli(process.argv).then(
  (code) => {
    settled = true;
    process.exitCode = code;
  },
  (error: unknown) => {
    settled = true;
    process.stderr.write(`palisade: ${String(error)}\n`);
    process.exitCode = 1;
  },
);
