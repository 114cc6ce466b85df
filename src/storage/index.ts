/**
 * `storage/`: virtual disks in raw, VHD and VHDX (fixed, dynamic, differencing) behind one
 * {@link BlockImage} interface, and the whole-image operations of `palisade disk`.
 */
export type { AllocationRange, AllocationState, BlockImage, DiskFormat, DiskType } from "./block-image.js";
export { DiskError, DiskFormatError } from "./errors.js";
export { FaultFile, MemoryFile, NodeFile, OverlayFile, PowerCut, type StorageFile } from "./file.js";
export { RawImage } from "./raw.js";
export { VhdImage } from "./vhd/image.js";
export { VhdxImage } from "./vhdx/image.js";
export { createImage, detectFormat, openImage, type CreateOptions, type OpenOptions } from "./open.js";
export {
  checkImage,
  compactImage,
  convertImage,
  copyImage,
  describeImage,
  imageInfo,
  imageMap,
  mergeImage,
  resizeImage,
  type CheckResult,
  type ConvertOptions,
  type ImageInfo,
  type ProgressCallback,
} from "./operations.js";
export { crc32c } from "./crc32c.js";
export { composeWindows, extractWindows, imageFuzzTarget, type FuzzFixture, type FuzzFixtures, type FuzzOpener } from "./fuzz-harness.js";
