/**
 * Timeouts and AbortSignals for one pending operation, with one `dispose()` that clears both on every
 * path. The clock is injected (`Timers`) so that scheduling can be tested without real time.
 */

/** The part of the timer API the QMP client uses. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemTimers: Timers = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Node clamps longer delays to 1 ms (with a warning), so anything longer means "no timeout".
 * (Node docs, `setTimeout`: "When delay is larger than 2147483647 ... the delay will be set to 1.")
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Checks a `timeoutMs` option: a number >= 0; `Infinity` means no timeout. Throws at once otherwise. */
export function checkTimeoutMs(name: string, value: number): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new RangeError(`${name} must be a number >= 0 (Infinity for none), got ${String(value)}`);
  }
  return value;
}

export interface GuardOptions {
  timeoutMs: number;
  signal: AbortSignal | undefined;
  timers: Timers;
  onTimeout: () => void;
  onAbort: (reason: unknown) => void;
}

/**
 * Arms a timer and an abort listener; the first to fire calls its callback (once) and disarms the
 * other. If `signal` is already aborted, `onAbort` runs synchronously before this returns.
 * Returns `dispose`, which disarms both; it is idempotent and must be called when the operation ends.
 */
export function armGuard(options: GuardOptions): () => void {
  const { timeoutMs, signal, timers } = options;
  let handle: unknown;
  let armed = true;
  const dispose = (): void => {
    if (!armed) return;
    armed = false;
    if (handle !== undefined) timers.clearTimeout(handle);
    signal?.removeEventListener('abort', onAbort);
  };
  const onAbort = (): void => {
    if (!armed) return;
    dispose();
    options.onAbort(signal?.reason);
  };
  if (signal?.aborted) {
    onAbort();
    return dispose;
  }
  signal?.addEventListener('abort', onAbort, { once: true });
  if (Number.isFinite(timeoutMs) && timeoutMs <= MAX_TIMER_MS) {
    handle = timers.setTimeout(() => {
      if (!armed) return;
      dispose();
      options.onTimeout();
    }, timeoutMs);
  }
  return dispose;
}
