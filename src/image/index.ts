/**
 * Guest images: the default Palisade guest (Debian's cloud kernel, busybox, the virtio
 * modules, our `/init`) built into a cached directory, and the pieces to build others.
 * The guest's contract (ready marker, console shell, power-off) is
 * `docs/design/guest-image.md`.
 */
export {
  buildImage,
  ensureDefaultImage,
  IMAGE_FILES,
  type BuildImageOptions,
  type BuiltImage,
} from "./build.js";
export { DEFAULT_GUEST_APPEND, READY_MARKER, SHELL_PROMPT } from "./guest-files.js";
export { BUILDER_VERSION, type ImageManifest } from "./manifest.js";
export {
  DEFAULT_KERNEL_PACKAGE,
  DEFAULT_MODULES,
  parseImageBuildFlags,
  type AddedPath,
  type BuildRequest,
  type ImageBuildFlags,
  type KernelSource,
} from "./options.js";
export { defaultImageDir, downloadsDir, palisadeCacheDir } from "./cache-paths.js";
export { ModuleNotFoundError } from "./modules-dep.js";
