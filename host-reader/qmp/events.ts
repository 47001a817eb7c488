import { armGuard, checkTimeoutMs, systemTimers, type Timers } from './deadline.js';
import { QmpAbortError, QmpDisconnectedError, QmpTimeoutError } from './errors.js';

/**
 * QMP events, the top layer of the client. Every listener owns a bounded queue: a listener that does not
 * keep up loses its oldest events (counted in `dropped`), never the connection's memory and never the
 * events of other listeners.
 */

/** An asynchronous event from QEMU (`{"event": "STOP", "data": {...}, "timestamp": {...}}`). */
export interface QmpEvent {
  readonly event: string;
  /** `{}` when QEMU sent no `data` (STOP, RESUME...). */
  readonly data: Readonly<Record<string, unknown>>;
  /** When QEMU emitted it (host wall clock), if QEMU said. */
  readonly timestamp: { readonly seconds: number; readonly microseconds: number } | undefined;
}

/** One event name, several, or `'*'` for all. */
export type QmpEventNames = string | readonly string[];

export interface QmpEventListenerOptions {
  /** Events kept while nobody reads; the oldest is dropped beyond this. Default 256. */
  maxQueue?: number;
  /** Only events for which this returns true are queued. A filter that throws ends the listener. */
  filter?: (event: QmpEvent) => boolean;
  /** Closing the signal closes the listener. */
  signal?: AbortSignal;
}

export interface QmpEventGetOptions {
  /** Default: no timeout. */
  timeoutMs?: number;
  signal?: AbortSignal;
  timers?: Timers;
}

export const DEFAULT_EVENT_QUEUE = 256;

type Waiter = {
  resolve: (event: QmpEvent) => void;
  reject: (error: unknown) => void;
  dispose: () => void;
};

/** How a listener ended: closed by its owner (or its signal), or by the end of the connection. */
type ListenerEnd =
  | { kind: 'closed'; reason: unknown }
  | { kind: 'disconnected'; error: QmpDisconnectedError; clean: boolean };

/**
 * A scoped subscription with its own queue. Read it with `get()` or `for await`; `close()` it when done.
 *
 * Iteration ends normally after `close()`, after its signal aborts, and after the client is closed with
 * `close()`; it throws the `QmpDisconnectedError` when the connection was lost. Events that arrived
 * before the connection ended are delivered first.
 */
export class QmpEventListener implements AsyncIterable<QmpEvent> {
  /** The names this listener takes, or `'*'`. */
  readonly names: ReadonlySet<string> | '*';
  readonly maxQueue: number;
  readonly #filter: ((event: QmpEvent) => boolean) | undefined;
  readonly #queue: QmpEvent[] = [];
  readonly #waiters = new Set<Waiter>();
  readonly #onClose: (listener: QmpEventListener) => void;
  readonly #signal: AbortSignal | undefined;
  #dropped = 0;
  #end: ListenerEnd | undefined;

  /** Use `QmpClient.events()`; listeners are created by an `EventHub`. */
  constructor(
    names: QmpEventNames,
    options: QmpEventListenerOptions,
    onClose: (listener: QmpEventListener) => void,
  ) {
    this.names = normalizeNames(names);
    const maxQueue = options.maxQueue ?? DEFAULT_EVENT_QUEUE;
    if (!Number.isSafeInteger(maxQueue) || maxQueue < 1) {
      throw new RangeError(`maxQueue must be a positive integer, got ${String(maxQueue)}`);
    }
    if (options.filter !== undefined && typeof options.filter !== 'function') {
      throw new TypeError(`filter must be a function, got ${typeof options.filter}`);
    }
    this.maxQueue = maxQueue;
    this.#filter = options.filter;
    this.#onClose = onClose;
    this.#signal = options.signal;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    if (this.#signal?.aborted) this.#onAbort();
  }

  /** Events thrown away because the queue was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Events waiting to be read. */
  get queued(): number {
    return this.#queue.length;
  }

  /** True once closed or once its connection ended. */
  get ended(): boolean {
    return this.#end !== undefined;
  }

  /** True if this listener wants `event` (name match and filter). Ends the listener if the filter throws. */
  accepts(event: QmpEvent): boolean {
    if (this.#end !== undefined) return false;
    if (this.names !== '*' && !this.names.has(event.event)) return false;
    if (this.#filter === undefined) return true;
    try {
      return this.#filter(event) === true;
    } catch (error) {
      this.#closeWith({ kind: 'closed', reason: error });
      return false;
    }
  }

  /** Delivers an event that `accepts()` took: to a waiting reader, else into the queue. */
  push(event: QmpEvent): void {
    if (this.#end !== undefined) return;
    const waiter = this.#waiters.values().next();
    if (!waiter.done) {
      this.#waiters.delete(waiter.value);
      waiter.value.dispose();
      waiter.value.resolve(event);
      return;
    }
    if (this.#queue.length >= this.maxQueue) {
      this.#queue.shift();
      this.#dropped += 1;
    }
    this.#queue.push(event);
  }

  /**
   * The next event. Rejects with `QmpTimeoutError` / `QmpAbortError` (timeout, signal), `QmpAbortError`
   * once the listener is closed, or `QmpDisconnectedError` once its connection ended and the queue is empty.
   */
  get(options: QmpEventGetOptions = {}): Promise<QmpEvent> {
    const timeoutMs = checkTimeoutMs('timeoutMs', options.timeoutMs ?? Infinity);
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#end !== undefined) return Promise.reject(this.#endError(this.#end));
    const operation = this.#operation();
    return new Promise<QmpEvent>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, dispose: () => undefined };
      this.#waiters.add(waiter);
      waiter.dispose = armGuard({
        timeoutMs,
        signal: options.signal,
        timers: options.timers ?? systemTimers,
        onTimeout: () => {
          this.#waiters.delete(waiter);
          reject(new QmpTimeoutError({ operation, timeoutMs }));
        },
        onAbort: (reason) => {
          this.#waiters.delete(waiter);
          reject(new QmpAbortError(operation, reason));
        },
      });
    });
  }

  /** Leaving the loop (`break`, `return`, a throw) closes the listener, like Node's `events.on()`. */
  async *[Symbol.asyncIterator](): AsyncIterator<QmpEvent> {
    try {
      for (;;) {
        const end = this.#end;
        if (this.#queue.length === 0 && end !== undefined) {
          if (end.kind === 'disconnected' && !end.clean) throw end.error;
          return;
        }
        try {
          yield await this.get();
        } catch (error) {
          // Closed or disconnected while waiting: the loop head decides between `return` and `throw`.
          if (this.#end === undefined) throw error;
        }
      }
    } finally {
      this.close();
    }
  }

  /** Stops this listener: it leaves its client, drops its queue, and pending `get()`s reject. Idempotent. */
  close(reason?: unknown): void {
    this.#closeWith({ kind: 'closed', reason });
  }

  /**
   * Called by the hub when the connection ends. `clean` (the client was closed on purpose) ends iteration
   * normally; otherwise iteration throws `error` after the queue drains.
   */
  endConnection(error: QmpDisconnectedError, clean: boolean): void {
    this.#closeWith({ kind: 'disconnected', error, clean });
  }

  readonly #onAbort = (): void => {
    this.#closeWith({ kind: 'closed', reason: this.#signal?.reason });
  };

  #closeWith(end: ListenerEnd): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    if (end.kind === 'closed') this.#queue.length = 0;
    const error = this.#endError(end);
    for (const waiter of this.#waiters) {
      waiter.dispose();
      waiter.reject(error);
    }
    this.#waiters.clear();
    this.#onClose(this);
  }

  #endError(end: ListenerEnd): Error {
    return end.kind === 'disconnected' ? end.error : new QmpAbortError(this.#operation(), end.reason);
  }

  #operation(): string {
    return `event ${this.names === '*' ? '*' : [...this.names].join('|')}`;
  }
}

/** The set of listeners of one client. */
export class EventHub {
  readonly #listeners = new Set<QmpEventListener>();
  #ended: { error: QmpDisconnectedError; clean: boolean } | undefined;

  /** Registers a new listener at once: it sees every event dispatched after this returns. */
  listen(names: QmpEventNames, options: QmpEventListenerOptions = {}): QmpEventListener {
    const listener = new QmpEventListener(names, options, (l) => this.#listeners.delete(l));
    if (listener.ended) return listener;
    if (this.#ended !== undefined) {
      listener.endConnection(this.#ended.error, this.#ended.clean);
      return listener;
    }
    this.#listeners.add(listener);
    return listener;
  }

  dispatch(event: QmpEvent): void {
    // Copy: a filter that throws removes its listener during the loop.
    for (const listener of [...this.#listeners]) {
      if (listener.accepts(event)) listener.push(event);
    }
  }

  /** The connection ended: every listener, present and future, ends with `error`. */
  end(error: QmpDisconnectedError, clean: boolean): void {
    if (this.#ended !== undefined) return;
    this.#ended = { error, clean };
    for (const listener of [...this.#listeners]) listener.endConnection(error, clean);
    this.#listeners.clear();
  }

  get size(): number {
    return this.#listeners.size;
  }
}

function normalizeNames(names: QmpEventNames): ReadonlySet<string> | '*' {
  const list: readonly unknown[] = typeof names === 'string' ? [names] : names;
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(`event names must be a non-empty string or array of strings, got ${JSON.stringify(names)}`);
  }
  for (const name of list) {
    if (typeof name !== 'string' || name.length === 0) {
      throw new TypeError(`event name must be a non-empty string, got ${JSON.stringify(name)}`);
    }
  }
  const set = new Set(list as readonly string[]);
  return set.has('*') ? '*' : set;
}
