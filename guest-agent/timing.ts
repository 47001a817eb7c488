/**
 * Time, injected: the duties never call the clock or timers themselves. Production uses `systemClock`;
 * tests use a fake clock they advance by hand (test/guest-agent/fake-clock.ts).
 */
export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/**
 * Runs `step` every `periodMs`, never two at once. Ticks are due at start + k * period; a step that
 * overruns makes the ticker skip the ticks it missed (no burst to catch up), so a stuck step never
 * queues work. `step` errors are passed to `onError` and the ticker goes on.
 */
export class Ticker {
  #timer: unknown;
  #running = false;
  #due = 0;

  constructor(
    private readonly clock: Clock,
    readonly periodMs: number,
    private readonly step: (now: number) => unknown,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {
    if (!(Number.isFinite(periodMs) && periodMs > 0)) throw new RangeError(`periodMs: a positive number (got ${periodMs})`);
  }

  get running(): boolean {
    return this.#running;
  }

  /** Start; the first step runs after `initialDelayMs` (default 0). */
  start(initialDelayMs = 0): void {
    if (this.#running) return;
    this.#running = true;
    this.#due = this.clock.now() + initialDelayMs;
    this.#arm();
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    if (!this.#running) return;
    const wait = Math.max(0, this.#due - this.clock.now());
    this.#timer = this.clock.setTimeout(() => {
      this.#tick().catch((e: unknown) => this.onError(e));
    }, wait);
  }

  async #tick(): Promise<void> {
    this.#timer = undefined;
    if (!this.#running) return;
    try {
      await this.step(this.clock.now());
    } catch (e) {
      this.onError(e);
    }
    const now = this.clock.now();
    this.#due += this.periodMs;
    // Overran: the next tick is the first one still in the future.
    if (this.#due <= now) this.#due += Math.ceil((now - this.#due) / this.periodMs) * this.periodMs || this.periodMs;
    this.#arm();
  }
}
