/**
 * The `palisade` program (bundled by scripts/bundle.mjs into dist/bin/palisade.cjs, next
 * to the CLI bundle cli.cjs; `launch` is in code-cache.ts). Its `#!` line clears
 * NODE_EXTRA_CA_CERTS: Node parses that CA bundle at start-up whether or not TLS is ever
 * used (~90 ms on a machine whose environment sets it), and no Palisade command makes a
 * TLS connection from Node. Only meaningful as that CommonJS bundle: `__dirname` is the
 * bundle's directory.
 */
import { join } from "node:path";
import { launch } from "./code-cache.js";

launch(join(__dirname, "cli.cjs"), process.argv);
