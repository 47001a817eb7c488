/**
 * The one SQL surface the controller's store is written against, with a SQLite and a PostgreSQL
 * implementation. SQL is written once with `?` placeholders (PostgreSQL's `$n` are derived); the few
 * dialect differences (identity columns, byte arrays, locking) are in `dialect`.
 */
import type BetterSqlite3 from 'better-sqlite3';
import type { Pool, PoolClient } from 'pg';

export type Row = Record<string, unknown>;
export type Param = string | number | bigint | null | Buffer;

export interface Db {
  readonly dialect: 'sqlite' | 'postgres';
  all(sql: string, params?: readonly Param[]): Promise<Row[]>;
  get(sql: string, params?: readonly Param[]): Promise<Row | undefined>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: readonly Param[]): Promise<number>;
  /**
   * Runs `fn` in one transaction (committed when it resolves, rolled back when it throws). SQLite
   * transactions are serialized; PostgreSQL ones run on a connection of their own.
   */
  tx<T>(fn: (db: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** `?` placeholders to `$1, $2...` (no `?` appears in our SQL otherwise). */
export function toPgPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** A FIFO lock: one holder at a time. */
class Mutex {
  #tail: Promise<void> = Promise.resolve();
  async lock<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** One caller's turn in a SQLite batch: a write transaction or an autocommit write. */
interface Turn {
  fn: (db: Db) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  /** Set when the turn ran: its outcome, delivered once the batch is committed. */
  outcome?: { ok: true; value: unknown } | { ok: false; error: unknown };
}

/** Most turns one batch (one COMMIT, one WAL fsync) takes. */
const MAX_BATCH = 256;

/**
 * better-sqlite3 is synchronous: every statement of a caller runs under one lock, and a transaction
 * holds it from BEGIN to COMMIT, its statements going through a view of its own, so no other caller's
 * statement can land inside it.
 *
 * Group commit: with synchronous=FULL every COMMIT is an fsync of the WAL, made on the event loop's
 * thread (better-sqlite3 is synchronous). Writes (tx and run) are queued for `groupMs` and run
 * together, each in a SAVEPOINT of its own inside one BEGIN IMMEDIATE ...
 * COMMIT: a transaction that throws rolls back only its own savepoint, the others commit. Every
 * caller of a batch gets its answer only after that COMMIT returned, so nothing is answered before it
 * is durable. A read runs at once, on committed data only: a batch runs from BEGIN to COMMIT under
 * the lock, without giving the event loop a turn, so no read sees it half done, and a read does not
 * wait for the writes queued before it (their callers have no answer yet: it is as if it came first).
 */
export class SqliteDb implements Db {
  readonly dialect = 'sqlite' as const;
  readonly #mutex = new Mutex();
  readonly #cache = new Map<string, BetterSqlite3.Statement>();
  readonly #direct: Db;
  #queue: Turn[] = [];
  #scheduled = false;
  /** Batches committed and turns they carried (tests and benchmarks). */
  readonly batches = { commits: 0, turns: 0 };

  /**
   * @param groupMs how long the first write of a batch waits for others to join it (0: until the end
   *   of the event loop turn).
   */
  constructor(
    readonly raw: BetterSqlite3.Database,
    readonly groupMs = 2,
  ) {
    const stmt = (sql: string): BetterSqlite3.Statement => {
      let st = this.#cache.get(sql);
      if (st === undefined) {
        st = this.raw.prepare(sql);
        if (this.#cache.size > 500) this.#cache.clear();
        this.#cache.set(sql, st);
      }
      return st;
    };
    const view: Db = {
      dialect: 'sqlite',
      all: async (sql, params = []) => stmt(sql).all(...params) as Row[],
      get: async (sql, params = []) => stmt(sql).get(...params) as Row | undefined,
      run: async (sql, params = []) => stmt(sql).run(...params).changes,
      tx: (fn) => fn(view), // already inside one
      close: async () => undefined,
    };
    this.#direct = view;
  }

  all(sql: string, params: readonly Param[] = []): Promise<Row[]> {
    return this.#mutex.lock(() => this.#direct.all(sql, params));
  }

  get(sql: string, params: readonly Param[] = []): Promise<Row | undefined> {
    return this.#mutex.lock(() => this.#direct.get(sql, params));
  }

  run(sql: string, params: readonly Param[] = []): Promise<number> {
    return this.#enqueue((db) => db.run(sql, params));
  }

  tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return this.#enqueue(fn);
  }

  #enqueue<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        // The writes of every request handled meanwhile share a COMMIT.
        const flush = () => {
          this.#flush().catch(() => undefined); // never rejects: each turn gets its own outcome
        };
        if (this.groupMs > 0) setTimeout(flush, this.groupMs);
        else setImmediate(flush);
      }
    });
  }

  async #flush(): Promise<void> {
    await this.#mutex.lock(async () => {
      this.#scheduled = false;
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        try {
          await this.#runBatch(batch);
        } catch (e) {
          // SQLite refused a SAVEPOINT, RELEASE or ROLLBACK: nothing of this batch is answered as done.
          if (this.raw.inTransaction) this.raw.exec('ROLLBACK');
          for (const t of batch) t.reject(e);
        }
      }
    });
  }

  async #runBatch(batch: Turn[]): Promise<void> {
    const raw = this.raw;
    try {
      raw.exec('BEGIN IMMEDIATE');
    } catch (e) {
      for (const t of batch) t.reject(e);
      return;
    }
    let lost: unknown; // SQLite rolled the whole transaction back (an I/O error, disk full): every turn's work is gone
    for (let i = 0; i < batch.length; i++) {
      const t = batch[i] as Turn;
      if (lost !== undefined) {
        t.outcome = { ok: false, error: lost };
        continue;
      }
      raw.exec('SAVEPOINT turn');
      try {
        t.outcome = { ok: true, value: await t.fn(this.#direct) };
        raw.exec('RELEASE turn');
      } catch (e) {
        t.outcome = { ok: false, error: e };
        if (raw.inTransaction) {
          raw.exec('ROLLBACK TO turn');
          raw.exec('RELEASE turn');
        } else {
          lost = e;
          for (let k = 0; k < i; k++) (batch[k] as Turn).outcome = { ok: false, error: e };
        }
      }
    }
    if (raw.inTransaction) {
      try {
        raw.exec('COMMIT');
      } catch (e) {
        if (raw.inTransaction) raw.exec('ROLLBACK');
        for (const t of batch) t.reject(e);
        return;
      }
    }
    this.batches.commits++;
    this.batches.turns += batch.length;
    for (const t of batch) {
      const o = t.outcome as NonNullable<Turn['outcome']>;
      if (o.ok) t.resolve(o.value);
      else t.reject(o.error);
    }
  }

  async close(): Promise<void> {
    await this.#flush();
    await this.#mutex.lock(async () => this.raw.close());
  }
}

export class PgDb implements Db {
  readonly dialect = 'postgres' as const;

  constructor(
    readonly pool: Pool,
    private readonly client?: PoolClient,
  ) {}

  async all(sql: string, params: readonly Param[] = []): Promise<Row[]> {
    const r = await (this.client ?? this.pool).query(toPgPlaceholders(sql), params as Param[]);
    return r.rows as Row[];
  }

  async get(sql: string, params: readonly Param[] = []): Promise<Row | undefined> {
    return (await this.all(sql, params))[0];
  }

  async run(sql: string, params: readonly Param[] = []): Promise<number> {
    const r = await (this.client ?? this.pool).query(toPgPlaceholders(sql), params as Param[]);
    return r.rowCount ?? 0;
  }

  async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    if (this.client !== undefined) return fn(this);
    const client = await this.pool.connect();
    // The pool stops listening to a client it hands out: a connection error between two statements
    // (the server restarted) is emitted on the client, and unheard it kills the process.
    let broken: Error | undefined;
    const onError = (e: Error) => (broken ??= e);
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const r = await fn(new PgDb(this.pool, client));
      await client.query('COMMIT');
      return r;
    } catch (e) {
      await client.query('ROLLBACK').catch((re: Error) => (broken ??= re));
      throw e;
    } finally {
      client.off('error', onError);
      // A broken connection is closed, not handed out again.
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.client === undefined) await this.pool.end();
  }
}
