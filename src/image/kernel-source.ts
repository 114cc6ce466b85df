/**
 * Gets a kernel for the image: from a Debian package (resolved through apt, fetched with
 * `apt-get download` into the download cache, unpacked once with `dpkg-deb -x`) or from a
 * bzImage file the user names. The edge of the builder: all of it is I/O; the decisions
 * (which package a metapackage means, whether names are safe) are in `apt-record.ts`.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, open, readdir, rename, rm, stat, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError, HostError } from "../util/errors.js";
import { ProgressBar } from "../util/progress.js";
import {
  type AptPackage,
  aptPackageOf,
  debFileName,
  kernelPackageBehind,
  parseAptRecord,
} from "./apt-record.js";
import { BZIMAGE_PROBE_BYTES, bzImageRelease } from "./bzimage-version.js";
import { runCommand, stderrSummary } from "./host-command.js";

/** A kernel ready to be put in an image. */
export interface KernelTree {
  /** Host path of the bzImage. */
  readonly kernelPath: string;
  /** Its release (`uname -r`). */
  readonly release: string;
  /** `…/lib/modules/<release>` when the kernel has modules on this host. */
  readonly modulesDir: string | undefined;
  readonly origin: KernelOrigin;
}

/** Where the kernel came from, as the manifest records it. */
export type KernelOrigin =
  | {
      readonly kind: "package";
      /** The package asked for (`linux-image-cloud-amd64`). */
      readonly requested: string;
      /** The versioned package it resolved to. */
      readonly name: string;
      readonly version: string;
      /** SHA-256 of the .deb, from apt's lists (checked after download). */
      readonly sha256: string;
    }
  | { readonly kind: "file"; readonly path: string; readonly sha256: string };

/** How kernel fetching reports and where it keeps things. */
export interface FetchContext {
  readonly downloadsDir: string;
  /** Progress bar stream; the bar is drawn only when it is a terminal. */
  readonly progressStream: NodeJS.WriteStream;
  /** One line per step worth telling a person ("Downloading … (26.7 MB)"). */
  readonly onStatus: (line: string) => void;
  /** May run `apt-get update` when the lists are missing or stale (needs root). */
  readonly allowAptUpdate: boolean;
}

/** SHA-256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The candidate record apt has for a package, or undefined when apt knows no such package. */
async function aptShow(name: string): Promise<AptPackage | undefined> {
  const result = await runCommand("apt-cache", ["show", "--no-all-versions", name], { timeoutMs: 60_000 });
  const text = result.stdout.toString("utf8");
  if (result.code === 0 && text.includes("Package:")) return aptPackageOf(parseAptRecord(text));
  if (
    /No packages found|Unable to locate|purely virtual|has no installation candidate/.test(result.stderr) ||
    result.code === 100
  )
    return undefined;
  throw new HostError(`apt-cache show ${name} failed: ${stderrSummary(result.stderr)}`, "image.apt");
}

/**
 * A key that changes whenever apt's answer could: the package lists, preferences
 * (pinning) and dpkg's status, by name, size and mtime. `apt-cache` re-reads every list on
 * each call (~0.6 s idle, seconds on a busy machine, twice per resolution); with the key
 * unchanged, the last resolution stands.
 */
async function aptStateKey(): Promise<string> {
  const hash = createHash("sha256");
  const describe = async (path: string): Promise<void> => {
    const info = await stat(path).catch(() => undefined);
    hash.update(`${path}\0${info?.size ?? -1}\0${info?.mtimeMs ?? -1}\n`);
  };
  for (const dir of ["/var/lib/apt/lists", "/etc/apt/preferences.d", "/etc/apt/sources.list.d"]) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.sort())
      if (name !== "lock" && name !== "partial") await describe(join(dir, name));
  }
  for (const path of ["/etc/apt/preferences", "/etc/apt/sources.list", "/var/lib/dpkg/status"])
    await describe(path);
  return hash.digest("hex");
}

const RESOLUTIONS_FILE = "apt-resolutions.json";

interface Resolutions {
  key: string;
  packages: Record<string, AptPackage>;
}

async function readResolutions(downloads: string, key: string): Promise<Resolutions> {
  try {
    const parsed = JSON.parse(
      await readFile(join(downloads, RESOLUTIONS_FILE), "utf8"),
    ) as Partial<Resolutions>;
    if (parsed.key === key && typeof parsed.packages === "object") return { key, packages: parsed.packages };
  } catch {
    // Missing or unreadable: resolve again.
  }
  return { key, packages: {} };
}

/** The cached resolution of `requested`, if apt's state is unchanged and it is well-formed. */
function cachedResolution(resolutions: Resolutions, requested: string): AptPackage | undefined {
  const pkg = resolutions.packages[requested];
  if (pkg === undefined || typeof pkg.name !== "string" || typeof pkg.version !== "string") return undefined;
  try {
    // Re-check what apt would have: a plain .deb name, a sane size and digest.
    const record = new Map([
      ["Package", pkg.name],
      ["Version", pkg.version],
      ["Filename", pkg.filename],
      ["Size", String(pkg.sizeBytes)],
      ["SHA256", pkg.sha256],
    ]);
    const checked = aptPackageOf(record);
    debFileName(checked);
    return { ...checked, depends: pkg.depends };
  } catch {
    return undefined;
  }
}

/**
 * Follows metapackages down to the package holding the kernel (undefined if apt knows
 * none), remembering the answer in the download cache while apt's state is unchanged.
 */
async function resolveKernelPackage(requested: string, downloads: string): Promise<AptPackage | undefined> {
  const key = await aptStateKey();
  const resolutions = await readResolutions(downloads, key);
  const cached = cachedResolution(resolutions, requested);
  if (cached !== undefined) return cached;
  const pkg = await resolveKernelPackageWithApt(requested);
  if (pkg !== undefined) {
    resolutions.packages[requested] = pkg;
    await mkdir(downloads, { recursive: true });
    const temporary = join(downloads, `.${RESOLUTIONS_FILE}.${process.pid}`);
    await writeFile(temporary, JSON.stringify(resolutions));
    await rename(temporary, join(downloads, RESOLUTIONS_FILE));
  }
  return pkg;
}

async function resolveKernelPackageWithApt(requested: string): Promise<AptPackage | undefined> {
  let name = requested;
  for (let depth = 0; depth < 4; depth += 1) {
    const pkg = await aptShow(name);
    if (pkg === undefined) return undefined;
    const behind = kernelPackageBehind(pkg);
    if (behind === undefined) return pkg;
    name = behind;
  }
  throw new ConfigError(
    `Package ${requested} leads through more than 4 metapackages; name the versioned linux-image package`,
    "image.package-missing",
  );
}

class DownloadFailed extends Error {}

async function aptUpdate(context: FetchContext, why: string): Promise<void> {
  if (!context.allowAptUpdate) {
    throw new HostError(
      `${why}: check the name, or apt's package lists are missing or stale (run as root: apt-get update)`,
      "image.apt-lists",
    );
  }
  context.onStatus(`${why}; running apt-get update`);
  const result = await runCommand("apt-get", ["update"], { timeoutMs: 600_000 });
  if (result.code !== 0) {
    throw new HostError(`apt-get update failed: ${stderrSummary(result.stderr)}`, "image.apt-lists");
  }
}

/** Downloads `pkg` into the cache (unless a verified copy is there); returns its path. */
async function downloadPackage(pkg: AptPackage, context: FetchContext): Promise<string> {
  const target = join(context.downloadsDir, debFileName(pkg));
  if (
    (await exists(target)) &&
    (await stat(target)).size === pkg.sizeBytes &&
    (await sha256File(target)) === pkg.sha256
  ) {
    return target;
  }
  await mkdir(context.downloadsDir, { recursive: true });
  const workDir = await mkdtemp(join(context.downloadsDir, ".download-"));
  try {
    context.onStatus(`Downloading ${pkg.name} ${pkg.version} (${(pkg.sizeBytes / 1e6).toFixed(1)} MB)`);
    const bar = new ProgressBar(`Downloading ${pkg.name}`, pkg.sizeBytes, context.progressStream);
    const poll = setInterval(() => {
      void readdir(workDir, { recursive: true })
        .then(async (names) => {
          let done = 0;
          for (const name of names) done += (await stat(join(workDir, name)).catch(() => ({ size: 0 }))).size;
          bar.update(done);
        })
        .catch(() => undefined);
    }, 200);
    // As root apt drops to its _apt user to download, which cannot write into a cache
    // under /root: say so up front instead of letting it warn and fall back.
    const sandbox = process.getuid?.() === 0 ? ["-o", "APT::Sandbox::User=root"] : [];
    const result = await runCommand("apt-get", ["download", "-q", ...sandbox, `${pkg.name}=${pkg.version}`], {
      cwd: workDir,
      timeoutMs: 900_000,
    }).finally(() => {
      clearInterval(poll);
    });
    if (result.code !== 0)
      throw new DownloadFailed(
        stderrSummary(result.stderr) || `exit code ${result.code ?? result.signal ?? "?"}`,
      );
    bar.finish();
    const downloaded = join(workDir, debFileName(pkg));
    if (!(await exists(downloaded))) throw new DownloadFailed(`apt-get did not write ${debFileName(pkg)}`);
    const sha256 = await sha256File(downloaded);
    if (sha256 !== pkg.sha256) {
      throw new HostError(
        `Downloaded ${debFileName(pkg)} has SHA-256 ${sha256}, apt's lists say ${pkg.sha256}; run apt-get update and try again`,
        "image.apt-download",
      );
    }
    await rename(downloaded, target);
    return target;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/**
 * Unpacks a kernel .deb once into `<downloads>/<deb name>/` (kept: later builds reuse it)
 * and finds the bzImage and modules in it.
 */
async function unpackKernelPackage(
  debPath: string,
  pkg: AptPackage,
  context: FetchContext,
): Promise<{ kernelPath: string; release: string; modulesDir: string | undefined }> {
  const unpacked = debPath.replace(/\.deb$/, "");
  const marker = join(unpacked, ".palisade-unpacked");
  const complete = async (): Promise<boolean> =>
    (await readFile(marker, "utf8").catch(() => "")).trim() === pkg.sha256;
  if (!(await complete())) {
    context.onStatus(`Unpacking ${debFileName(pkg)}`);
    const workDir = await mkdtemp(join(context.downloadsDir, ".unpack-"));
    try {
      const result = await runCommand("dpkg-deb", ["-x", debPath, workDir], { timeoutMs: 600_000 });
      if (result.code !== 0)
        throw new HostError(`dpkg-deb -x ${debPath} failed: ${stderrSummary(result.stderr)}`, "image.unpack");
      await writeFile(join(workDir, ".palisade-unpacked"), `${pkg.sha256}\n`);
      // Another builder may have finished the same tree meanwhile: keep a complete one
      // (it may be reading from it), replace only a broken one.
      if (!(await complete())) {
        await rm(unpacked, { recursive: true, force: true });
        await rename(workDir, unpacked).catch(async (error: unknown) => {
          if (!(await complete())) throw error;
        });
      }
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  }
  const kernels = (await readdir(join(unpacked, "boot")).catch(() => [] as string[])).filter((name) =>
    name.startsWith("vmlinuz-"),
  );
  const kernelName = kernels[0];
  if (kernels.length !== 1 || kernelName === undefined) {
    throw new ConfigError(
      `Package ${pkg.name} holds ${kernels.length} kernels in /boot (expected one vmlinuz-*): is it a linux-image package?`,
      "image.not-a-kernel-package",
    );
  }
  const release = kernelName.slice("vmlinuz-".length);
  const modulesDir = join(unpacked, "lib", "modules", release);
  return {
    kernelPath: join(unpacked, "boot", kernelName),
    release,
    modulesDir: (await exists(modulesDir)) ? modulesDir : undefined,
  };
}

/**
 * Resolves `requested` through apt, downloads and unpacks it (cached). Runs
 * `apt-get update` once when apt does not know the package or the download fails, if
 * allowed.
 *
 * @throws {ConfigError} (`image.package-missing`) when apt does not have the package.
 * @throws {HostError} when apt cannot download it or its lists need an update it may not run.
 */
export async function kernelFromPackage(requested: string, context: FetchContext): Promise<KernelTree> {
  let updated = false;
  for (;;) {
    const pkg = await resolveKernelPackage(requested, context.downloadsDir);
    if (pkg === undefined) {
      if (!updated) {
        await aptUpdate(context, `apt knows no package ${requested}`);
        updated = true;
        continue;
      }
      throw new ConfigError(
        `Package ${requested} is not in apt's lists, even after apt-get update; check the name (apt-cache search linux-image)`,
        "image.package-missing",
      );
    }
    let debPath: string;
    try {
      debPath = await downloadPackage(pkg, context);
    } catch (error: unknown) {
      if (!(error instanceof DownloadFailed)) throw error;
      if (!updated && context.allowAptUpdate) {
        await aptUpdate(context, `apt-get download ${pkg.name} failed (${error.message})`);
        updated = true;
        continue;
      }
      throw new HostError(
        `apt-get download ${pkg.name}=${pkg.version} failed: ${error.message}. Check the network and apt's sources, then run apt-get update as root`,
        "image.apt-download",
      );
    }
    const tree = await unpackKernelPackage(debPath, pkg, context);
    return {
      ...tree,
      origin: { kind: "package", requested, name: pkg.name, version: pkg.version, sha256: pkg.sha256 },
    };
  }
}

/**
 * A bzImage given as a file. Its modules are those under `/lib/modules/<release>` on this
 * host, if any (a host kernel from /boot has them).
 *
 * @throws {ConfigError} (`image.bad-kernel`) when the file is missing, unreadable or not a bzImage.
 */
export async function kernelFromFile(path: string, hostModulesRoot = "/lib/modules"): Promise<KernelTree> {
  let head: Uint8Array;
  try {
    const handle = await open(path, "r");
    try {
      const buffer = new Uint8Array(BZIMAGE_PROBE_BYTES);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      head = buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (error: unknown) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "EACCES"
          ? "is not readable"
          : code === "EISDIR"
            ? "is a directory"
            : `cannot be read (${code ?? "?"})`;
    throw new ConfigError(`--kernel: ${path} ${why}`, "image.bad-kernel", { cause: error });
  }
  const release = bzImageRelease(head, path);
  const modulesDir = join(hostModulesRoot, release);
  return {
    kernelPath: path,
    release,
    modulesDir: (await exists(modulesDir)) ? modulesDir : undefined,
    origin: { kind: "file", path, sha256: await sha256File(path) },
  };
}
