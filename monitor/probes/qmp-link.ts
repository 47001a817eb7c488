import { QmpClient } from '../../host-reader/qmp/index.js';
import { raceSignal } from './common.js';

/**
 * One shared, lazily (re)connected QMP connection per socket path.
 *
 * QEMU's QMP socket is a chardev socket server: it serves ONE client at a time. A second client's
 * connect() succeeds (the kernel queues it in the backlog) but gets no greeting until the first one
 * disconnects (checked with QEMU 7.2: the second greeting came when the first client closed). So the
 * probes of one VM (qmp-status, kernel and agent heartbeats) must share one connection; `QmpLinks` is
 * that registry. A link connects on first use, and again on the next use after the connection broke.
 *
 * On an EVE node EVE's own domainmgr talks to `<dom>/qmp` (connecting per command) and holds
 * `<dom>/listener.qmp`: holding `qmp` forever would stall EVE, so set `holdMs` there (the link then
 * disconnects after that much idle time) or give eve-diag its own QMP socket (`eve-diag qemu-args --qmp`).
 */

export type QmpConnect = (path: string, opts: { timeoutMs: number }) => Promise<QmpClient>;

export interface QmpLinksOptions {
  /** How to connect (tests inject one). Default: `QmpClient.connect({ path })`. */
  connect?: QmpConnect;
  /** Upper bound of one connect attempt (the caller's own signal may end its wait sooner). Default 5000. */
  connectTimeoutMs?: number;
  /** Disconnect after this much time without a `client()` call. Default: hold the connection. */
  holdMs?: number;
  /**
   * After a failed connect, callers get that failure at once until this much time has passed; it
   * doubles with each further failure up to `maxBackoffMs` and resets on success. Default 500.
   */
  backoffMs?: number;
  /** Default 30000. */
  maxBackoffMs?: number;
  /** Monotonic ms (tests inject one). */
  now?: () => number;
}

/** Called with each new connection; may return a cleanup run when the connection ends or the hook is removed. */
export type ConnectHook = (client: QmpClient, generation: number) => (() => void) | void;

export class QmpLink {
  #client: QmpClient | undefined;
  #connecting: Promise<QmpClient> | undefined;
  #generation = 0;
  #hooks = new Map<ConnectHook, (() => void) | undefined>();
  #idle: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** Why the last connect failed, for evidence. */
  lastError: Error | undefined;
  /** Consecutive failed connects, and when the next attempt may start (the backoff). */
  #failures = 0;
  #retryAt = 0;

  constructor(
    readonly path: string,
    private readonly options: Required<Pick<QmpLinksOptions, 'connect' | 'connectTimeoutMs'>> & Omit<QmpLinksOptions, 'connect' | 'connectTimeoutMs'>,
  ) {}

  /** Increases with every new connection: a holder of derived state rebuilds it when this changes. */
  get generation(): number {
    return this.#generation;
  }

  /** The live client, or undefined when not connected. */
  get current(): QmpClient | undefined {
    return this.#client !== undefined && this.#client.state === 'running' ? this.#client : undefined;
  }

  /**
   * The connected client: the live one, or a new connection. Concurrent callers share one connect.
   * Rejects with the connect error (`QmpConnectError`), or with `signal.reason` when it aborts first
   * (the connect itself goes on, bounded by `connectTimeoutMs`, so the next caller may find it done).
   */
  async client(signal?: AbortSignal): Promise<QmpClient> {
    if (this.#closed) throw new Error(`QmpLink ${this.path}: closed`);
    this.#touch();
    const live = this.current;
    if (live !== undefined) return live;
    // QEMU went away (or is restarting): do not hammer its socket; fail fast until the backoff ends.
    if (this.#connecting === undefined && this.lastError !== undefined && this.#now() < this.#retryAt) throw this.lastError;
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return signal === undefined ? this.#connecting : raceSignal(this.#connecting, signal);
  }

  /** `client()` answered at once: the live client (counted as a use, like `client()`), or undefined. */
  clientSync(): QmpClient | undefined {
    if (this.#closed) return undefined;
    const live = this.current;
    if (live !== undefined) this.#touch();
    return live;
  }

  /**
   * Runs `hook` with every connection from now on (and at once with the live one). Returns the
   * function that removes it (running its cleanup).
   */
  onConnect(hook: ConnectHook): () => void {
    const live = this.current;
    this.#hooks.set(hook, live === undefined ? undefined : runHook(hook, live, this.#generation));
    return () => {
      const cleanup = this.#hooks.get(hook);
      this.#hooks.delete(hook);
      cleanup?.();
    };
  }

  /** Drops the connection (the next `client()` reconnects): after a command timed out, say. */
  async reset(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    this.#endHooks();
    await c?.close();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#idle !== undefined) clearTimeout(this.#idle);
    await this.#connecting?.catch(() => undefined);
    await this.reset();
    this.#hooks.clear();
  }

  async #connect(): Promise<QmpClient> {
    const old = this.#client;
    this.#client = undefined;
    if (old !== undefined) {
      this.#endHooks();
      await old.close();
    }
    let client: QmpClient;
    try {
      client = await this.options.connect(this.path, { timeoutMs: this.options.connectTimeoutMs });
    } catch (e) {
      this.lastError = e as Error;
      const base = this.options.backoffMs ?? 500;
      this.#retryAt = this.#now() + Math.min(this.options.maxBackoffMs ?? 30_000, base * 2 ** Math.min(this.#failures, 16));
      this.#failures++;
      throw e;
    }
    if (this.#closed) {
      await client.close();
      throw new Error(`QmpLink ${this.path}: closed`);
    }
    this.lastError = undefined;
    this.#failures = 0;
    this.#client = client;
    const generation = ++this.#generation;
    for (const hook of this.#hooks.keys()) this.#hooks.set(hook, runHook(hook, client, generation));
    const gone = () => {
      if (this.#client === client) {
        this.#client = undefined;
        this.#endHooks();
      }
    };
    client.closed.then(gone, gone);
    return client;
  }

  #now(): number {
    return (this.options.now ?? (() => performance.now()))();
  }

  #endHooks(): void {
    for (const [hook, cleanup] of this.#hooks) {
      cleanup?.();
      this.#hooks.set(hook, undefined);
    }
  }

  #touch(): void {
    const holdMs = this.options.holdMs;
    if (holdMs === undefined) return;
    if (this.#idle !== undefined) clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      this.#idle = undefined;
      // Closing a QMP client only settles its own promises; a failure leaves nothing to undo.
      this.reset().catch(() => undefined);
    }, holdMs);
    this.#idle.unref?.();
  }
}

function runHook(hook: ConnectHook, client: QmpClient, generation: number): (() => void) | undefined {
  const r = hook(client, generation);
  return typeof r === 'function' ? r : undefined;
}

/** The registry: one link per QMP socket path, shared by every probe that names that path. */
export class QmpLinks {
  readonly #links = new Map<string, { link: QmpLink; refs: number }>();
  readonly #options: Required<Pick<QmpLinksOptions, 'connect' | 'connectTimeoutMs'>> & Omit<QmpLinksOptions, 'connect' | 'connectTimeoutMs'>;

  constructor(options: QmpLinksOptions = {}) {
    const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    if (!(connectTimeoutMs > 0)) throw new RangeError(`connectTimeoutMs: a positive number (got ${String(connectTimeoutMs)})`);
    if (options.holdMs !== undefined && !(options.holdMs > 0)) throw new RangeError(`holdMs: a positive number (got ${String(options.holdMs)})`);
    this.#options = {
      connect: options.connect ?? ((path, o) => QmpClient.connect({ path }, { timeoutMs: o.timeoutMs })),
      connectTimeoutMs,
      ...(options.holdMs !== undefined ? { holdMs: options.holdMs } : {}),
      ...(options.backoffMs !== undefined ? { backoffMs: options.backoffMs } : {}),
      ...(options.maxBackoffMs !== undefined ? { maxBackoffMs: options.maxBackoffMs } : {}),
      ...(options.now !== undefined ? { now: options.now } : {}),
    };
  }

  /** The link for `path`, created on first use; pair every acquire with one `release`. */
  acquire(path: string): QmpLink {
    if (typeof path !== 'string' || path.length === 0) throw new TypeError(`QMP path: a non-empty string (got ${JSON.stringify(path)})`);
    let e = this.#links.get(path);
    if (e === undefined) {
      e = { link: new QmpLink(path, this.#options), refs: 0 };
      this.#links.set(path, e);
    }
    e.refs++;
    return e.link;
  }

  /** The link for `path` if some probe holds it (for a caller that must share it, e.g. to send `stop`). */
  get(path: string): QmpLink | undefined {
    return this.#links.get(path)?.link;
  }

  async release(link: QmpLink): Promise<void> {
    const e = this.#links.get(link.path);
    if (e === undefined || e.link !== link) return;
    if (--e.refs > 0) return;
    this.#links.delete(link.path);
    await link.close();
  }

  async closeAll(): Promise<void> {
    const all = [...this.#links.values()];
    this.#links.clear();
    await Promise.all(all.map((e) => e.link.close()));
  }
}
