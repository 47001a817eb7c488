/**
 * Splits a byte stream read in chunks (a console logfile, a file of JSON log lines) into lines, with
 * every buffer bounded: the guest decides every byte, so a line that never ends must not grow memory.
 * A line longer than `maxLineBytes` is cut: its first `maxLineBytes` bytes are kept and returned
 * (flagged `cut`) and the rest, up to its newline, is dropped and counted. The partial last line of a
 * chunk is carried to the next one (at most `maxLineBytes` bytes of it).
 */

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024;

export interface SplitLine {
  /** The line's bytes decoded as UTF-8 (invalid sequences become U+FFFD), without `\n` or a final `\r`. */
  text: string;
  /** The line was longer than `maxLineBytes` and cut. */
  cut: boolean;
}

export class LineSplitter {
  readonly maxLineBytes: number;
  #carry: Buffer = Buffer.alloc(0);
  /** Inside an overlong line whose head was already returned: drop bytes until its newline. */
  #skipping = false;
  #cutLines = 0;
  #droppedBytes = 0;

  constructor(maxLineBytes = DEFAULT_MAX_LINE_BYTES) {
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`LineSplitter: maxLineBytes must be an integer >= 1, got ${String(maxLineBytes)}`);
    }
    this.maxLineBytes = maxLineBytes;
  }

  /** Lines cut so far (longer than `maxLineBytes`). */
  get cutLines(): number {
    return this.#cutLines;
  }

  /** Bytes dropped from cut lines so far. */
  get droppedBytes(): number {
    return this.#droppedBytes;
  }

  /** Bytes of the partial line carried to the next chunk. */
  get carried(): number {
    return this.#carry.length;
  }

  /** Forgets the partial line (the stream restarted: truncated or replaced file, skipped bytes). */
  reset(): void {
    this.#carry = Buffer.alloc(0);
    this.#skipping = false;
  }

  /**
   * Forgets the partial line and drops bytes up to the next newline: the stream continues after a
   * gap (bytes skipped to stay within a read bound), so what comes first is the tail of a line.
   */
  resync(): void {
    this.#carry = Buffer.alloc(0);
    this.#skipping = true;
  }

  /** The complete lines `chunk` ends (with what was carried), in order. */
  push(chunk: Uint8Array): SplitLine[] {
    const out: SplitLine[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      const nl = chunk.indexOf(0x0a, pos);
      const end = nl < 0 ? chunk.length : nl;
      const piece = chunk.subarray(pos, end);
      if (this.#skipping) {
        this.#droppedBytes += piece.length;
      } else if (this.#carry.length + piece.length > this.maxLineBytes) {
        const room = this.maxLineBytes - this.#carry.length;
        out.push({ text: decode(Buffer.concat([this.#carry, piece.subarray(0, room)])), cut: true });
        this.#droppedBytes += piece.length - room;
        this.#cutLines += 1;
        this.#carry = Buffer.alloc(0);
        this.#skipping = true;
      } else if (nl >= 0) {
        out.push({ text: decode(this.#carry.length === 0 ? piece : Buffer.concat([this.#carry, piece])), cut: false });
        this.#carry = Buffer.alloc(0);
      } else {
        // Copied: the caller may reuse its buffer.
        this.#carry = Buffer.concat([this.#carry, piece]);
      }
      if (nl < 0) break;
      this.#skipping = false;
      pos = nl + 1;
    }
    return out;
  }
}

function decode(bytes: Uint8Array): string {
  const s = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  return s.endsWith('\r') ? s.replace(/\r+$/, '') : s;
}
