/* eslint-disable no-control-regex -- matching control characters is what this module is for */
/**
 * Console text is hostile: the guest (or anything it runs) decides every byte. Before captured text is
 * stored in a report, shown on a terminal or put in a log line, terminal escape sequences and control
 * characters go, and its size is bounded.
 */

/** Default bound of `sanitizeText`, in UTF-8 bytes of the result. */
export const DEFAULT_SANITIZE_MAX_BYTES = 1024 * 1024;

export interface SanitizeOptions {
  /** Longest result in UTF-8 bytes. Default `DEFAULT_SANITIZE_MAX_BYTES`. */
  maxBytes?: number;
  /** Which end to keep when the text is longer: `head` (default) or `tail` (the end of a log). */
  keep?: 'head' | 'tail';
}

export interface Sanitized {
  text: string;
  /** Part of the input was cut off to respect `maxBytes`. */
  truncated: boolean;
}

// ECMA-48: CSI = ESC [ (or the 8-bit U+009B), parameter bytes 0x30-0x3F, intermediate bytes 0x20-0x2F,
// one final byte 0x40-0x7E. Lengths are bounded so that a stray introducer never swallows a whole log.
const CSI = /(?:\x1b\[|\u009b)[0-?]{0,64}[ -/]{0,8}[@-~]/g;
// OSC (ESC ], U+009D) and the other control strings (DCS ESC P, SOS ESC X, PM ESC ^, APC ESC _), ended by
// ST (ESC \ or U+009C) or, for OSC, by BEL as xterm accepts.
const CONTROL_STRING = /(?:\x1b[\]PX^_]|[\u0090\u0098\u009d\u009e\u009f])[^\x07\x1b\u009c]{0,4096}(?:\x07|\x1b\\|\u009c)/g;
// Any other escape sequence: ESC, intermediate bytes 0x20-0x2F, one final byte 0x30-0x7E (ESC ( B, ESC 7, ESC c).
const ESCAPE = /\x1b[ -/]{0,8}[0-~]/g;
// CR LF (and the CR CR LF some ttys produce) is a line end; a lone CR returned to the line start: a new line.
const CRLF = /\r+\n/g;
const CR = /\r/g;
// C0 controls but TAB and LF, DEL, C1 controls, and the Unicode bidi overrides and isolates (which can make a
// line display differently from what it holds, CVE-2021-42574).
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Removes terminal escape sequences (CSI, OSC and the other control strings, two-byte escapes) and control
 * characters, keeping `\n` and `\t`; CR LF becomes LF and a lone CR a LF. Bytes are decoded as UTF-8
 * (invalid sequences become U+FFFD). The result is at most `maxBytes` UTF-8 bytes, cut on a character
 * boundary at the end `keep` says; the work done is bounded by `maxBytes` too, whatever the input size.
 * Idempotent: sanitizing sanitized text changes nothing.
 */
export function sanitizeText(input: string | Uint8Array, options: SanitizeOptions = {}): Sanitized {
  const maxBytes = options.maxBytes ?? DEFAULT_SANITIZE_MAX_BYTES;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(`sanitizeText: maxBytes must be an integer >= 0, got ${String(maxBytes)}`);
  }
  const keep = options.keep ?? 'head';
  if (keep !== 'head' && keep !== 'tail') throw new RangeError(`sanitizeText: keep must be head or tail, got ${String(keep)}`);

  // Bound the work: removing escapes only shrinks text, so twice the budget (plus room for one long
  // escape sequence) is plenty to fill the result; what lies beyond is cut before any regex runs.
  const window = maxBytes * 2 + 4096;
  let truncated = false;
  let text: string;
  if (typeof input === 'string') {
    if (input.length > window) {
      truncated = true;
      input = keep === 'head' ? input.slice(0, window) : input.slice(input.length - window);
    }
    text = input;
  } else {
    let bytes = input;
    if (bytes.length > window) {
      truncated = true;
      bytes = keep === 'head' ? bytes.subarray(0, window) : skipContinuationBytes(bytes.subarray(bytes.length - window));
    }
    text = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(bytes);
  }

  if (truncated && keep === 'tail') text = dropPartialFirstLine(text);
  text = text
    .replace(CONTROL_STRING, '')
    .replace(CSI, '')
    .replace(ESCAPE, '')
    .replace(CRLF, '\n')
    .replace(CR, '\n')
    .replace(CONTROL, '');

  const cut = cutUtf8(text, maxBytes, keep);
  return { text: cut, truncated: truncated || cut.length !== text.length };
}

/**
 * One line for summaries and log messages: sanitized, every run of whitespace (newlines included) made
 * one space, at most `maxChars` characters (an ellipsis marks a cut).
 */
export function sanitizeLine(input: string, maxChars = 300): string {
  if (!Number.isSafeInteger(maxChars) || maxChars < 1) {
    throw new RangeError(`sanitizeLine: maxChars must be an integer >= 1, got ${String(maxChars)}`);
  }
  const { text } = sanitizeText(input, { maxBytes: maxChars * 4 });
  const line = text.replace(/\s+/g, ' ').trim();
  if (line.length <= maxChars) return line;
  // Do not split a surrogate pair.
  let end = maxChars - 1;
  if (end > 0 && isHighSurrogate(line.charCodeAt(end - 1))) end -= 1;
  return `${line.slice(0, end)}…`;
}

/**
 * A tail cut can land inside an escape sequence, whose remainder would then read as text (`[0m`): the
 * cut's first, partial line is dropped when a line end follows soon enough.
 */
function dropPartialFirstLine(text: string): string {
  const nl = text.indexOf('\n');
  return nl !== -1 && nl < 4096 ? text.slice(nl + 1) : text;
}

/** Drops the UTF-8 continuation bytes (10xxxxxx) a cut left at the start, at most 3 (one character). */
function skipContinuationBytes(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < 3 && i < bytes.length && ((bytes[i] ?? 0) & 0xc0) === 0x80) i++;
  return bytes.subarray(i);
}

/** `text` cut to at most `maxBytes` UTF-8 bytes, on a character boundary, keeping the head or the tail. */
function cutUtf8(text: string, maxBytes: number, keep: 'head' | 'tail'): string {
  // Every UTF-16 code unit is at most 3 UTF-8 bytes: short strings need no encoding.
  if (text.length * 3 <= maxBytes) return text;
  const encoded = Buffer.from(text, 'utf8');
  if (encoded.length <= maxBytes) return text;
  if (keep === 'head') {
    let end = maxBytes;
    while (end > 0 && ((encoded[end] ?? 0) & 0xc0) === 0x80) end--; // do not split a character
    return encoded.subarray(0, end).toString('utf8');
  }
  let start = encoded.length - maxBytes;
  while (start < encoded.length && ((encoded[start] ?? 0) & 0xc0) === 0x80) start++;
  return encoded.subarray(start).toString('utf8');
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
