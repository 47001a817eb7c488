import { open, stat } from 'node:fs/promises';
import { realClock, type Clock } from '../../util/clock.js';
import { ConsoleAbortError, ConsoleError, ConsoleTimeoutError } from './errors.js';

/**
 * The console is read from the chardev logfile, never from its socket (DESIGN fact 8): QEMU keeps writing
 * the file with no client connected, and a reader of the file can neither stall the guest nor lock out
 * `eve app console`. Offsets are byte offsets into the file. The file only grows while QEMU runs, but it
 * can be truncated (QEMU restarted without `logappend=on`) or replaced (rotated): a reader whose offset is
 * past the end, or whose file changed identity, starts again at 0 and says so (`reset`).
 */

/** Default bound of one read. */
export const DEFAULT_MAX_READ_BYTES = 256 * 1024;

export interface LogRead {
  data: Buffer;
  /** File offset of `data[0]`. */
  start: number;
  /** File offset just past `data`: where the next read starts. */
  end: number;
  /** File size when it was read. */
  size: number;
  /** The file was shorter than the offset asked for (truncated) or replaced: reading restarted at 0. */
  reset: boolean;
  /** Bytes between the offset asked for and `start` left out to stay within `maxBytes` (`keep: 'tail'`). */
  skipped: number;
  /** Bytes after `end` not read yet (`keep: 'head'`): read on from `end`. */
  remaining: number;
  /** Identity of the file read (device and inode), to notice a replaced file. */
  identity: string;
}

export interface ReadLogfileOptions {
  /** Byte offset to read from. Default 0. */
  from?: number;
  /** Longest read. Default `DEFAULT_MAX_READ_BYTES`. */
  maxBytes?: number;
  /** When more than `maxBytes` are available: read the first ones (`head`, default) or the last (`tail`). */
  keep?: 'head' | 'tail';
  /** The identity a previous read returned: a different file now means it was replaced (a reset). */
  identity?: string;
}

/**
 * Reads the logfile from `from` to its current end, at most `maxBytes`. Throws `ConsoleError` (with the
 * errno error as `cause`) when the file cannot be read, `ENOENT` included.
 */
export async function readLogfile(path: string, options: ReadLogfileOptions = {}): Promise<LogRead> {
  const from = options.from ?? 0;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_READ_BYTES;
  const keep = options.keep ?? 'head';
  checkOffset('from', from);
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(`readLogfile: maxBytes must be an integer >= 0, got ${String(maxBytes)}`);
  }
  if (keep !== 'head' && keep !== 'tail') throw new RangeError(`readLogfile: keep must be head or tail, got ${String(keep)}`);

  let handle;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    throw new ConsoleError(`cannot read the console logfile ${path}: ${(cause as Error).message}`, { cause });
  }
  try {
    const st = await handle.stat();
    const size = st.size;
    const identity = `${st.dev}:${st.ino}`;
    const reset = size < from || (options.identity !== undefined && options.identity !== identity);
    const begin = reset ? 0 : from;
    const available = size - begin;
    let start = begin;
    let length = available;
    let skipped = 0;
    if (available > maxBytes) {
      length = maxBytes;
      if (keep === 'tail') {
        start = size - maxBytes;
        skipped = available - maxBytes;
      }
    }
    const data = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await handle.read(data, got, length - got, start + got);
      if (bytesRead === 0) break; // truncated while we read: return what was there
      got += bytesRead;
    }
    const end = start + got;
    return {
      data: got === length ? data : data.subarray(0, got),
      start,
      end,
      size,
      reset,
      skipped,
      remaining: Math.max(0, size - end),
      identity,
    };
  } catch (cause) {
    throw new ConsoleError(`cannot read the console logfile ${path}: ${(cause as Error).message}`, { cause });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The last `maxBytes` bytes of the logfile. */
export function tailLogfile(path: string, maxBytes: number): Promise<LogRead> {
  return readLogfile(path, { from: 0, maxBytes, keep: 'tail' });
}

/** Current size of the logfile; 0 when it does not exist (yet). Throws `ConsoleError` otherwise. */
export async function logfileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw new ConsoleError(`cannot stat the console logfile ${path}: ${(cause as Error).message}`, { cause });
  }
}

export interface LogfileTailOptions {
  /** Byte offset to follow from. Default 0; `LogfileTail.atEnd()` starts at the current end. */
  from?: number;
  /** Longest read per poll. Default `DEFAULT_MAX_READ_BYTES`. */
  maxReadBytes?: number;
  /** Poll interval while waiting. Default 50 ms. */
  pollMs?: number;
  clock?: Clock;
}

export interface WaitForOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /**
   * The text matched is the last `windowChars` characters read (default 64 Ki): a match must fit in it.
   * Bytes are decoded as UTF-8, nothing else is changed (write `\r?\n` for a console line end).
   */
  windowChars?: number;
}

export interface LogMatch {
  /** The match (no `g`/`y` state: the regex is copied without them). */
  match: RegExpExecArray;
  /** The tail's offset after the read that matched. */
  end: number;
}

export interface WaitQuietOptions {
  /** The file must not grow for this long. */
  quietMs: number;
  /** Give up after this long (then `quiet` is false). */
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Follows a logfile from an offset: `poll()` returns what was appended since (bounded), `waitFor()`
 * polls until a regex matches, `waitQuiet()` until the file stops growing. A missing file reads as empty
 * (QEMU creates it when it starts). Truncation and replacement restart at 0 and count in `resets`.
 */
export class LogfileTail {
  readonly path: string;
  readonly #maxReadBytes: number;
  readonly #pollMs: number;
  readonly #clock: Clock;
  #offset: number;
  #identity: string | undefined;
  #resets = 0;

  constructor(path: string, options: LogfileTailOptions = {}) {
    if (typeof path !== 'string' || path.length === 0) {
      throw new TypeError(`LogfileTail: path must be a non-empty string, got ${JSON.stringify(path)}`);
    }
    this.path = path;
    this.#offset = options.from ?? 0;
    checkOffset('from', this.#offset);
    this.#maxReadBytes = options.maxReadBytes ?? DEFAULT_MAX_READ_BYTES;
    if (!Number.isSafeInteger(this.#maxReadBytes) || this.#maxReadBytes < 1) {
      throw new RangeError(`LogfileTail: maxReadBytes must be an integer >= 1, got ${String(this.#maxReadBytes)}`);
    }
    this.#pollMs = options.pollMs ?? 50;
    if (!(this.#pollMs > 0)) throw new RangeError(`LogfileTail: pollMs must be > 0, got ${String(this.#pollMs)}`);
    this.#clock = options.clock ?? realClock;
  }

  /** A tail starting at the file's current end (0 when it does not exist yet). */
  static async atEnd(path: string, options: Omit<LogfileTailOptions, 'from'> = {}): Promise<LogfileTail> {
    return new LogfileTail(path, { ...options, from: await logfileSize(path) });
  }

  /** Where the next `poll()` reads from. */
  get offset(): number {
    return this.#offset;
  }

  /** How many times the file was found truncated or replaced. */
  get resets(): number {
    return this.#resets;
  }

  /** What was appended since the last poll, at most `maxReadBytes` (poll again for the rest). */
  async poll(): Promise<LogRead> {
    let read: LogRead;
    try {
      read = await readLogfile(this.path, {
        from: this.#offset,
        maxBytes: this.#maxReadBytes,
        keep: 'head',
        ...(this.#identity === undefined ? {} : { identity: this.#identity }),
      });
    } catch (error) {
      if (isEnoent(error)) {
        return { data: Buffer.alloc(0), start: this.#offset, end: this.#offset, size: 0, reset: false, skipped: 0, remaining: 0, identity: '' };
      }
      throw error;
    }
    if (read.reset) this.#resets += 1;
    this.#identity = read.identity;
    this.#offset = read.end;
    return read;
  }

  /**
   * Polls until `re` matches the text appended since the offset. Rejects with `ConsoleTimeoutError`,
   * `ConsoleAbortError`, or `ConsoleError` when the file cannot be read.
   */
  async waitFor(re: RegExp, options: WaitForOptions): Promise<LogMatch> {
    const once = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
    const windowChars = options.windowChars ?? 64 * 1024;
    const started = this.#clock.now();
    let decoder = new TextDecoder('utf-8', { fatal: false });
    let text = '';
    for (;;) {
      checkAborted(options.signal, 'waiting for the console');
      // Drain everything available before sleeping: a burst larger than one read is matched at once.
      for (;;) {
        const read = await this.poll();
        if (read.reset) {
          decoder = new TextDecoder('utf-8', { fatal: false });
          text = '';
        }
        if (read.data.length > 0) {
          text += decoder.decode(read.data, { stream: true });
          if (text.length > windowChars) text = text.slice(text.length - windowChars);
          const match = once.exec(text);
          if (match !== null) return { match, end: this.#offset };
        }
        // A file growing faster than it is read must not hold this loop past the deadline.
        if (read.remaining === 0 || this.#clock.now() - started >= options.timeoutMs) break;
      }
      const left = options.timeoutMs - (this.#clock.now() - started);
      if (left <= 0) throw new ConsoleTimeoutError(`waiting for ${String(re)} in ${this.path}`, options.timeoutMs);
      await this.#sleep(Math.min(this.#pollMs, left), options.signal, 'waiting for the console');
    }
  }

  /**
   * Waits until the file has not grown for `quietMs` (output has settled), at most `timeoutMs`.
   * Does not move the offset. Rejects only with `ConsoleAbortError` (or `ConsoleError` for an unreadable file).
   */
  async waitQuiet(options: WaitQuietOptions): Promise<{ quiet: boolean; size: number; waitedMs: number }> {
    const started = this.#clock.now();
    let size = await logfileSize(this.path);
    let changedAt = started;
    for (;;) {
      const now = this.#clock.now();
      if (now - changedAt >= options.quietMs) return { quiet: true, size, waitedMs: now - started };
      if (now - started >= options.timeoutMs) return { quiet: false, size, waitedMs: now - started };
      const nextCheck = Math.min(this.#pollMs, options.quietMs - (now - changedAt), options.timeoutMs - (now - started));
      await this.#sleep(Math.max(1, nextCheck), options.signal, 'waiting for the console to settle');
      const next = await logfileSize(this.path);
      if (next !== size) {
        size = next;
        changedAt = this.#clock.now();
      }
    }
  }

  async #sleep(ms: number, signal: AbortSignal | undefined, operation: string): Promise<void> {
    try {
      await this.#clock.sleep(ms, signal);
    } catch (reason) {
      throw new ConsoleAbortError(operation, reason);
    }
  }
}

function checkAborted(signal: AbortSignal | undefined, operation: string): void {
  if (signal?.aborted) throw new ConsoleAbortError(operation, signal.reason);
}

function checkOffset(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be an integer >= 0, got ${String(value)}`);
}

function isEnoent(error: unknown): boolean {
  return error instanceof ConsoleError && (error.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
