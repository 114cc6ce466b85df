/**
 * `manifest.json` of a built image: what went in (kernel, modules, files), what came out
 * (sizes and SHA-256 of `vmlinuz` and `initrd.img`), and the digest of the inputs that
 * decides whether a build can be skipped. Read back with a schema: the file sits in a
 * user-writable cache.
 */
import { readFile } from "node:fs/promises";
import * as z from "zod";

/**
 * Version of the builder's output: bump it when the image layout or `/init` contract
 * changes in a way a digest of the generated files would not show.
 */
export const BUILDER_VERSION = 4;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);

const outputSchema = z.object({
  file: z.string().regex(/^[A-Za-z0-9._-]+$/),
  sizeBytes: z.number().int().nonnegative(),
  sha256,
});

/** The manifest's schema (format 1). */
export const manifestSchema = z.object({
  format: z.literal(1),
  builderVersion: z.number().int(),
  palisadeVersion: z.string(),
  builtAt: z.string(),
  /** SHA-256 of the canonical JSON of every input; equal digest means an equal image. */
  inputsDigest: sha256,
  /** Digest of the generated guest system files (`/init`, `/etc/...`). */
  systemDigest: sha256,
  kernel: z.object({
    release: z.string(),
    source: z.enum(["package", "file"]),
    requested: z.string(),
    package: z.string().optional(),
    packageVersion: z.string().optional(),
    sha256,
  }),
  modules: z.object({
    requested: z.array(z.string()),
    loadOrder: z.array(z.object({ name: z.string(), path: z.string() })),
    /** Loaded by `/init` at every boot; the others only with a device they drive, or as a dependency. */
    loadedAtBoot: z.array(z.string()),
    /** Modules with a device alias: `/init` loads them when the VM has such a device (coldplug). */
    deviceDrivers: z.array(z.string()),
    skipped: z.array(z.string()),
  }),
  busybox: z.object({ path: z.string(), sha256, applets: z.number().int() }),
  files: z.object({
    added: z.array(z.object({ host: z.string(), guest: z.string() })),
    binaries: z.array(z.object({ path: z.string(), libraries: z.array(z.string()) })),
    entries: z.number().int(),
    /** Every regular file in the initramfs (symlinks and directories left out). */
    regular: z.array(z.object({ path: z.string(), sizeBytes: z.number().int().nonnegative(), sha256 })),
  }),
  initrd: z.object({ format: z.literal("newc+gzip"), uncompressedBytes: z.number().int() }),
  outputs: z.object({
    kernel: outputSchema,
    initrd: outputSchema,
    /** The bzImage's vmlinux, booted through its PVH entry (no self-decompression); absent when the kernel has none. */
    pvhKernel: outputSchema.optional(),
  }),
});

/** A parsed manifest. */
export type ImageManifest = z.infer<typeof manifestSchema>;

/** The manifest at `path`, or undefined when it is missing, unreadable or malformed. */
export async function readManifest(path: string): Promise<ImageManifest | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const parsed = manifestSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
