/**
 * `palisade image build [--out DIR] [--kernel FILE | --kernel-package NAME] [--modules LIST]
 * [--add HOST:GUEST]… [--add-binary PATH]… [--force] [--json]`: builds a guest image
 * (bzImage + our initramfs) into the cache, or into DIR.
 */
import type { Command } from "commander";
import { buildImage, parseImageBuildFlags, type BuiltImage } from "../image/index.js";

interface ImageBuildCliFlags {
  out?: string;
  kernel?: string;
  kernelPackage?: string;
  modules?: string;
  add: string[];
  addBinary: string[];
  force?: boolean;
  json?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function describe(image: BuiltImage): string {
  const { manifest } = image;
  const kernelFrom =
    manifest.kernel.package !== undefined
      ? `${manifest.kernel.package} ${manifest.kernel.packageVersion ?? ""}`.trim()
      : manifest.kernel.requested;
  const lines = [
    `${image.rebuilt ? "Built" : "Up to date:"} ${image.outDir}`,
    `  kernel   ${image.kernelPath}  ${manifest.kernel.release} (${kernelFrom}), ${megabytes(manifest.outputs.kernel.sizeBytes)}`,
    `  initrd   ${image.initrdPath}  ${megabytes(manifest.outputs.initrd.sizeBytes)} (${megabytes(manifest.initrd.uncompressedBytes)} unpacked, ${manifest.files.entries} entries)`,
    `  modules  ${manifest.modules.loadOrder.map((module) => module.name).join(" ") || "none"}`,
    `           drivers loaded when the VM has their device: ${manifest.modules.deviceDrivers.join(" ") || "none"}`,
    `           loaded at every boot: ${manifest.modules.loadedAtBoot.join(" ") || "none"}`,
  ];
  if (manifest.modules.skipped.length > 0)
    lines.push(`  skipped  ${manifest.modules.skipped.join(" ")} (not in this kernel)`);
  for (const added of manifest.files.added) lines.push(`  added    ${added.host} -> ${added.guest}`);
  for (const binary of manifest.files.binaries)
    lines.push(`  binary   ${binary.path} (+${binary.libraries.length} libraries)`);
  return `${lines.join("\n")}\n`;
}

/** Registers `image build`. */
export function registerImageCommands(program: Command): void {
  const image = program.command("image").description("Guest images: the kernel and initramfs Palisade boots");
  image
    .command("build")
    .description(
      "Build a guest image: Debian's cloud kernel (apt-get download), busybox-static, virtio modules and Palisade's /init, " +
        "cached under $XDG_CACHE_HOME/palisade (or ~/.cache/palisade); rebuilt only when an input changes",
    )
    .option(
      "--out <dir>",
      "image directory (default: <cache>/images/default, the image `palisade run` and `npm start` boot)",
    )
    .option(
      "--kernel <file>",
      "use this bzImage; its modules come from /lib/modules/<release> if the host has them",
    )
    .option(
      "--kernel-package <name>",
      "Debian kernel package or metapackage (default: linux-image-cloud-amd64)",
    )
    .option(
      "--modules <list>",
      'modules to load, comma-separated; "default" stands for the default set (e.g. default,xfs)',
    )
    .option("--add <host:guest>", "copy a host file or directory into the guest (repeatable)", collect, [])
    .option(
      "--add-binary <path>",
      "copy a binary and the shared libraries ldd finds for it (repeatable)",
      collect,
      [],
    )
    .option("--force", "build even if the image is up to date")
    .option("--json", "print what was built as JSON")
    .action(async (flags: ImageBuildCliFlags) => {
      const request = parseImageBuildFlags(flags, process.cwd());
      const built = await buildImage({
        ...(flags.out !== undefined ? { outDir: flags.out } : {}),
        kernel: request.kernel,
        ...(flags.modules !== undefined ? { modules: request.modules } : {}),
        add: request.add,
        addBinaries: request.addBinaries,
        force: flags.force === true,
        onStatus: (line) => process.stderr.write(`${line}\n`),
      });
      if (flags.json === true) {
        const { manifest, ...paths } = built;
        process.stdout.write(`${JSON.stringify({ ...paths, manifest }, null, 2)}\n`);
      } else {
        process.stdout.write(describe(built));
      }
    });
}
