import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { FsBlobs } from './blobs.js';
import { PgDb, SqliteDb } from './db.js';
import { migrate } from './migrations.js';
import { Store } from './store.js';

export interface StoreLocation {
  /** SQLite in this directory (`controller.db`, artifacts under `artifacts/`). */
  data?: string;
  /** `postgres://...`: metadata, jobs and artifacts in PostgreSQL, shared by every instance. */
  database?: string;
}

export const DEFAULT_DATA_DIR = '/var/lib/eve-diag/controller';

/**
 * Opens (creating and migrating as needed) the controller's store. SQLite runs in WAL mode with
 * `synchronous=FULL`: a report acknowledged to a node is on disk, so the node may drop its copy.
 */
export async function openStore(where: StoreLocation, opts: { migrateTo?: number } = {}): Promise<Store> {
  if (where.database !== undefined) {
    const pool = new pg.Pool({ connectionString: where.database, max: 10 });
    // An idle client's error (the server restarted) must not kill the process: the next query reconnects.
    pool.on('error', () => undefined);
    const db = new PgDb(pool);
    try {
      await migrate(db, opts.migrateTo);
    } catch (e) {
      await pool.end();
      throw e;
    }
    return new Store(db, 'in-db');
  }
  const dir = where.data ?? DEFAULT_DATA_DIR;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const raw = new Database(join(dir, 'controller.db'));
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = FULL');
  raw.pragma('foreign_keys = ON');
  raw.pragma('busy_timeout = 5000');
  const db = new SqliteDb(raw);
  try {
    await migrate(db, opts.migrateTo);
  } catch (e) {
    raw.close();
    throw e;
  }
  return new Store(db, new FsBlobs(join(dir, 'artifacts')));
}
