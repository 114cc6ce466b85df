/**
 * Builds an out-of-tree kernel module for a guest image's kernel: Debian's headers for
 * that exact kernel (`linux-headers-RELEASE`, its `-common` part and `linux-kbuild-X.Y`,
 * pinned to the image's package version) are fetched with `apt-get download`, unpacked
 * with `dpkg-deb -x` into the cache (as the kernel itself is), and `make M=…` builds the
 * module with the compiler the kernel was built with (`gcc-12` for Debian 12's kernels).
 * The result is cached by the digest of the sources and the kernel.
 *
 * For test guests (hostile kernel behaviour): a module built here is unsigned and taints
 * the guest kernel, which loads it because Debian's kernels do not force signatures.
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, HostError } from "../util/errors.js";
import { runCommand, stderrSummary } from "./host-command.js";
import { byCodeUnits } from "../util/order.js";

/** What to build and for which kernel. */
export interface GuestModuleRequest {
  /** Directory holding the module's `Kbuild` (or `Makefile`) and C sources (no subdirectories). */
  readonly sourceDir: string;
  /** The module's name: `NAME.ko` is what the build must produce. */
  readonly name: string;
  /** The guest kernel's release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`. */
  readonly release: string;
  /** The Debian version of the kernel package, e.g. `6.1.192-2`; the headers are pinned to it. */
  readonly packageVersion: string;
  /** Palisade's cache root (`palisadeCacheDir`). */
  readonly cacheDir: string;
  readonly onStatus?: (line: string) => void;
}

/** A built module. */
export interface GuestModule {
  /** The `.ko`, inside the cache. */
  readonly modulePath: string;
  /** False when the cache already held it. */
  readonly rebuilt: boolean;
}

const RELEASE = /^(\d+)\.(\d+)\.\d+-(\d+)-([a-z0-9-]+)$/;
const PACKAGE_VERSION = /^[0-9][A-Za-z0-9.+~-]*$/;
const MODULE_NAME = /^[A-Za-z0-9_]+$/;

/**
 * The Debian packages that hold the headers and build scripts of kernel `release`
 * (`6.1.0-56-cloud-amd64` → `linux-headers-6.1.0-56-cloud-amd64`,
 * `linux-headers-6.1.0-56-common`, `linux-kbuild-6.1`), each pinned to `packageVersion`.
 * @throws {ConfigError} (`image.bad-kernel-release`) for a release or version not in Debian's form.
 */
export function headerPackages(release: string, packageVersion: string): { flavour: string; common: string; kbuild: string; pinned: string[] } {
  const match = RELEASE.exec(release);
  if (match === null || !PACKAGE_VERSION.test(packageVersion)) {
    throw new ConfigError(
      `Kernel ${release} (package version ${packageVersion}) is not a Debian kernel release such as 6.1.0-56-cloud-amd64; its headers cannot be found`,
      "image.bad-kernel-release",
    );
  }
  const [, major, minor, abi] = match;
  const flavour = `linux-headers-${release}`;
  const common = `linux-headers-${String(major)}.${String(minor)}.0-${String(abi)}-common`;
  const kbuild = `linux-kbuild-${String(major)}.${String(minor)}`;
  return { flavour, common, kbuild, pinned: [flavour, common, kbuild].map((name) => `${name}=${packageVersion}`) };
}

/**
 * Debian's flavour Makefile includes the common headers by their absolute path under
 * `/usr/src`; unpacked elsewhere, the include must point into the unpacked tree.
 */
export function relocateHeadersMakefile(text: string, unpackedRoot: string): string {
  return text.replace(/^include \/usr\/src\//m, `include ${unpackedRoot}/usr/src/`);
}

/** The cache key of a build: the module's sources, the kernel and the compiler. */
export function moduleDigest(sources: readonly { name: string; bytes: Buffer }[], release: string, packageVersion: string, compiler: string): string {
  const hash = createHash("sha256").update(JSON.stringify([release, packageVersion, compiler]));
  for (const source of [...sources].sort((a, b) => byCodeUnits(a.name, b.name))) {
    hash.update(`\0${source.name}\0${String(source.bytes.length)}\0`).update(source.bytes);
  }
  return hash.digest("hex");
}

async function mustRun(file: string, args: readonly string[], what: string, options: { cwd?: string; timeoutMs?: number } = {}): Promise<string> {
  const result = await runCommand(file, args, { timeoutMs: options.timeoutMs ?? 300_000, ...(options.cwd === undefined ? {} : { cwd: options.cwd }) });
  if (result.code !== 0) {
    throw new HostError(`${what} failed (${file} exited ${String(result.code ?? result.signal)}): ${stderrSummary(result.stderr + result.stdout.toString("utf8"), 3)}`, "host.guest-module");
  }
  return result.stdout.toString("utf8");
}

/** Fetches and unpacks the kernel's headers once; returns the flavour's header directory. */
async function ensureHeaders(request: GuestModuleRequest): Promise<string> {
  const packages = headerPackages(request.release, request.packageVersion);
  const root = join(request.cacheDir, "guest-modules", `headers-${request.release}_${request.packageVersion}`);
  const headers = join(root, "tree", "usr", "src", packages.flavour);
  if (existsSync(join(root, "complete"))) return headers;
  rmSync(root, { recursive: true, force: true });
  const debs = join(root, "debs");
  mkdirSync(debs, { recursive: true });
  request.onStatus?.(`Fetching ${packages.pinned.join(", ")}`);
  await mustRun("apt-get", ["download", ...packages.pinned], `Downloading the headers of kernel ${request.release}`, { cwd: debs });
  for (const deb of readdirSync(debs).filter((file) => file.endsWith(".deb"))) {
    await mustRun("dpkg-deb", ["-x", join(debs, deb), join(root, "tree")], `Unpacking ${deb}`);
  }
  const makefile = join(headers, "Makefile");
  if (!existsSync(makefile)) throw new HostError(`${packages.flavour} holds no Makefile at ${makefile}`, "host.guest-module");
  writeFileSync(makefile, relocateHeadersMakefile(readFileSync(makefile, "utf8"), join(root, "tree")));
  rmSync(debs, { recursive: true, force: true });
  writeFileSync(join(root, "complete"), `${packages.pinned.join("\n")}\n`);
  return headers;
}

/**
 * Builds module `name` from `sourceDir` for the guest kernel, or finds it in the cache.
 * @throws {ConfigError} for a bad name or release; {HostError} when apt, dpkg-deb, make or
 *   the compiler fail (their last lines quoted).
 */
export async function buildGuestModule(request: GuestModuleRequest): Promise<GuestModule> {
  if (!MODULE_NAME.test(request.name)) throw new ConfigError(`Module name "${request.name}": letters, digits and _ only`, "image.bad-module");
  const files = readdirSync(request.sourceDir, { withFileTypes: true }).filter((entry) => entry.isFile());
  const sources = files.map((entry) => ({ name: entry.name, bytes: readFileSync(join(request.sourceDir, entry.name)) }));
  const compiler = (await mustRun("gcc", ["--version"], "Asking gcc its version")).split("\n")[0] ?? "";
  const digest = moduleDigest(sources, request.release, request.packageVersion, compiler);
  const outDir = join(request.cacheDir, "guest-modules", "built", digest.slice(0, 32));
  const modulePath = join(outDir, `${request.name}.ko`);
  if (existsSync(modulePath)) return { modulePath, rebuilt: false };
  const headers = await ensureHeaders(request);
  const work = `${outDir}.build-${String(process.pid)}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    for (const source of sources) writeFileSync(join(work, source.name), source.bytes);
    request.onStatus?.(`Building ${request.name}.ko for ${request.release}`);
    await mustRun("make", ["-C", headers, `M=${work}`, "modules"], `Building ${request.name}.ko`);
    const built = join(work, `${request.name}.ko`);
    if (!existsSync(built)) throw new HostError(`make built no ${request.name}.ko in ${work}`, "host.guest-module");
    mkdirSync(`${outDir}.tmp`, { recursive: true });
    copyFileSync(built, join(`${outDir}.tmp`, `${request.name}.ko`));
    rmSync(outDir, { recursive: true, force: true });
    renameSync(`${outDir}.tmp`, outDir);
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(`${outDir}.tmp`, { recursive: true, force: true });
  }
  return { modulePath, rebuilt: true };
}
