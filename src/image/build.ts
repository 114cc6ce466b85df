/**
 * `buildImage()`: puts a guest together (kernel, busybox, modules, `/init`, user files),
 * packs the initramfs with our own cpio writer and gzip, and writes `vmlinuz`,
 * `initrd.img` and `manifest.json` into the image directory — unless that directory
 * already holds an image of the same inputs. `ensureDefaultImage()` is the cheap check
 * `npm start` and the tests make before booting.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { finished } from "node:stream/promises";
import { createGzip, constants as zlibConstants } from "node:zlib";
import { ConfigError, HostError } from "../util/errors.js";
import { ProgressBar } from "../util/progress.js";
import { VERSION } from "../util/version.js";
import { defaultImageDir, downloadsDir, palisadeCacheDir } from "./cache-paths.js";
import type { CpioEntry } from "./initramfs/cpio-format.js";
import { cpioTrailer, encodeCpioEntry } from "./initramfs/cpio-writer.js";
import { GuestTree } from "./initramfs/guest-tree.js";
import { GUEST_DIRECTORIES, guestSystemFiles, moduleListFile } from "./guest-files.js";
import { type AddedEntry, type BinaryInput, readAddedPath, readBinary } from "./guest-inputs.js";
import { runCommand } from "./host-command.js";
import { type KernelTree, kernelFromFile, kernelFromPackage, sha256File } from "./kernel-source.js";
import { type ModuleSelection, guestModulePath, selectModules } from "./kernel-modules.js";
import { type ModuleInfo, formatModulesAlias, isDeviceDriver, modulesLoadedAtBoot } from "./module-aliases.js";
import { readModinfo } from "./modinfo.js";
import { BUILDER_VERSION, type ImageManifest, readManifest } from "./manifest.js";
import { extractPvhVmlinux } from "./vmlinux.js";
import { checkKernelFile } from "../engine/kernel-image.js";
import { formatModulesDep } from "./modules-dep.js";
import { type AddedPath, DEFAULT_KERNEL_PACKAGE, DEFAULT_MODULES, type KernelSource } from "./options.js";

/** File names inside an image directory. */
export const IMAGE_FILES = {
  kernel: "vmlinuz",
  pvhKernel: "vmlinux",
  initrd: "initrd.img",
  manifest: "manifest.json",
} as const;

/** Where busybox-static installs busybox. */
export const DEFAULT_BUSYBOX_PATH = "/bin/busybox";

/** gzip level of the initramfs: 9 is ~2% smaller than 6 and costs ~0.1 s more to build. */
const GZIP_LEVEL = 9;

/** What to build. Every field is optional: `buildImage({})` builds the default image. */
export interface BuildImageOptions {
  /** Image directory; default `<cache>/images/default`. */
  readonly outDir?: string;
  /** Cache root; default `$XDG_CACHE_HOME/palisade` or `~/.cache/palisade`. */
  readonly cacheDir?: string;
  /** Default: the `linux-image-cloud-amd64` package. */
  readonly kernel?: KernelSource;
  /** Modules to load, by name; default {@link DEFAULT_MODULES}. Given explicitly, a missing one is an error. */
  readonly modules?: readonly string[];
  readonly add?: readonly AddedPath[];
  readonly addBinaries?: readonly string[];
  /** Build even when the directory holds an image of the same inputs. */
  readonly force?: boolean;
  /** Where the progress bar goes (drawn only on a terminal); default stderr. */
  readonly progressStream?: NodeJS.WriteStream;
  /** Called with one line per step worth telling a person; default: nothing. */
  readonly onStatus?: (line: string) => void;
  readonly busyboxPath?: string;
  /** May run `apt-get update` when apt's lists are missing or stale; default: when root. */
  readonly allowAptUpdate?: boolean;
}

/** An image ready to boot. */
export interface BuiltImage {
  readonly outDir: string;
  /** What to boot (QEMU `-kernel`): the PVH vmlinux when the image has one, else the bzImage. */
  readonly kernelPath: string;
  /** The bzImage, as the kernel package shipped it. */
  readonly bzImagePath: string;
  /** The gzip'd newc initramfs: QEMU `-initrd`. */
  readonly initrdPath: string;
  /** `uname -r` in the guest. */
  readonly kernelVersion: string;
  readonly manifestPath: string;
  readonly manifest: ImageManifest;
  /** False when an image of the same inputs was already there. */
  readonly rebuilt: boolean;
}

function sha256Text(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Digest of the guest system files Palisade generates (changes when `/init` does). */
export function systemDigest(): string {
  return sha256Text(JSON.stringify(guestSystemFiles()));
}

function kernelSourceLabel(source: KernelSource): string {
  return source.kind === "package" ? source.name : source.path;
}

function builtImage(outDir: string, manifest: ImageManifest, rebuilt: boolean): BuiltImage {
  return {
    outDir,
    kernelPath: join(outDir, manifest.outputs.pvhKernel?.file ?? IMAGE_FILES.kernel),
    bzImagePath: join(outDir, IMAGE_FILES.kernel),
    initrdPath: join(outDir, IMAGE_FILES.initrd),
    kernelVersion: manifest.kernel.release,
    manifestPath: join(outDir, IMAGE_FILES.manifest),
    manifest,
    rebuilt,
  };
}

/** The manifest of `outDir` if its outputs are there with the sizes and digests it records. */
async function verifiedManifest(outDir: string): Promise<ImageManifest | undefined> {
  const manifest = await readManifest(join(outDir, IMAGE_FILES.manifest));
  if (manifest === undefined) return undefined;
  for (const output of [manifest.outputs.kernel, manifest.outputs.initrd]) {
    const path = join(outDir, output.file);
    const info = await stat(path).catch(() => undefined);
    if (info?.size !== output.sizeBytes || (await sha256File(path)) !== output.sha256) return undefined;
  }
  // The vmlinux is derived from the verified bzImage and is ~50 MB: hashing it would cost
  // every `npm start` ~0.1 s, so its size and its PVH note are what is checked here.
  const pvh = manifest.outputs.pvhKernel;
  if (pvh !== undefined) {
    const path = join(outDir, pvh.file);
    const info = await stat(path).catch(() => undefined);
    if (info?.size !== pvh.sizeBytes) return undefined;
    if ((await checkKernelFile(path).catch(() => undefined))?.format !== "pvh-elf") return undefined;
  }
  return manifest;
}

interface PackResult {
  readonly uncompressedBytes: number;
  readonly entries: number;
  /** Every regular file packed, with its size and SHA-256. */
  readonly files: { path: string; sizeBytes: number; sha256: string }[];
}

async function entryOf(
  path: string,
  node: ReturnType<GuestTree["entries"]>[number]["node"],
): Promise<CpioEntry> {
  switch (node.kind) {
    case "directory":
      return { kind: "directory", path, mode: node.mode };
    case "symlink":
      return { kind: "symlink", path, target: node.target };
    case "char-device":
      return { kind: "char-device", path, mode: node.mode, major: node.major, minor: node.minor };
    case "file": {
      const data = "bytes" in node.source ? node.source.bytes : await readFile(node.source.hostPath);
      return { kind: "file", path, mode: node.mode, data };
    }
  }
}

/** Writes the tree as a gzip'd newc archive to `path`, drawing progress by bytes packed. */
async function packInitramfs(
  tree: GuestTree,
  path: string,
  progressStream: NodeJS.WriteStream,
): Promise<PackResult> {
  const entries = tree.entries();
  let totalBytes = 0;
  for (const { node } of entries) {
    if (node.kind === "file")
      totalBytes +=
        "bytes" in node.source ? node.source.bytes.length : (await stat(node.source.hostPath)).size;
  }
  const bar = new ProgressBar("Packing initramfs", totalBytes, progressStream);
  const gzip = createGzip({ level: GZIP_LEVEL, strategy: zlibConstants.Z_DEFAULT_STRATEGY });
  const output = createWriteStream(path, { mode: 0o644 });
  gzip.pipe(output);
  const done = finished(output);
  let uncompressedBytes = 0;
  let packedFileBytes = 0;
  const files: PackResult["files"] = [];
  const write = async (chunks: Uint8Array[]): Promise<void> => {
    for (const chunk of chunks) {
      uncompressedBytes += chunk.length;
      if (!gzip.write(chunk)) await once(gzip, "drain");
    }
  };
  try {
    let ino = 1;
    for (const { path: guestPath, node } of entries) {
      const entry = await entryOf(guestPath, node);
      await write(encodeCpioEntry(entry, ino));
      ino += 1;
      if (entry.kind === "file") {
        packedFileBytes += entry.data.length;
        bar.update(packedFileBytes);
        files.push({
          path: guestPath,
          sizeBytes: entry.data.length,
          sha256: createHash("sha256").update(entry.data).digest("hex"),
        });
      }
    }
    await write(cpioTrailer());
    gzip.end();
    await done;
  } catch (error: unknown) {
    gzip.destroy();
    output.destroy();
    throw error;
  }
  bar.finish();
  return { uncompressedBytes, entries: entries.length, files };
}

/** Each selected module's `.modinfo`, in load order. */
function moduleInfoOf(modules: ModuleSelection): ModuleInfo[] {
  return modules.loadOrder.map((entry) => {
    const bytes = modules.bytes.get(entry.path);
    return { name: entry.name, modinfo: bytes === undefined ? [] : readModinfo(bytes) };
  });
}

/** busybox's applets with their install paths (`bin/sh`, `sbin/insmod`, …). */
async function busyboxApplets(busyboxPath: string): Promise<string[]> {
  const result = await runCommand(busyboxPath, ["--list-full"], { timeoutMs: 30_000 });
  if (result.code !== 0)
    throw new HostError(
      `${busyboxPath} --list-full failed; is it busybox? Install it with: apt-get install busybox-static`,
      "image.busybox",
    );
  return result.stdout
    .toString("utf8")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.includes("/") && !line.startsWith("/") && !line.split("/").includes(".."));
}

async function readBusybox(path: string): Promise<BinaryInput> {
  try {
    return await readBinary(path, "busybox");
  } catch (error: unknown) {
    if (error instanceof ConfigError) {
      throw new HostError(
        `busybox is missing at ${path}; install it with: apt-get install busybox-static`,
        "image.busybox",
        { cause: error },
      );
    }
    throw error;
  }
}

function addBinaryToTree(tree: GuestTree, binary: BinaryInput, guestPath = binary.path): void {
  tree.file(guestPath, { hostPath: binary.path }, binary.mode);
  for (const library of binary.libraries) tree.file(library.path, { hostPath: library.path }, 0o755);
}

function addEntryToTree(tree: GuestTree, entry: AddedEntry): void {
  switch (entry.kind) {
    case "directory":
      tree.directory(entry.guestPath, entry.mode);
      return;
    case "file":
      tree.file(entry.guestPath, { hostPath: entry.hostPath }, entry.mode);
      return;
    case "symlink":
      tree.symlink(entry.guestPath, entry.target);
      return;
  }
}

/**
 * Builds an image into `outDir`, or returns the one there when its inputs are the same
 * (kernel package version or file digest, modules, busybox, added files and binaries,
 * the generated `/init`) and its outputs match their recorded digests.
 *
 * @throws {ConfigError} on bad input: a missing `--add` path or binary, an unknown
 *   module or package, a file that is not a bzImage.
 * @throws {HostError} when the host cannot do it: apt, dpkg-deb or busybox missing, a
 *   download failing, apt's lists stale without root to update them.
 */
export async function buildImage(options: BuildImageOptions = {}): Promise<BuiltImage> {
  const cacheDir = options.cacheDir ?? palisadeCacheDir(process.env, homedir());
  const outDir = options.outDir ?? defaultImageDir(cacheDir);
  const onStatus = options.onStatus ?? ((): void => undefined);
  const progressStream = options.progressStream ?? process.stderr;
  const kernelSource = options.kernel ?? { kind: "package", name: DEFAULT_KERNEL_PACKAGE };
  const modulesExplicit = options.modules !== undefined;
  const wantedModules = [...(options.modules ?? DEFAULT_MODULES)];

  // Inputs first: their digest decides whether there is anything to do.
  const busybox = await readBusybox(options.busyboxPath ?? DEFAULT_BUSYBOX_PATH);
  const added: AddedEntry[][] = [];
  for (const add of options.add ?? []) added.push(await readAddedPath(add));
  const binaries: BinaryInput[] = [];
  for (const path of options.addBinaries ?? []) binaries.push(await readBinary(path, `--add-binary ${path}`));
  const kernel: KernelTree =
    kernelSource.kind === "file"
      ? await kernelFromFile(kernelSource.path)
      : await kernelFromPackage(kernelSource.name, {
          downloadsDir: downloadsDir(cacheDir),
          progressStream,
          onStatus,
          allowAptUpdate: options.allowAptUpdate ?? process.getuid?.() === 0,
        });
  const system = systemDigest();
  const inputsDigest = sha256Text(
    JSON.stringify({
      builderVersion: BUILDER_VERSION,
      system,
      gzipLevel: GZIP_LEVEL,
      kernel: kernel.origin,
      modules: { wanted: wantedModules, explicit: modulesExplicit },
      busybox,
      added,
      binaries,
    }),
  );
  if (options.force !== true) {
    const existing = await verifiedManifest(outDir);
    if (existing?.inputsDigest === inputsDigest) {
      onStatus(`Image in ${outDir} is up to date (kernel ${existing.kernel.release})`);
      return builtImage(outDir, existing, false);
    }
  }

  onStatus(`Building image in ${outDir} (kernel ${kernel.release})`);
  const modules = await selectModules(kernel.modulesDir, kernel.release, wantedModules, modulesExplicit);
  if (modules.skipped.length > 0)
    onStatus(`Kernel ${kernel.release} lacks modules ${modules.skipped.join(", ")}; left out`);

  const tree = new GuestTree();
  for (const directory of GUEST_DIRECTORIES) tree.directory(directory.path, directory.mode);
  tree.charDevice("/dev/console", 0o600, 5, 1);
  tree.symlink("/var/run", "/run");
  addBinaryToTree(tree, busybox, "/bin/busybox");
  const applets = await busyboxApplets(busybox.path);
  // The list names busybox itself (bin/busybox) on Debian: keep the binary there.
  for (const applet of applets) if (applet !== "bin/busybox") tree.symlink(`/${applet}`, "/bin/busybox");
  const guestModules = modules.loadOrder.map((entry) => guestModulePath(kernel.release, entry.path));
  modules.loadOrder.forEach((entry, index) => {
    const bytes = modules.bytes.get(entry.path);
    const guestPath = guestModules[index];
    if (bytes !== undefined && guestPath !== undefined) tree.file(guestPath, { bytes }, 0o644);
  });
  const guestRelative = (path: string): string => path.replace(/\.ko\.(xz|zst|gz)$/, ".ko");
  tree.file(
    `/lib/modules/${kernel.release}/modules.dep`,
    {
      bytes: new TextEncoder().encode(
        formatModulesDep(
          modules.loadOrder.map((entry) => ({
            ...entry,
            path: guestRelative(entry.path),
            dependencies: entry.dependencies.map(guestRelative),
          })),
        ),
      ),
    },
    0o644,
  );
  const moduleInfo = moduleInfoOf(modules);
  tree.file(
    `/lib/modules/${kernel.release}/modules.alias`,
    { bytes: new TextEncoder().encode(formatModulesAlias(moduleInfo)) },
    0o644,
  );
  const atBoot = modulesLoadedAtBoot(wantedModules, moduleInfo);
  for (const file of [...guestSystemFiles(), moduleListFile(atBoot)]) {
    tree.file(file.path, { bytes: new TextEncoder().encode(file.text) }, file.mode);
  }
  for (const binary of binaries) addBinaryToTree(tree, binary);
  for (const entries of added) for (const entry of entries) addEntryToTree(tree, entry);

  await mkdir(outDir, { recursive: true }).catch((error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code ?? "?";
    throw new ConfigError(
      `Image directory ${outDir} cannot be created (${code}); choose another --out`,
      "image.out-dir",
      {
        cause: error,
      },
    );
  });
  const suffix = `.tmp-${process.pid}`;
  const initrdTemp = join(outDir, `${IMAGE_FILES.initrd}${suffix}`);
  const kernelTemp = join(outDir, `${IMAGE_FILES.kernel}${suffix}`);
  const pvhTemp = join(outDir, `${IMAGE_FILES.pvhKernel}${suffix}`);
  const manifestTemp = join(outDir, `${IMAGE_FILES.manifest}${suffix}`);
  try {
    const packed = await packInitramfs(tree, initrdTemp, progressStream);
    await copyFile(kernel.kernelPath, kernelTemp);
    const [kernelStat, initrdStat] = [await stat(kernelTemp), await stat(initrdTemp)];
    const kernelSha256 = await sha256File(kernelTemp);
    const pvh = await extractPvhVmlinux(kernelTemp, pvhTemp);
    if (pvh !== true) onStatus(`Booting the bzImage: no vmlinux for PVH boot (${pvh})`);
    const pvhStat = pvh === true ? await stat(pvhTemp) : undefined;
    const manifest: ImageManifest = {
      format: 1,
      builderVersion: BUILDER_VERSION,
      palisadeVersion: VERSION,
      builtAt: new Date().toISOString(),
      inputsDigest,
      systemDigest: system,
      kernel: {
        release: kernel.release,
        source: kernel.origin.kind,
        requested: kernelSourceLabel(kernelSource),
        ...(kernel.origin.kind === "package"
          ? { package: kernel.origin.name, packageVersion: kernel.origin.version }
          : {}),
        sha256: kernelSha256,
      },
      modules: {
        requested: wantedModules,
        loadOrder: modules.loadOrder.map((entry) => ({ name: entry.name, path: guestRelative(entry.path) })),
        loadedAtBoot: atBoot,
        deviceDrivers: moduleInfo.filter(isDeviceDriver).map((module) => module.name),
        skipped: [...modules.skipped],
      },
      busybox: { path: busybox.path, sha256: busybox.sha256, applets: applets.length },
      files: {
        added: (options.add ?? []).map((add) => ({ host: add.hostPath, guest: add.guestPath })),
        binaries: binaries.map((binary) => ({
          path: binary.path,
          libraries: binary.libraries.map((library) => library.path),
        })),
        entries: packed.entries,
        regular: packed.files,
      },
      initrd: { format: "newc+gzip", uncompressedBytes: packed.uncompressedBytes },
      outputs: {
        kernel: { file: IMAGE_FILES.kernel, sizeBytes: kernelStat.size, sha256: kernelSha256 },
        initrd: {
          file: IMAGE_FILES.initrd,
          sizeBytes: initrdStat.size,
          sha256: await sha256File(initrdTemp),
        },
        ...(pvhStat === undefined
          ? {}
          : {
              pvhKernel: {
                file: IMAGE_FILES.pvhKernel,
                sizeBytes: pvhStat.size,
                sha256: await sha256File(pvhTemp),
              },
            }),
      },
    };
    await writeFile(manifestTemp, `${JSON.stringify(manifest, null, 2)}\n`);
    // Each rename is atomic: a reader sees the old file or the new one, never half of
    // one; the manifest goes last and is checked against the outputs when read.
    await rename(kernelTemp, join(outDir, IMAGE_FILES.kernel));
    if (pvhStat !== undefined) await rename(pvhTemp, join(outDir, IMAGE_FILES.pvhKernel));
    else await rm(join(outDir, IMAGE_FILES.pvhKernel), { force: true });
    await rename(initrdTemp, join(outDir, IMAGE_FILES.initrd));
    await rename(manifestTemp, join(outDir, IMAGE_FILES.manifest));
    onStatus(
      `Built ${join(outDir, IMAGE_FILES.initrd)} (${(initrdStat.size / 1e6).toFixed(1)} MB, ${packed.entries} entries)`,
    );
    return builtImage(outDir, manifest, true);
  } finally {
    await Promise.all(
      [initrdTemp, kernelTemp, pvhTemp, manifestTemp].map((path) => rm(path, { force: true })),
    );
  }
}

/**
 * The default image, built first if the cache has none (or a broken one, or one from an
 * older builder). Cheap when it is there: no apt query, just the manifest and the
 * outputs' digests; so a newer kernel package is picked up by `palisade image build`,
 * not here. An image the user rebuilt into the default directory with extra files or
 * modules is kept.
 *
 * @throws what {@link buildImage} throws.
 */
export async function ensureDefaultImage(
  options: Pick<BuildImageOptions, "cacheDir" | "progressStream" | "onStatus"> = {},
): Promise<BuiltImage> {
  const cacheDir = options.cacheDir ?? palisadeCacheDir(process.env, homedir());
  const outDir = defaultImageDir(cacheDir);
  const existing = await verifiedManifest(outDir);
  if (existing?.builderVersion === BUILDER_VERSION && existing.systemDigest === systemDigest()) {
    return builtImage(outDir, existing, false);
  }
  options.onStatus?.(
    existing === undefined
      ? "No default guest image yet; building it"
      : "The default guest image is from an older builder; rebuilding it",
  );
  return buildImage({ ...options, cacheDir, outDir });
}
