/** A growable byte buffer that terms encode into. */
export class ByteSink {
  private buf: Uint8Array;
  private len = 0;

  constructor(initialCapacity = 256) {
    this.buf = new Uint8Array(initialCapacity);
  }

  get length(): number {
    return this.len;
  }

  private reserve(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  byte(b: number): this {
    this.reserve(1);
    this.buf[this.len++] = b & 0xff;
    return this;
  }

  bytes(bs: ArrayLike<number>): this {
    this.reserve(bs.length);
    this.buf.set(bs, this.len);
    this.len += bs.length;
    return this;
  }

  /** Little-endian unsigned integer of `size` bytes (AML is little-endian throughout). */
  uint(value: bigint, size: number): this {
    let v = value;
    for (let i = 0; i < size; i++) {
      this.byte(Number(v & 0xffn));
      v >>= 8n;
    }
    return this;
  }

  toBytes(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Encode something into a fresh sink and return its bytes (used for framing: PkgLength needs the body first). */
export function encodeToBytes(encode: (sink: ByteSink) => void): Uint8Array {
  const sink = new ByteSink();
  encode(sink);
  return sink.toBytes();
}
