/**
 * The runtime tree: one directory per host holding exactly the files every worker needs
 * (QEMU, its libraries and accelerator modules, its firmware, setpriv), laid out at their
 * own paths (`<tree>/usr/bin/qemu-system-x86_64`, `<tree>/lib/x86_64-linux-gnu/…`), as hard
 * links where the filesystem allows and copies otherwise. A jail then binds the tree's
 * few top-level directories (`/usr`, `/lib`, `/lib64`) instead of ~60 files one by one:
 * each bind is a mount, and 60 of them cost ~50 ms per start (measured; bench/sandbox.ts).
 * Firecracker's jailer hard-links its binary into each chroot for the same reason.
 *
 * The tree's name is a fingerprint of its sources (path, inode, size, mtime), so a package
 * upgrade yields a new tree; a tree in use by running workers is never changed.
 */
import { createHash } from "node:crypto";
import { copyFile, link, mkdir, realpath, rename, rm, writeFile } from "node:fs/promises";
import { existsSync, readdirSync, statSync } from "node:fs";
import { posix } from "node:path";
import type { SandboxHostFacts } from "./host-facts.js";

/** A prepared runtime tree. */
export interface RuntimeTree {
  /** The host directory whose contents mirror `/`. */
  readonly root: string;
  /** Every file in the tree, by its path inside the jail. */
  readonly files: readonly string[];
}

/** Top-level directories a tree occupies in the jail (`/lib`, `/lib64`, `/usr`); pure. */
export function runtimeTreeTops(tree: RuntimeTree): string[] {
  return [...new Set(tree.files.map((file) => `/${file.split("/")[1] ?? ""}`))].sort();
}

// The sources are listed and stat'ed synchronously: this runs on every VM start, before
// QEMU, over ~170 files (libraries, firmware), and each asynchronous stat is a round trip
// through libuv's thread pool and the event loop. Done that way it cost ~5-10 ms of every
// start; a synchronous stat of a cached inode costs microseconds.
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = posix.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

/** The files a tree for `host` holds (paths as the jail sees them), plus `extraFiles`. */
function treeSources(host: SandboxHostFacts, qemuBinary: string, extraFiles: readonly string[]): string[] {
  const files = new Set<string>([...host.runtimeFiles, qemuBinary, ...extraFiles]);
  if (host.setpriv !== null) files.add(host.setpriv);
  for (const dir of host.firmwareDirs) for (const file of filesUnder(dir)) files.add(file);
  return [...files].sort();
}

/**
 * Builds (or finds) the runtime tree for `host` under `parentDir` and returns the host
 * facts with `runtimeTree` set. `extraFiles` go into the tree too (the hostile tests add
 * their shell). Idempotent; safe against a concurrent builder (built aside, then renamed).
 */
export async function prepareRuntimeTree(
  host: SandboxHostFacts,
  qemuBinary: string,
  parentDir: string,
  extraFiles: readonly string[] = [],
): Promise<SandboxHostFacts> {
  const sources = treeSources(host, qemuBinary, extraFiles);
  const fingerprint = createHash("sha256");
  for (const source of sources) {
    const info = statSync(source);
    fingerprint.update(`${source}\0${info.ino}\0${info.size}\0${info.mtimeMs}\n`);
  }
  const root = posix.join(parentDir, `runtime-${fingerprint.digest("hex").slice(0, 16)}`);
  const tree: RuntimeTree = { root, files: sources };
  if (existsSync(posix.join(root, ".complete"))) return { ...host, runtimeTree: tree };

  await mkdir(parentDir, { recursive: true, mode: 0o755 });
  const building = `${root}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  for (const source of sources) {
    const target = posix.join(building, source);
    await mkdir(posix.dirname(target), { recursive: true, mode: 0o755 });
    const real = await realpath(source);
    try {
      await link(real, target);
    } catch {
      // Another filesystem (EXDEV) or hard links refused: copy, keeping the mode.
      await copyFile(real, target);
    }
  }
  await writeFile(posix.join(building, ".complete"), "");
  try {
    await rename(building, root);
  } catch (error: unknown) {
    // A concurrent builder won the race; its tree is the same.
    await rm(building, { recursive: true, force: true });
    if (!existsSync(posix.join(root, ".complete"))) throw error;
  }
  return { ...host, runtimeTree: tree };
}
