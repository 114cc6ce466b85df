/** The disk image formats Palisade reads and writes. */
export type DiskFormat = "raw" | "vhd" | "vhdx";

/** How the image stores its blocks: all up front, on first write, or over a parent. */
export type DiskType = "fixed" | "dynamic" | "differencing";

/**
 * What reading a range gives, as {@link BlockImage.allocation} reports it.
 * - `data`: stored in this image's file (at `fileOffset` when the format knows it);
 * - `zero`: reads as zeros and uses no space (a hole, a discarded or zero block);
 * - `parent`: not in this image; reads come from the parent (differencing images only).
 */
export type AllocationState = "data" | "zero" | "parent";

/** A run of the virtual disk in one allocation state. */
export interface AllocationRange {
  /** Virtual disk offset in bytes. */
  readonly offset: number;
  readonly length: number;
  readonly state: AllocationState;
  /** Where the run starts in the image file, for `data` runs when known. */
  readonly fileOffset?: number;
}

/**
 * A virtual disk: the block back-end of `palisade disk`, and of Palisade's storage device
 * server, whatever the file format underneath (raw, VHD, VHDX; fixed, dynamic or
 * differencing).
 *
 * Contract:
 * - Offsets and lengths are bytes on the virtual disk, any value (no alignment needed),
 *   as safe integers; a range must lie within `[0, sizeBytes]`, else `disk.bad-range`.
 *   Unaligned writes cost a read-modify-write of the sectors they touch.
 * - Reads of never-written ranges give zeros, or the parent's data on a differencing disk.
 * - Calls may overlap (a device server keeps many in flight): overlapping reads and
 *   writes of the same bytes are ordered by nothing, as on a real disk; metadata (block
 *   allocation, BAT, log) is serialized inside the image.
 * - Durability: when `write` resolves the data is visible to later reads but may still be
 *   in the host's cache; when `flush` resolves, every write that resolved before it is
 *   durable and survives a crash of the process or the host. Metadata a write needed
 *   (a new block's BAT entry) is made crash-safe before the write resolves (VHDX: through
 *   its log), so a crash never leaves an image that fails to open.
 * - `discard` says the range's contents are no longer needed: afterwards it reads as
 *   zeros (never as the parent's data) and whole blocks may give their space back.
 * - A `readonly` image never writes to its file (not even to replay a VHDX log, which
 *   then happens in memory); `write`, `discard` and `resize` throw `disk.readonly`.
 * - `close` flushes, leaves the file consistent for other tools (a VHDX with an empty
 *   log), and closes the parent chain it opened. The image is unusable afterwards.
 *
 * @example
 * const image = await openImage("disk.vhdx", { readonly: false });
 * await image.write(1048576, new Uint8Array(4096).fill(0xab));
 * await image.flush();
 * const sector = await image.read(1048576, 512);
 * await image.close();
 */
export interface BlockImage {
  readonly format: DiskFormat;
  readonly type: DiskType;
  /** The image file's path (or a label for in-memory files). */
  readonly path: string;
  readonly readonly: boolean;
  /** Virtual disk size in bytes. */
  readonly sizeBytes: number;
  /** Logical sector size the guest sees: 512 or 4096. */
  readonly logicalSectorBytes: number;
  /** Physical sector size reported to the guest: 512 or 4096. */
  readonly physicalSectorBytes: number;
  /** Allocation unit of the format (VHD/VHDX block size; the logical sector for raw). */
  readonly blockSizeBytes: number;
  /** The parent of a differencing image, opened with it; undefined otherwise. */
  readonly parent: BlockImage | undefined;

  /** Reads `length` bytes at `offset`. @throws {DiskError} `disk.bad-range`. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Reads `into.length` bytes at `offset` into a buffer the caller owns and reuses (a
   * copy loop or a device server's request buffers); same result as `read`.
   * @throws {DiskError} `disk.bad-range`.
   */
  readInto(offset: number, into: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`. @throws {DiskError} `disk.readonly`, `disk.bad-range`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every resolved write durable. */
  flush(): Promise<void>;
  /** Drops the contents of a range; it then reads as zeros. */
  discard(offset: number, length: number): Promise<void>;
  /** The allocation of `[offset, offset + length)`, as contiguous runs in order, merged. */
  allocation(offset: number, length: number): Promise<AllocationRange[]>;
  /** Bytes of the image file holding data (for `disk info`). */
  allocatedBytes(): Promise<number>;
  /** Flushes and closes this image and the parents it opened. */
  close(): Promise<void>;
}
