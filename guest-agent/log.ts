/**
 * The agent's own messages (not the marks): one line each, `eve-diag-agent: <message>`, to stderr by
 * default (the journal under systemd). A duty that keeps failing the same way says so once: `problem`
 * logs a message only when it differs from the last one logged under the same key, and `resolved`
 * logs the recovery once. Keys are fixed strings chosen by the code, so the map stays bounded.
 */
export class Log {
  readonly #problems = new Map<string, string>();

  constructor(private readonly write: (line: string) => void) {}

  info(message: string): void {
    this.write(message);
  }

  /** Log `message` unless it is the problem already reported under `key`. Returns whether it logged. */
  problem(key: string, message: string): boolean {
    if (this.#problems.get(key) === message) return false;
    this.#problems.set(key, message);
    this.write(message);
    return true;
  }

  /** Clear the problem under `key`; log `message` if there was one. */
  resolved(key: string, message: string): void {
    if (this.#problems.delete(key)) this.write(message);
  }

  /** Whether a problem is reported under `key`. */
  has(key: string): boolean {
    return this.#problems.has(key);
  }
}

/** Clamp a message from the outside world (an errno text, a file) to something safe to log on one line. */
export function oneLine(text: string, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const s = text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** The errno code of an error, or its message. */
export function errText(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown };
  if (typeof err?.code === 'string') return err.code;
  return oneLine(typeof err?.message === 'string' ? err.message : String(e));
}
