import type { Duplex } from 'node:stream';

/**
 * A generic newline-delimited protocol over a stream socket: the bottom layer of the QMP client.
 *
 * - Lines are split on `\n`; a trailing `\r` is dropped (QEMU's monitor writes `\r\n`).
 * - A line longer than `maxLineBytes` ends the stream with an `overflow` and destroys the socket as soon
 *   as the limit is crossed, before the newline arrives: buffering is bounded by the limit plus one
 *   socket chunk, whatever the peer sends.
 * - Complete lines wait in a queue until `readLine()` takes them; when the queue grows large the socket
 *   is paused, so a slow reader never makes memory grow.
 * - Nothing here throws on peer data: the peer can only end the stream, with a reason in `end`.
 */

/** Why the stream ended. */
export type LineStreamEnd =
  /** The peer closed the connection. A partial line without its newline is discarded. */
  | { readonly kind: 'eof'; readonly discardedBytes: number }
  /** The socket failed (ECONNRESET, EPIPE...). */
  | { readonly kind: 'error'; readonly error: Error }
  /** A line grew past `limit` bytes; `head` is its beginning (at most `EXCERPT_BYTES` bytes). */
  | { readonly kind: 'overflow'; readonly limit: number; readonly receivedBytes: number; readonly head: string }
  /** `close()` was called here. */
  | { readonly kind: 'closed' };

export interface LineStreamOptions {
  /** Longest accepted line in bytes, without its newline. Default 16 MiB. */
  maxLineBytes?: number;
  /** Complete lines queued before the socket is paused. Default 1024. */
  maxQueuedLines?: number;
}

export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_QUEUED_LINES = 1024;
/** How much of an overlong line is kept for the error message. */
export const EXCERPT_BYTES = 160;

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

export class LineStream {
  readonly maxLineBytes: number;
  readonly #maxQueuedLines: number;
  readonly #socket: Duplex;

  /** Pieces of the line being received (no newline seen yet) and their total size. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  #peakPartialBytes = 0;

  readonly #lines: string[] = [];
  #queuedBytes = 0;
  #paused = false;

  #reader: ((line: string | null) => void) | undefined;
  #end: LineStreamEnd | undefined;
  readonly #closed: Promise<LineStreamEnd>;
  #resolveClosed!: (end: LineStreamEnd) => void;

  constructor(socket: Duplex, options: LineStreamOptions = {}) {
    const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${String(maxLineBytes)}`);
    }
    const maxQueuedLines = options.maxQueuedLines ?? DEFAULT_MAX_QUEUED_LINES;
    if (!Number.isSafeInteger(maxQueuedLines) || maxQueuedLines < 1) {
      throw new RangeError(`maxQueuedLines must be a positive integer, got ${String(maxQueuedLines)}`);
    }
    this.maxLineBytes = maxLineBytes;
    this.#maxQueuedLines = maxQueuedLines;
    this.#socket = socket;
    this.#closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });

    socket.on('data', (chunk: Buffer | string) => {
      this.#onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    });
    socket.on('end', () => {
      this.#finish({ kind: 'eof', discardedBytes: this.#partialBytes });
    });
    // An 'error' listener must always be present: an unhandled socket error would crash the process.
    socket.on('error', (error: Error) => {
      this.#finish({ kind: 'error', error });
    });
    socket.on('close', () => {
      this.#finish({ kind: 'eof', discardedBytes: this.#partialBytes });
      // #finish has always set #end by now.
      this.#resolveClosed(this.#end ?? { kind: 'closed' });
    });
    if (socket.destroyed) {
      this.#finish({ kind: 'closed' });
      this.#resolveClosed({ kind: 'closed' });
    }
  }

  /** Why the stream ended, or `undefined` while it is open. Lines queued before the end stay readable. */
  get end(): LineStreamEnd | undefined {
    return this.#end;
  }

  /** Resolves once the socket is fully closed, with the reason the stream ended. Never rejects. */
  get closed(): Promise<LineStreamEnd> {
    return this.#closed;
  }

  /** Bytes of the unfinished line currently buffered. */
  get bufferedBytes(): number {
    return this.#partialBytes;
  }

  /** The most bytes an unfinished line ever held in the buffer (for tests and diagnostics). */
  get peakBufferedBytes(): number {
    return this.#peakPartialBytes;
  }

  /**
   * The next complete line (without its line ending), or `null` once the stream has ended and every
   * queued line was read. One reader at a time.
   */
  readLine(): Promise<string | null> {
    if (this.#reader !== undefined) {
      throw new Error('LineStream.readLine: a read is already pending');
    }
    const line = this.#shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#end !== undefined) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.#reader = resolve;
    });
  }

  /**
   * Sends `line` followed by `\n`. Returns false when the stream has ended (the line is dropped: the
   * caller learns about the end from `readLine()`/`end`, not from here).
   */
  writeLine(line: string): boolean {
    if (line.includes('\n')) {
      throw new TypeError(`LineStream.writeLine: line contains a newline: ${JSON.stringify(line.slice(0, 80))}`);
    }
    if (this.#end !== undefined || this.#socket.destroyed || !this.#socket.writable) return false;
    this.#socket.write(`${line}\n`);
    return true;
  }

  /** Ends the stream here and destroys the socket. Idempotent; resolves once the socket is closed. */
  close(): Promise<LineStreamEnd> {
    this.#finish({ kind: 'closed' });
    this.#socket.destroy();
    return this.#closed;
  }

  #onData(chunk: Buffer): void {
    if (this.#end !== undefined) return;
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, start);
      const piece = chunk.subarray(start, newline === -1 ? chunk.length : newline);
      if (this.#partialBytes + piece.length > this.maxLineBytes) {
        this.#overflow(piece);
        return;
      }
      if (newline === -1) {
        if (piece.length > 0) {
          this.#partial.push(piece);
          this.#partialBytes += piece.length;
          this.#peakPartialBytes = Math.max(this.#peakPartialBytes, this.#partialBytes);
        }
        return;
      }
      // A line that came in one chunk (a QMP reply, nearly always) is decoded where it lies, no copy.
      let bytes = piece;
      if (this.#partial.length > 0) {
        this.#partial.push(piece);
        bytes = Buffer.concat(this.#partial, this.#partialBytes + piece.length);
        this.#partial = [];
        this.#partialBytes = 0;
      }
      if (bytes.length > 0 && bytes[bytes.length - 1] === CARRIAGE_RETURN) bytes = bytes.subarray(0, -1);
      // Invalid UTF-8 becomes U+FFFD: decoding never throws.
      this.#push(bytes.toString('utf8'));
      start = newline + 1;
      if (start >= chunk.length) return;
    }
  }

  #overflow(piece: Buffer): void {
    const receivedBytes = this.#partialBytes + piece.length;
    const head = Buffer.concat([...this.#partial, piece.subarray(0, EXCERPT_BYTES)])
      .subarray(0, EXCERPT_BYTES)
      .toString('utf8');
    this.#partial = [];
    this.#partialBytes = 0;
    this.#finish({ kind: 'overflow', limit: this.maxLineBytes, receivedBytes, head });
    this.#socket.destroy();
  }

  #push(line: string): void {
    const reader = this.#reader;
    if (reader !== undefined) {
      this.#reader = undefined;
      reader(line);
      return;
    }
    this.#lines.push(line);
    this.#queuedBytes += line.length;
    if (!this.#paused && (this.#lines.length >= this.#maxQueuedLines || this.#queuedBytes >= this.maxLineBytes)) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #shift(): string | undefined {
    const line = this.#lines.shift();
    if (line === undefined) return undefined;
    this.#queuedBytes -= line.length;
    if (
      this.#paused &&
      this.#lines.length <= this.#maxQueuedLines / 2 &&
      this.#queuedBytes <= this.maxLineBytes / 2
    ) {
      this.#paused = false;
      this.#socket.resume();
    }
    return line;
  }

  /** Records the first reason the stream ended and wakes a pending reader if nothing is queued. */
  #finish(end: LineStreamEnd): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#partial = [];
    this.#partialBytes = 0;
    const reader = this.#reader;
    if (reader !== undefined && this.#lines.length === 0) {
      this.#reader = undefined;
      reader(null);
    }
  }
}
