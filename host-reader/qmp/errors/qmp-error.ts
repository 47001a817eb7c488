/**
 * Root of every runtime failure raised by the QMP client. Catch `QmpError` to handle them all;
 * programmer errors (a bad argument) are plain `TypeError`/`RangeError` thrown at once instead.
 */
export class QmpError extends Error {
  override name = 'QmpError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Longest excerpt of peer data copied into an error (messages end up in logs and reports). */
export const EXCERPT_MAX_CHARS = 160;

/**
 * A printable, bounded excerpt of untrusted text: at most `EXCERPT_MAX_CHARS` characters, JSON-quoted
 * so that control characters and escape sequences cannot reach a terminal as they are.
 */
export function excerptOf(text: string): string {
  const cut = text.length > EXCERPT_MAX_CHARS ? `${text.slice(0, EXCERPT_MAX_CHARS)}...` : text;
  return JSON.stringify(cut);
}
