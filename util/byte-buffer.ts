/**
 * Bytes received from something hostile (a guest channel), held up to a fixed capacity: storage is
 * allocated once, appends copy each byte once (no quadratic re-concatenation), and nothing beyond the
 * capacity is ever kept. The reader looks at `bytes()` and `consume()`s what it has used.
 */
export class ByteBuffer {
  readonly #store: Buffer;
  #start = 0;
  #end = 0;
  /** Every byte ever offered, kept or not. */
  received = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`capacity: a positive integer (got ${capacity})`);
    this.#store = Buffer.alloc(capacity);
  }

  get length(): number {
    return this.#end - this.#start;
  }

  /** Appends what fits; returns false (and keeps nothing more) once `chunk` would overflow the capacity. */
  push(chunk: Uint8Array): boolean {
    this.received += chunk.length;
    if (this.length + chunk.length > this.capacity) return false;
    if (this.#end + chunk.length > this.capacity) {
      this.#store.copy(this.#store, 0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    this.#store.set(chunk, this.#end);
    this.#end += chunk.length;
    return true;
  }

  /** A view of the held bytes (valid until the next push or consume). */
  bytes(): Buffer {
    return this.#store.subarray(this.#start, this.#end);
  }

  consume(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.length) throw new RangeError(`consume: 0..${this.length} (got ${n})`);
    this.#start += n;
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  clear(): void {
    this.#start = this.#end = 0;
  }
}
