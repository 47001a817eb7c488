import { connect, type Socket } from 'node:net';
import type { ProbeResult } from '../types.js';

/**
 * Helpers every probe shares: one deadline (caller's signal + the probe's own timeout) with its timer
 * cleared on every path, and the three result shapes. A probe returns `failure` for a dead or slow
 * target, `unknown` when it cannot tell (missing transport, paused VM), and throws only for bugs.
 */

export interface Deadline {
  /** Aborts when the caller's signal aborts or the timeout passes. */
  readonly signal: AbortSignal;
  /** True once the timeout (not the caller) aborted `signal`. */
  readonly expired: boolean;
  /** Milliseconds left before the probe gives up (>= 0). */
  remainingMs(): number;
  /** Clears the timer and the listener; idempotent. Call it in `finally`. */
  dispose(): void;
}

export class ProbeTimeoutError extends Error {
  override name = 'ProbeTimeoutError';
  constructor(readonly timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms`);
  }
}

/**
 * How much earlier than `timeoutMs` a probe gives up: the worker (worker.ts runProbe) replaces a result
 * that arrives at its own deadline with a bare "timed out", so a probe that stops just before keeps
 * its evidence (what the console printed, which step hung).
 */
export function deadlineMargin(timeoutMs: number): number {
  return Math.min(50, Math.floor(timeoutMs / 20));
}

/** The caller's signal plus the probe's own timeout (`deadlineMargin` early). */
export function deadline(parent: AbortSignal, timeoutMs: number, now: () => number = () => performance.now()): Deadline {
  if (!(timeoutMs >= 0)) throw new RangeError(`timeoutMs: a number >= 0 (got ${String(timeoutMs)})`);
  const ac = new AbortController();
  const start = now();
  const limitMs = timeoutMs - deadlineMargin(timeoutMs);
  let expired = false;
  const onAbort = () => ac.abort(parent.reason);
  const timer = setTimeout(() => {
    expired = true;
    ac.abort(new ProbeTimeoutError(timeoutMs));
  }, limitMs);
  if (parent.aborted) onAbort();
  else parent.addEventListener('abort', onAbort, { once: true });
  let disposed = false;
  return {
    signal: ac.signal,
    get expired() {
      return expired;
    },
    remainingMs: () => Math.max(0, limitMs - (now() - start)),
    dispose() {
      if (disposed) return;
      disposed = true;
      clearTimeout(timer);
      parent.removeEventListener('abort', onAbort);
    },
  };
}

/** `promise`, or a rejection with `signal.reason` as soon as `signal` aborts. */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export const success = (detail: string, evidence?: Record<string, unknown>): ProbeResult =>
  evidence === undefined ? { outcome: 'success', detail } : { outcome: 'success', detail, evidence };
export const failure = (detail: string, evidence?: Record<string, unknown>): ProbeResult =>
  evidence === undefined ? { outcome: 'failure', detail } : { outcome: 'failure', detail, evidence };
export const unknown = (detail: string, evidence?: Record<string, unknown>): ProbeResult =>
  evidence === undefined ? { outcome: 'unknown', detail } : { outcome: 'unknown', detail, evidence };

/** The result for a probe whose deadline fired (the caller's abort is reported as such). */
export function deadlineResult(d: Deadline, timeoutMs: number, what: string, evidence?: Record<string, unknown>): ProbeResult {
  return d.expired
    ? failure(`${what}: timed out after ${timeoutMs} ms`, { ...evidence, timedOut: true })
    : unknown(`${what}: aborted`, { ...evidence, aborted: true });
}

/** A short message for an error from the target side, with its errno code when there is one. */
export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return code !== undefined && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}

/** The errno code of `e` or of its cause chain (QmpConnectError keeps the socket error as cause). */
export function errnoCode(e: unknown): string | undefined {
  for (let x: unknown = e, i = 0; x instanceof Error && i < 8; x = x.cause, i++) {
    const code = (x as NodeJS.ErrnoException).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Compiles a user regex; throws a RangeError naming the field (config validation catches it first). */
export function compileRegex(field: string, source: string, flags = ''): RegExp {
  try {
    return new RegExp(source, flags);
  } catch (e) {
    throw new RangeError(`${field}: not a valid regular expression (${(e as Error).message}): ${JSON.stringify(source)}`);
  }
}

/** Keeps the last `max` characters of a growing text. */
export function tail(text: string, max: number): string {
  return text.length <= max ? text : text.slice(text.length - max);
}

/**
 * Waiters on a stream the probe reads (a console conversation, a QGA channel): `until(take)` resolves
 * with the first value `take` returns, rejects when the stream ends (`ended()` gives the error) or the
 * signal aborts; `wake()` re-checks every waiter after new data or the end.
 */
/**
 * Connects a socket (a unix path or TCP), rejecting with `signal.reason` when it aborts first (the
 * half-open socket is destroyed). The socket resolves with no 'error' listener of its own.
 */
export function connectSocket(to: { path: string } | { host: string; port: number }, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(to);
    const onAbort = () => {
      s.destroy();
      reject(signal.reason);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    s.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      signal.removeEventListener('abort', onAbort);
      s.destroy();
      reject(e);
    });
  });
}

export class Waiters {
  readonly #wakers = new Set<() => void>();

  constructor(private readonly ended: () => Error | undefined) {}

  until<T>(signal: AbortSignal, take: () => T | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        const v = take();
        if (v !== undefined) {
          done();
          resolve(v);
          return;
        }
        const end = this.ended();
        if (end !== undefined) {
          done();
          reject(end);
        }
      };
      const onAbort = () => {
        done();
        reject(signal.reason);
      };
      const done = () => {
        this.#wakers.delete(check);
        signal.removeEventListener('abort', onAbort);
      };
      if (signal.aborted) return reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      this.#wakers.add(check);
      check();
    });
  }

  wake(): void {
    for (const w of [...this.#wakers]) w();
  }
}
