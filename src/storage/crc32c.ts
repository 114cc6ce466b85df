/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as VHDX uses for its headers,
 * region tables and log entries. Slicing-by-8 tables: about 8 bytes per table step.
 *
 * The structures VHDX checksums are mostly zeros (a 64 KiB region table holds two
 * 32-byte entries; a 4 KiB header ~80 bytes), and at start-up this code runs in V8's
 * interpreter: checksumming them byte by byte was ~5 ms of every `disk convert` to or
 * from VHDX. So each 256-byte piece that is all zeros (one memcmp) advances the CRC in
 * one step of four table lookups, and the tables are built on first use (a convert
 * between raw and VHD never needs them).
 */

const POLY = 0x82f63b78;
/** Zero runs are skipped in pieces of this many bytes. */
const ZERO_PIECE = 256;
const ZEROS = Buffer.alloc(ZERO_PIECE);

interface Tables {
  /** Slicing-by-8: t[k][b] is the CRC register change of byte b followed by k zero bytes. */
  readonly t: readonly [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  /**
   * The register after ZERO_PIECE zero bytes, by the register's 4 bytes: the change is
   * linear (over GF(2)) in the register, so z[k][b] is that of b in byte k alone, and
   * the four XORed give that of the whole register.
   */
  readonly z: readonly [Uint32Array, Uint32Array, Uint32Array, Uint32Array];
}

let tables: Tables | undefined;

function makeTables(): Tables {
  const first = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    first[n] = c >>> 0;
  }
  const t = [first];
  for (let k = 1; k < 8; k++) {
    const prev = t[k - 1] ?? first;
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      const p = prev[n] ?? 0;
      table[n] = ((p >>> 8) ^ (first[p & 0xff] ?? 0)) >>> 0;
    }
    t.push(table);
  }
  // Each register bit alone through ZERO_PIECE zero bytes (32 x 256 table steps), then
  // every byte value of every register byte as the XOR of its bits' results. 256-byte
  // pieces measured fastest for what a convert checksums (~1.5 ms, cold, against ~4-6 ms
  // byte by byte; 512: ~2 ms, building takes longer; 64: more memcmp calls).
  const bit = new Uint32Array(32);
  for (let b = 0; b < 32; b++) {
    let c = (1 << b) >>> 0;
    for (let n = 0; n < ZERO_PIECE; n++) c = ((first[c & 0xff] ?? 0) ^ (c >>> 8)) >>> 0;
    bit[b] = c;
  }
  const z = [0, 1, 2, 3].map((k) => {
    const table = new Uint32Array(256);
    for (let v = 1; v < 256; v++) {
      const low = 31 - Math.clz32(v & -v); // the lowest set bit of v
      table[v] = ((table[v & (v - 1)] ?? 0) ^ (bit[8 * k + low] ?? 0)) >>> 0;
    }
    return table;
  });
  // INVARIANT: 8 slicing tables and 4 zero-piece tables were built just above.
  return { t: t as unknown as Tables["t"], z: z as unknown as Tables["z"] };
}

function isZeroPiece(data: Uint8Array, at: number): boolean {
  return Buffer.from(data.buffer, data.byteOffset + at, ZERO_PIECE).equals(ZEROS);
}

/**
 * Continues a CRC-32C over `data`; start with `crc = 0`.
 * @example crc32c(new TextEncoder().encode("123456789")) === 0xe3069283
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  tables ??= makeTables();
  const [T0, T1, T2, T3, T4, T5, T6, T7] = tables.t;
  const [Z0, Z1, Z2, Z3] = tables.z;
  let c = ~crc >>> 0;
  let i = 0;
  while (i < data.length) {
    if (data.length - i >= ZERO_PIECE && isZeroPiece(data, i)) {
      c =
        ((Z0[c & 0xff] ?? 0) ^
          (Z1[(c >>> 8) & 0xff] ?? 0) ^
          (Z2[(c >>> 16) & 0xff] ?? 0) ^
          (Z3[c >>> 24] ?? 0)) >>>
        0;
      i += ZERO_PIECE;
      continue;
    }
    const end = Math.min(data.length, i + ZERO_PIECE);
    const end8 = i + Math.floor((end - i) / 8) * 8;
    // INVARIANT: every index below is < data.length, so the `!`-free `?? 0` never triggers.
    while (i < end8) {
      const lo =
        (c ^
          ((data[i] ?? 0) |
            ((data[i + 1] ?? 0) << 8) |
            ((data[i + 2] ?? 0) << 16) |
            ((data[i + 3] ?? 0) << 24))) >>>
        0;
      c =
        (T7[lo & 0xff] ?? 0) ^
        (T6[(lo >>> 8) & 0xff] ?? 0) ^
        (T5[(lo >>> 16) & 0xff] ?? 0) ^
        (T4[lo >>> 24] ?? 0) ^
        (T3[data[i + 4] ?? 0] ?? 0) ^
        (T2[data[i + 5] ?? 0] ?? 0) ^
        (T1[data[i + 6] ?? 0] ?? 0) ^
        (T0[data[i + 7] ?? 0] ?? 0);
      i += 8;
    }
    while (i < end) {
      c = (T0[(c ^ (data[i] ?? 0)) & 0xff] ?? 0) ^ (c >>> 8);
      i++;
    }
  }
  return ~c >>> 0;
}

/** CRC-32C of `data` computed as if the 4 bytes at `fieldOffset` were zero (VHDX checksums). */
export function crc32cWithZeroField(data: Uint8Array, fieldOffset: number): number {
  const before = crc32c(data.subarray(0, fieldOffset));
  const zeros = crc32c(new Uint8Array(4), before);
  return crc32c(data.subarray(fieldOffset + 4), zeros);
}
