/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as VHDX uses for its headers,
 * region tables and log entries. Slicing-by-8 tables: about 8 bytes per table step.
 */

const POLY = 0x82f63b78;

function makeTables(): Uint32Array[] {
  const tables: Uint32Array[] = [];
  const first = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    first[n] = c >>> 0;
  }
  tables.push(first);
  for (let t = 1; t < 8; t++) {
    const prev = tables[t - 1] ?? first;
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      const p = prev[n] ?? 0;
      table[n] = ((p >>> 8) ^ (first[p & 0xff] ?? 0)) >>> 0;
    }
    tables.push(table);
  }
  return tables;
}

const [T0, T1, T2, T3, T4, T5, T6, T7] = makeTables() as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];

/**
 * Continues a CRC-32C over `data`; start with `crc = 0`.
 * @example crc32c(new TextEncoder().encode("123456789")) === 0xe3069283
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  let i = 0;
  const end8 = data.length - (data.length % 8);
  // INVARIANT: every index below is < data.length, so the `!`-free `?? 0` never triggers.
  while (i < end8) {
    const lo = (c ^ ((data[i] ?? 0) | ((data[i + 1] ?? 0) << 8) | ((data[i + 2] ?? 0) << 16) | ((data[i + 3] ?? 0) << 24))) >>> 0;
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
  while (i < data.length) {
    c = (T0[(c ^ (data[i] ?? 0)) & 0xff] ?? 0) ^ (c >>> 8);
    i++;
  }
  return ~c >>> 0;
}

/** CRC-32C of `data` computed as if the 4 bytes at `fieldOffset` were zero (VHDX checksums). */
export function crc32cWithZeroField(data: Uint8Array, fieldOffset: number): number {
  const before = crc32c(data.subarray(0, fieldOffset));
  const zeros = crc32c(new Uint8Array(4), before);
  return crc32c(data.subarray(fieldOffset + 4), zeros);
}
