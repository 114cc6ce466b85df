/**
 * A one-line progress bar on a terminal; silent when the stream is not a TTY (logs and
 * pipes get no control characters).
 */
export class ProgressBar {
  readonly #stream: NodeJS.WriteStream;
  readonly #label: string;
  readonly #total: number;
  #lastDrawMs = 0;
  #done = 0;

  constructor(label: string, total: number, stream: NodeJS.WriteStream = process.stderr) {
    this.#stream = stream;
    this.#label = label;
    this.#total = Math.max(total, 1);
  }

  get enabled(): boolean {
    return this.#stream.isTTY;
  }

  /** Sets the amount done (same unit as `total`); redraws at most every 100 ms. */
  update(done: number): void {
    this.#done = Math.min(done, this.#total);
    const now = Date.now();
    if (!this.enabled || now - this.#lastDrawMs < 100) return;
    this.#lastDrawMs = now;
    this.#draw();
  }

  /** Draws 100% and ends the line. */
  finish(): void {
    if (!this.enabled) return;
    this.#done = this.#total;
    this.#draw();
    this.#stream.write("\n");
  }

  #draw(): void {
    const width = 30;
    const ratio = this.#done / this.#total;
    const filled = Math.round(ratio * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    this.#stream.write(`\r${this.#label} [${bar}] ${(ratio * 100).toFixed(0).padStart(3)}%`);
  }
}
