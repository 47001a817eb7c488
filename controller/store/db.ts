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

/**
 * better-sqlite3 is synchronous: every statement of a caller runs under one lock, and a transaction
 * holds it from BEGIN to COMMIT, its statements going through a view of its own, so no other caller's
 * statement can land inside it.
 */
export class SqliteDb implements Db {
  readonly dialect = 'sqlite' as const;
  readonly #mutex = new Mutex();
  readonly #cache = new Map<string, BetterSqlite3.Statement>();
  readonly #direct: Db;

  constructor(readonly raw: BetterSqlite3.Database) {
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
    return this.#mutex.lock(() => this.#direct.run(sql, params));
  }

  tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    return this.#mutex.lock(async () => {
      this.raw.exec('BEGIN IMMEDIATE');
      try {
        const r = await fn(this.#direct);
        this.raw.exec('COMMIT');
        return r;
      } catch (e) {
        if (this.raw.inTransaction) this.raw.exec('ROLLBACK');
        throw e;
      }
    });
  }

  async close(): Promise<void> {
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
