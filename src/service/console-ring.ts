/** A bounded ring of a VM's most recent console output, so a late `vm console` sees it. */

/** Default bytes kept per VM. */
export const CONSOLE_RING_BYTES = 64 * 1024;

/** Keeps the last `capacity` bytes pushed into it. */
export class ConsoleRing {
  readonly capacity: number;
  #chunks: Buffer[] = [];
  #bytes = 0;

  constructor(capacity = CONSOLE_RING_BYTES) {
    this.capacity = capacity;
  }

  /** Appends `chunk`, dropping the oldest bytes beyond the capacity. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const kept = chunk.length > this.capacity ? chunk.subarray(chunk.length - this.capacity) : chunk;
    this.#chunks.push(Buffer.from(kept));
    this.#bytes += kept.length;
    while (this.#bytes > this.capacity) {
      const first = this.#chunks[0];
      if (first === undefined) break;
      const excess = this.#bytes - this.capacity;
      if (first.length <= excess) {
        this.#chunks.shift();
        this.#bytes -= first.length;
      } else {
        this.#chunks[0] = first.subarray(excess);
        this.#bytes -= excess;
      }
    }
    // Many small chunks cost more than their bytes: compact now and then.
    if (this.#chunks.length > 256) this.#chunks = [Buffer.concat(this.#chunks)];
  }

  /** The bytes kept, oldest first. */
  contents(): Buffer {
    return Buffer.concat(this.#chunks, this.#bytes);
  }

  get size(): number {
    return this.#bytes;
  }
}
