/**
 * The guest's root file system as it is put together, before it becomes a cpio archive:
 * a map of absolute guest paths to directories, files (bytes or a host file read when
 * packing), symlinks and device nodes. Parents are created as needed; entries come out
 * sorted, so a parent always precedes its children and the archive is reproducible.
 */
import { ConfigError } from "../../util/errors.js";

/** Where a file's bytes come from. */
export type FileSource = { readonly bytes: Uint8Array } | { readonly hostPath: string };

/** One node of the guest tree. */
export type GuestNode =
  | { readonly kind: "directory"; readonly mode: number }
  | { readonly kind: "file"; readonly mode: number; readonly source: FileSource }
  | { readonly kind: "symlink"; readonly target: string }
  | { readonly kind: "char-device"; readonly mode: number; readonly major: number; readonly minor: number };

/** A node with its guest path (absolute, normalized). */
export interface GuestTreeEntry {
  readonly path: string;
  readonly node: GuestNode;
}

function normalize(path: string): string {
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  if (!path.startsWith("/") || parts.includes("..") || parts.length === 0 || path.includes("\0")) {
    throw new ConfigError(
      `Guest path "${path}" must be absolute, normalized and not the root directory`,
      "image.bad-guest-path",
    );
  }
  return `/${parts.join("/")}`;
}

/** Builder of a guest root file system. */
export class GuestTree {
  readonly #nodes = new Map<string, GuestNode>();

  /** Creates a directory and its missing parents (mode 0755 for parents). */
  directory(path: string, mode = 0o755): void {
    const normalized = normalize(path);
    this.#parents(normalized);
    const existing = this.#nodes.get(normalized);
    if (existing !== undefined && existing.kind !== "directory") {
      throw new ConfigError(
        `Guest path ${normalized} is already a ${existing.kind}, not a directory`,
        "image.guest-path-conflict",
      );
    }
    this.#nodes.set(normalized, { kind: "directory", mode });
  }

  /** Adds a file, replacing a file or symlink at the same path. */
  file(path: string, source: FileSource, mode = 0o644): void {
    this.#leaf(path, { kind: "file", mode, source });
  }

  /** Adds a symlink, replacing a file or symlink at the same path. */
  symlink(path: string, target: string): void {
    this.#leaf(path, { kind: "symlink", target });
  }

  /** Adds a character device node. */
  charDevice(path: string, mode: number, major: number, minor: number): void {
    this.#leaf(path, { kind: "char-device", mode, major, minor });
  }

  /** The node at a path, if any. */
  get(path: string): GuestNode | undefined {
    return this.#nodes.get(normalize(path));
  }

  /** Every node, sorted by path (parents before children). */
  entries(): GuestTreeEntry[] {
    return [...this.#nodes.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([path, node]) => ({ path, node }));
  }

  #leaf(path: string, node: GuestNode): void {
    const normalized = normalize(path);
    this.#parents(normalized);
    const existing = this.#nodes.get(normalized);
    if (existing?.kind === "directory") {
      throw new ConfigError(
        `Guest path ${normalized} is a directory; cannot put a ${node.kind} there`,
        "image.guest-path-conflict",
      );
    }
    this.#nodes.set(normalized, node);
  }

  #parents(path: string): void {
    const parts = path.split("/").slice(1, -1);
    let current = "";
    for (const part of parts) {
      current += `/${part}`;
      const existing = this.#nodes.get(current);
      if (existing === undefined) this.#nodes.set(current, { kind: "directory", mode: 0o755 });
      else if (existing.kind !== "directory") {
        throw new ConfigError(
          `Guest path ${current} is a ${existing.kind}, so ${path} cannot be created under it`,
          "image.guest-path-conflict",
        );
      }
    }
  }
}
