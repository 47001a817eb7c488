/** Time, injected where scheduling happens (the monitor's workers, the console helpers) so tests need no real time. */
export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** A clock that only moves when told to; sleepers wake in time order. Ships beside the interface. */
export class FakeClock implements Clock {
  #now = 0;
  #sleepers: Array<{ at: number; resolve: () => void; reject: (e: unknown) => void; signal?: AbortSignal }> = [];

  now(): number {
    return this.#now;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.#sleepers = this.#sleepers.filter((x) => x !== s);
        reject(signal?.reason);
      };
      // Woken: the abort listener goes too (a long test's signal would collect one per sleep).
      const s = { at: this.#now + Math.max(0, ms), resolve: () => (signal?.removeEventListener('abort', onAbort), resolve()), reject, signal };
      this.#sleepers.push(s);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Number of pending sleeps. */
  get pending(): number {
    return this.#sleepers.length;
  }

  /** Move time forward by `ms`, waking every sleeper due, in order, letting each one's continuation run. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      this.#sleepers.sort((a, b) => a.at - b.at);
      const next = this.#sleepers[0];
      if (!next || next.at > target) break;
      this.#sleepers.shift();
      this.#now = next.at;
      next.resolve();
      // Let the woken task run until it sleeps again or finishes.
      for (let i = 0; i < 20; i++) await Promise.resolve();
    }
    this.#now = target;
  }
}
