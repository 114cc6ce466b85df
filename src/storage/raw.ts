import type { AllocationRange, BlockImage } from "./block-image.js";
import { assertNoDataPast, checkRange, pushDataRun, readFileInto } from "./blocks.js";
import { DiskError } from "./errors.js";
import { readonlyError, type StorageFile } from "./file.js";

/**
 * A raw image: the virtual disk byte for byte. Holes in a sparse file read as zeros and
 * `allocation` reports them as `zero` (found with lseek SEEK_DATA/SEEK_HOLE); `discard`
 * punches holes.
 */
export class RawImage implements BlockImage {
  readonly format = "raw";
  readonly type = "fixed";
  readonly path: string;
  readonly readonly: boolean;
  readonly logicalSectorBytes = 512;
  readonly physicalSectorBytes = 512;
  readonly blockSizeBytes = 512;
  readonly parent = undefined;
  readonly #file: StorageFile;
  #sizeBytes: number;

  private constructor(file: StorageFile, sizeBytes: number, readonly: boolean) {
    this.#file = file;
    this.path = file.path;
    this.#sizeBytes = sizeBytes;
    this.readonly = readonly;
  }

  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /** Opens a raw image; its size is the file's. */
  static async open(file: StorageFile, options: { readonly: boolean }): Promise<RawImage> {
    return new RawImage(file, await file.size(), options.readonly || !file.writable);
  }

  /**
   * Makes a raw image of `sizeBytes` (sparse: a truncate, no data written).
   * @throws {DiskError} `disk.bad-size` unless the size is a positive multiple of 512.
   */
  static async create(file: StorageFile, sizeBytes: number): Promise<RawImage> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 512 !== 0) {
      throw new DiskError(`${file.path}: size ${sizeBytes} must be a positive multiple of 512 bytes`, "disk.bad-size");
    }
    await file.truncate(sizeBytes);
    return new RawImage(file, sizeBytes, false);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this, offset, length);
    return this.#file.read(offset, length);
  }

  async readInto(offset: number, into: Uint8Array): Promise<void> {
    checkRange(this, offset, into.length);
    await readFileInto(this.#file, offset, into);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    checkRange(this, offset, data.length);
    await this.#file.write(offset, data);
  }

  async flush(): Promise<void> {
    if (!this.readonly) await this.#file.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    checkRange(this, offset, length);
    await this.#file.punchHole(offset, length);
  }

  allocation(offset: number, length: number): Promise<AllocationRange[]> {
    checkRange(this, offset, length);
    const ranges: AllocationRange[] = [];
    pushDataRun(ranges, { offset, length, fileOffset: offset }, this.#file.dataRanges?.bind(this.#file));
    return Promise.resolve(ranges);
  }

  allocatedBytes(): Promise<number> {
    return this.#file.size();
  }

  /**
   * Grows the disk, or shrinks it when the cut-off tail reads as zeros (holes are skipped
   * unread). Raw images have no metadata: any multiple of 512 bytes works.
   * @throws {DiskError} `disk.bad-size`, `disk.readonly`.
   */
  async resize(sizeBytes: number): Promise<void> {
    if (this.readonly) throw readonlyError(this.path);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 512 !== 0) {
      throw new DiskError(`${this.path}: size ${sizeBytes} must be a positive multiple of 512 bytes`, "disk.bad-size");
    }
    await assertNoDataPast(this, sizeBytes);
    await this.#file.truncate(sizeBytes);
    this.#sizeBytes = sizeBytes;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.#file.close();
  }
}
