import type { Clock } from '../util/clock.js';

/**
 * One timer for many workers: callbacks due at monotonic times, run in time order from a single
 * pending `clock.sleep`. A monitor watching 1000 VMs at 1 Hz would otherwise hold 1000 timers, each
 * with its promise and abort listener, and wake 1000 times a second (bench/fleet). Wake-ups are at
 * least `minGapMs` apart, so callbacks due close together run together, up to `minGapMs` late; a
 * callback never runs early.
 */

interface Entry {
  due: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** What `at` returns: pass it to `cancel`. */
export type TickerEntry = object;

export class Ticker {
  readonly #heap: Entry[] = [];
  #seq = 0;
  /** When the pending sleep ends (Infinity: none pending). */
  #wakeAt = Infinity;
  #sleep: AbortController | undefined;
  #lastWake = -Infinity;

  constructor(
    private readonly clock: Clock,
    /** Least time between two wake-ups, ms. Default 10. */
    readonly minGapMs = 10,
    /** Told of a callback that threw (it is a bug in the callback; the others still run). */
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {
    if (!(minGapMs >= 0 && Number.isFinite(minGapMs))) throw new RangeError(`minGapMs: a finite number >= 0 (got ${String(minGapMs)})`);
  }

  /** Entries not yet run or cancelled (tests). */
  get size(): number {
    return this.#heap.filter((e) => !e.cancelled).length;
  }

  /** Run `fn` once, at monotonic time `due` or a little later. */
  at(due: number, fn: () => void): TickerEntry {
    const e: Entry = { due, seq: this.#seq++, fn, cancelled: false };
    this.#push(e);
    this.#arm();
    return e;
  }

  cancel(entry: TickerEntry): void {
    (entry as Entry).cancelled = true;
  }

  /** Sleep until the earliest entry (not before lastWake + minGap); rearm when that moved earlier. */
  #arm(): void {
    this.#dropCancelled();
    const top = this.#heap[0];
    if (top === undefined) {
      this.#sleep?.abort();
      this.#sleep = undefined;
      this.#wakeAt = Infinity;
      return;
    }
    const wakeAt = Math.max(top.due, this.#lastWake + this.minGapMs);
    if (wakeAt >= this.#wakeAt) return; // the pending sleep ends in time
    this.#sleep?.abort();
    const ac = new AbortController();
    this.#sleep = ac;
    this.#wakeAt = wakeAt;
    this.clock.sleep(Math.max(0, wakeAt - this.clock.now()), ac.signal).then(
      () => {
        if (this.#sleep === ac) this.#fire();
      },
      () => undefined, // rearmed
    );
  }

  #fire(): void {
    this.#sleep = undefined;
    this.#wakeAt = Infinity;
    const now = this.clock.now();
    this.#lastWake = now;
    // Only what was due when this wake-up began: a callback that schedules itself again in the past
    // runs at the next wake-up, not in a loop here.
    const seqLimit = this.#seq;
    const run: Entry[] = [];
    for (let top = this.#heap[0]; top !== undefined && (top.cancelled || (top.due <= now && top.seq < seqLimit)); top = this.#heap[0]) {
      this.#pop();
      if (!top.cancelled) run.push(top);
    }
    for (const e of run) {
      try {
        e.fn();
      } catch (err) {
        this.onError(err);
      }
    }
    this.#arm();
  }

  #dropCancelled(): void {
    while (this.#heap[0]?.cancelled === true) this.#pop();
  }

  // A binary min-heap on (due, seq).
  #less(a: Entry, b: Entry): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq);
  }

  #push(e: Entry): void {
    const h = this.#heap;
    h.push(e);
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!this.#less(h[i] as Entry, h[p] as Entry)) break;
      // A temporary, not a destructuring swap: that allocates an array per step (bench/fleet).
      const t = h[i] as Entry;
      h[i] = h[p] as Entry;
      h[p] = t;
      i = p;
    }
  }

  #pop(): Entry | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l] as Entry, h[m] as Entry)) m = l;
        if (r < h.length && this.#less(h[r] as Entry, h[m] as Entry)) m = r;
        if (m === i) break;
        const t = h[i] as Entry;
        h[i] = h[m] as Entry;
        h[m] = t;
        i = m;
      }
    }
    return top;
  }
}
