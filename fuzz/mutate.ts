/** Deterministic mutations of a valid input, so a finding replays from its seed. */

/** xorshift32: small, seedable, good enough to pick mutations. */
export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
}

const INTERESTING_32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];

/** Returns a mutated copy of `input`: 1–8 bit flips, byte sets, interesting values, truncation or splices. */
export function mutate(input: Uint8Array, rng: Rng): Uint8Array {
  let out = new Uint8Array(input);
  const steps = 1 + rng.below(8);
  for (let step = 0; step < steps; step++) {
    if (out.length === 0) return new Uint8Array([rng.below(256)]);
    const at = rng.below(out.length);
    switch (rng.below(6)) {
      case 0:
        out[at] = (out[at] ?? 0) ^ (1 << rng.below(8));
        break;
      case 1:
        out[at] = rng.below(256);
        break;
      case 2: {
        const value = INTERESTING_32[rng.below(INTERESTING_32.length)] ?? 0;
        const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
        if (at + 4 <= out.length) view.setUint32(at, value, rng.below(2) === 0);
        break;
      }
      case 3:
        out = out.slice(0, at);
        break;
      case 4: {
        const length = Math.min(1 + rng.below(64), out.length - at);
        const to = rng.below(out.length);
        out.copyWithin(to, at, at + length);
        break;
      }
      default: {
        const length = Math.min(1 + rng.below(16), out.length - at);
        out.fill(rng.below(2) === 0 ? 0 : 0xff, at, at + length);
      }
    }
  }
  return out;
}
