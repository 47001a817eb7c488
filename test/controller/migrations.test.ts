import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SCHEMA_VERSION, MIGRATIONS } from '../../controller/store/migrations.js';
import { openStore, type StoreLocation } from '../../controller/store/open.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';

/**
 * The schema migrations on both stores, run at start: from an empty database, from every earlier
 * version with data in it (the data must come through, derived columns filled), and a database newer
 * than this controller refused. SQLite in a temporary directory; a real PostgreSQL 15.
 */

interface Backend {
  name: string;
  location(): Promise<StoreLocation>;
  /** Runs SQL with positional parameters (`?`) on the raw database. */
  sql(where: StoreLocation, text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
}

let pgServer: Postgres;
const dirs: string[] = [];
beforeAll(async () => {
  pgServer = await startPostgres();
}, 60_000);
afterAll(async () => {
  await pgServer?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

let dbs = 0;
const backends: Backend[] = [
  {
    name: 'SQLite',
    location: async () => {
      const d = mkdtempSync(join(tmpdir(), 'eve-diag-migr-'));
      dirs.push(d);
      return { data: d };
    },
    sql: async (where, text, params = []) => {
      const db = new Database(join(where.data as string, 'controller.db'));
      try {
        const st = db.prepare(text);
        return st.reader ? (st.all(...params) as Record<string, unknown>[]) : (st.run(...params), []);
      } finally {
        db.close();
      }
    },
  },
  {
    name: 'PostgreSQL',
    location: async () => ({ database: await pgServer.createDatabase(`migr${++dbs}`) }),
    sql: async (where, text, params = []) => {
      const c = new pg.Client({ connectionString: where.database });
      await c.connect();
      try {
        let n = 0;
        return (await c.query(text.replace(/\?/g, () => `$${++n}`), params)).rows as Record<string, unknown>[];
      } finally {
        await c.end();
      }
    },
  },
];

describe.each(backends)('$name', (b) => {
  test('from an empty database: every migration, in order, recorded; the store works', async () => {
    const where = await b.location();
    const store = await openStore(where);
    try {
      expect(await store.nodeId('edge-1')).toBeGreaterThan(0);
      expect(await store.listReports()).toEqual([]);
    } finally {
      await store.close();
    }
    const rows = await b.sql(where, 'SELECT version, name FROM schema_migrations ORDER BY version');
    expect(rows.map((r) => [Number(r['version']), r['name']])).toEqual(MIGRATIONS.map((m) => [m.version, m.name]));
    // Opening again applies nothing twice.
    await (await openStore(where)).close();
    expect(await b.sql(where, 'SELECT COUNT(*) AS n FROM schema_migrations')).toEqual([{ n: b.name === 'SQLite' ? SCHEMA_VERSION : String(SCHEMA_VERSION) }]);
  });

  test('from version 1 with data: the reports come through with their findings counted', async () => {
    const where = await b.location();
    await (await openStore(where, { migrateTo: 1 })).close();
    const now = '2026-12-01T10:00:00.000Z';
    await b.sql(where, 'INSERT INTO nodes (name, created_at) VALUES (?, ?)', ['edge-1', now]);
    const [node] = await b.sql(where, 'SELECT id FROM nodes');
    const nodeId = Number(node?.['id']);
    for (const [i, verdict] of ['guest-kernel-hung', 'app-unhealthy'].entries()) {
      await b.sql(
        where,
        "INSERT INTO reports (node_id, report_id, app, verdict, reason, created_at, received_at, stored_at, status, manifest, manifest_sha256, total_bytes) VALUES (?, ?, 'vm1', ?, 'r', ?, ?, ?, 'stored', '{}', 'x', 10)",
        [nodeId, `rep-${i}`, verdict, now, now, now],
      );
    }
    const keys = (await b.sql(where, 'SELECT key, report_id FROM reports ORDER BY report_id')).map((r) => Number(r['key']));
    for (const [sev, title] of [
      ['warning', 'w'],
      ['critical', 'Kernel panic: x'],
      ['info', 'i'],
    ]) {
      await b.sql(where, "INSERT INTO findings (report_key, node_id, app, analyzer, severity, title, explanation, evidence, created_at) VALUES (?, ?, 'vm1', 'kernel-log', ?, ?, '', '[]', ?)", [keys[0], nodeId, sev, title, now]);
    }
    const store = await openStore(where);
    try {
      const rows = await store.listReports();
      expect(rows.map((r) => [r.reportId, r.findings, r.worstSeverity])).toEqual([
        ['rep-1', 0, null],
        ['rep-0', 3, 'critical'],
      ]);
    } finally {
      await store.close();
    }
  });

  test('from version 2: migration 3 adds the indexes of the newest reports per app, node and verdict; the fleet and the list read through them', async () => {
    const where = await b.location();
    await (await openStore(where, { migrateTo: 2 })).close();
    const indexes = async () =>
      (await b.sql(where, b.name === 'SQLite' ? "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reports'" : "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'reports'")).map((r) => String(r['name']));
    for (const i of ['reports_latest', 'reports_node_latest', 'reports_verdict_latest']) expect(await indexes()).not.toContain(i);
    const now = '2026-12-01T10:00:00.000Z';
    await b.sql(where, 'INSERT INTO nodes (name, created_at) VALUES (?, ?)', ['edge-1', now]);
    const nodeId = Number((await b.sql(where, 'SELECT id FROM nodes'))[0]?.['id']);
    for (const [i, status] of ['stored', 'stored', 'pending'].entries()) {
      await b.sql(
        where,
        "INSERT INTO reports (node_id, report_id, app, verdict, reason, created_at, received_at, stored_at, status, manifest, manifest_sha256, total_bytes) VALUES (?, ?, 'vm1', 'guest-panicked', 'r', ?, ?, ?, ?, '{}', 'x', 10)",
        [nodeId, `rep-${i}`, `2026-12-01T10:00:0${i}.000Z`, now, now, status],
      );
    }
    await b.sql(where, "INSERT INTO events (node_id, event_id, app, verdict, reason, at, received_at, data) VALUES (?, 'e1', 'vm1', 'guest-panicked', 'r', ?, ?, '{\"kernel\":null,\"agent\":null}')", [nodeId, now, now]);
    const store = await openStore(where);
    try {
      expect(await indexes()).toEqual(expect.arrayContaining(['reports_latest', 'reports_node_latest', 'reports_verdict_latest']));
      const second = (await b.sql(where, "SELECT key FROM reports WHERE report_id = 'rep-1'"))[0]?.['key'];
      expect((await store.fleet()).map((f) => [f.node, f.app, f.verdict, f.since, f.lastReportKey, f.lastReportAt])).toEqual([['edge-1', 'vm1', 'guest-panicked', now, Number(second), '2026-12-01T10:00:01.000Z']]);
      expect((await store.listReports({ verdict: 'guest-panicked', limit: 1 })).map((r) => r.reportId)).toEqual(['rep-1']);
      expect((await store.listReports({ node: 'edge-1', before: Number(second) })).map((r) => r.reportId)).toEqual(['rep-0']);
    } finally {
      await store.close();
    }
  });

  test('from version 3: migration 4 counts the blobs of each node\'s stored reports as sent by it, and only those', async () => {
    const where = await b.location();
    await (await openStore(where, { migrateTo: 3 })).close();
    const now = '2026-12-01T10:00:00.000Z';
    for (const n of ['edge-1', 'edge-2']) await b.sql(where, 'INSERT INTO nodes (name, created_at) VALUES (?, ?)', [n, now]);
    const ids = (await b.sql(where, 'SELECT id FROM nodes ORDER BY name')).map((r) => Number(r['id']));
    const [shaA, shaB, shaP] = ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)] as const;
    for (const sha of [shaA, shaB, shaP]) await b.sql(where, 'INSERT INTO blobs (sha256, bytes, stored_at) VALUES (?, 1, ?)', [sha, now]);
    for (const [node, rid, status, sha] of [
      [ids[0], 'r1', 'stored', shaA],
      [ids[0], 'r2', 'stored', shaB],
      [ids[1], 'r3', 'pending', shaP],
    ] as const) {
      await b.sql(
        where,
        "INSERT INTO reports (node_id, report_id, app, verdict, reason, created_at, received_at, stored_at, status, manifest, manifest_sha256, total_bytes) VALUES (?, ?, 'vm1', 'guest-panicked', 'r', ?, ?, ?, ?, '{}', 'x', 1)",
        [node, rid, now, now, now, status],
      );
      const key = (await b.sql(where, 'SELECT key FROM reports WHERE report_id = ?', [rid]))[0]?.['key'];
      await b.sql(where, "INSERT INTO report_artifacts (report_key, step, kind, file, name, media_type, bytes, sha256) VALUES (?, 0, 'k', 'f', 'n', 'text/plain', 1, ?)", [key, sha]);
    }
    const store = await openStore(where);
    try {
      expect((await b.sql(where, 'SELECT node_id, sha256 FROM node_blobs ORDER BY sha256')).map((r) => [Number(r['node_id']), r['sha256']])).toEqual([
        [ids[0], shaA],
        [ids[0], shaB],
      ]);
      expect(await store.missingBlobs(ids[0] as number, [shaA, shaB, shaP])).toEqual([shaP]);
      // The other node sent none of them (its report is pending): it is asked for every one.
      expect(await store.missingBlobs(ids[1] as number, [shaA, shaP])).toEqual([shaA, shaP]);
    } finally {
      await store.close();
    }
  });

  test('a database newer than this controller is refused, and left as it is', async () => {
    const where = await b.location();
    await (await openStore(where)).close();
    await b.sql(where, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', '2030-01-01')", [SCHEMA_VERSION + 1]);
    await expect(openStore(where)).rejects.toThrow(`the database is at schema version ${SCHEMA_VERSION + 1}, newer than this controller (${SCHEMA_VERSION}): upgrade eve-diag`);
    expect((await b.sql(where, 'SELECT COUNT(*) AS n FROM schema_migrations')).map((r) => Number(r['n']))).toEqual([SCHEMA_VERSION + 1]);
  });
});
