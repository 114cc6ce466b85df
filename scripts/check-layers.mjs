#!/usr/bin/env node
// Fails when an import goes against the layering of docs/design/layers.md
// (lower layers must not know higher ones; leaf libraries import no layer but util/).
import { readdirSync, readFileSync, statSync, existsSync } from "node:fs";
import { join, relative, dirname, resolve, sep } from "node:path";

const rank = { util: 0, policy: 1, sandbox: 1, engine: 2, image: 2, vsp: 2, service: 3, cli: 4, web: 4 };
const leaves = new Set(["storage", "network", "authz"]);

const src = resolve(process.argv[2] ?? "src");
if (!existsSync(src)) process.exit(0);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (/\.ts$/.test(name)) files.push(path);
  }
})(src);

const layerOf = (path) => relative(src, path).split(sep)[0];
const allowed = (from, to) => {
  if (from === to || to === "util") return true;
  if (from === "util") return false;
  if (leaves.has(from)) return false;
  if (leaves.has(to)) return true;
  if (!(from in rank) || !(to in rank)) return false;
  return rank[to] <= rank[from];
};
const bad = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  for (const m of text.matchAll(/(?:import|export)[^'"]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)) {
    const target = resolve(dirname(file), m[1] ?? m[2]);
    if (!target.startsWith(src + sep)) continue;
    const from = layerOf(file);
    const to = layerOf(target);
    if (!allowed(from, to)) bad.push(`${relative(process.cwd(), file)} imports ${m[1] ?? m[2]} (${from} -> ${to})`);
  }
}
if (bad.length > 0) {
  console.error("Imports against the layering (docs/design/layers.md):");
  for (const line of bad) console.error("  " + line);
  process.exit(1);
}
