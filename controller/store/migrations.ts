import type { Db } from './db.js';

/**
 * The controller's schema, as numbered migrations for each dialect. They run at start, each in its
 * own transaction, in order, recorded in `schema_migrations`; a database from any earlier version is
 * brought up to the latest, an empty one built from scratch. On PostgreSQL an advisory lock keeps two
 * instances starting together from running them twice. Never edit a released migration: add one.
 *
 * Times are ISO 8601 text in UTC (they sort as they compare); JSON is text.
 */

type Dialect = Db['dialect'];
interface Migration {
  version: number;
  name: string;
  sql: Record<Dialect, string>;
}

const id = (d: Dialect) => (d === 'sqlite' ? 'INTEGER PRIMARY KEY' : 'BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY');
const int = (d: Dialect) => (d === 'sqlite' ? 'INTEGER' : 'BIGINT');

function v1(d: Dialect): string {
  return `
CREATE TABLE nodes (
  id ${id(d)},
  name TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL
);
CREATE TABLE tokens (
  hash TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('node', 'admin')),
  node_id ${int(d)} REFERENCES nodes(id),
  label TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE TABLE reports (
  key ${id(d)},
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  report_id TEXT NOT NULL,
  app TEXT NOT NULL,
  verdict TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_at TEXT NOT NULL,
  received_at TEXT NOT NULL,
  stored_at TEXT,
  status TEXT NOT NULL CHECK (status IN ('pending', 'stored')),
  manifest TEXT NOT NULL,
  manifest_sha256 TEXT NOT NULL,
  total_bytes ${int(d)} NOT NULL,
  UNIQUE (node_id, report_id)
);
CREATE INDEX reports_created ON reports (created_at);
CREATE INDEX reports_node_app ON reports (node_id, app, created_at);
CREATE INDEX reports_verdict ON reports (verdict, created_at);
CREATE TABLE report_artifacts (
  report_key ${int(d)} NOT NULL REFERENCES reports(key) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  kind TEXT NOT NULL,
  file TEXT NOT NULL,
  name TEXT NOT NULL,
  media_type TEXT NOT NULL,
  bytes ${int(d)} NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (report_key, file)
);
CREATE INDEX report_artifacts_sha ON report_artifacts (sha256);
CREATE TABLE blobs (
  sha256 TEXT PRIMARY KEY,
  bytes ${int(d)} NOT NULL,
  stored_at TEXT NOT NULL,
  data ${d === 'sqlite' ? 'BLOB' : 'BYTEA'}
);
CREATE TABLE events (
  key ${id(d)},
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  event_id TEXT NOT NULL,
  app TEXT NOT NULL,
  verdict TEXT NOT NULL,
  reason TEXT NOT NULL,
  at TEXT NOT NULL,
  received_at TEXT NOT NULL,
  data TEXT NOT NULL,
  UNIQUE (node_id, event_id)
);
CREATE INDEX events_app ON events (node_id, app, at);
CREATE TABLE dropped (
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  report_id TEXT NOT NULL,
  bytes ${int(d)} NOT NULL,
  dropped_at TEXT NOT NULL,
  reason TEXT NOT NULL,
  received_at TEXT NOT NULL,
  PRIMARY KEY (node_id, report_id)
);
CREATE TABLE app_logs (
  key ${id(d)},
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  app TEXT NOT NULL,
  at TEXT NOT NULL,
  severity TEXT NOT NULL,
  source TEXT NOT NULL,
  content TEXT NOT NULL,
  received_at TEXT NOT NULL
);
CREATE INDEX app_logs_app ON app_logs (node_id, app, key);
CREATE TABLE findings (
  key ${id(d)},
  report_key ${int(d)} REFERENCES reports(key) ON DELETE CASCADE,
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  app TEXT NOT NULL,
  analyzer TEXT NOT NULL,
  severity TEXT NOT NULL,
  title TEXT NOT NULL,
  explanation TEXT NOT NULL,
  evidence TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX findings_report ON findings (report_key);
CREATE INDEX findings_app ON findings (node_id, app);
CREATE TABLE jobs (
  key ${id(d)},
  kind TEXT NOT NULL CHECK (kind IN ('analyze-report', 'analyze-logs')),
  report_key ${int(d)},
  node_id ${int(d)},
  app TEXT,
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  run_after TEXT NOT NULL,
  locked_by TEXT,
  locked_at TEXT,
  created_at TEXT NOT NULL,
  finished_at TEXT,
  error TEXT
);
CREATE INDEX jobs_queue ON jobs (state, run_after);
`;
}

/**
 * v2: each report carries its findings' count and worst severity, for the list and fleet pages;
 * the reports stored before get theirs from their findings.
 */
function v2(): string {
  return `
ALTER TABLE reports ADD COLUMN findings INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN worst_severity TEXT;
CREATE INDEX findings_node_app_report ON findings (node_id, app, report_key);
UPDATE reports SET
  findings = (SELECT COUNT(*) FROM findings f WHERE f.report_key = reports.key),
  worst_severity = (SELECT f.severity FROM findings f WHERE f.report_key = reports.key
    ORDER BY CASE f.severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END LIMIT 1);
`;
}

/**
 * v3: the newest stored reports of an app, a node or a verdict straight from an index (the fleet page
 * reads the latest report of every app; the report list pages by key, newest first): through
 * reports_node_app and reports_verdict they read and sorted every matching report (bench/controller.ts).
 */
function v3(): string {
  return `
CREATE INDEX reports_latest ON reports (node_id, app, status, key);
CREATE INDEX reports_node_latest ON reports (node_id, status, key);
CREATE INDEX reports_verdict_latest ON reports (verdict, status, key);
`;
}

/**
 * v4: which node has sent which blob. Blobs are content-addressed and shared, but a node is asked for
 * (and must send) every artifact it has not sent itself: without this, a node that knew the SHA-256
 * of another node's artifact could list it in a report of its own, never send a byte, and read the
 * bytes back. The blobs of the reports each node has stored count as sent by it.
 */
function v4(d: Dialect): string {
  return `
CREATE TABLE node_blobs (
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  sha256 TEXT NOT NULL,
  PRIMARY KEY (node_id, sha256)
);
INSERT INTO node_blobs (node_id, sha256)
  SELECT DISTINCT r.node_id, a.sha256 FROM report_artifacts a JOIN reports r ON r.key = a.report_key
  WHERE r.status = 'stored';
`;
}

/**
 * The current state of each (node, app): its newest event, and since when its verdict has been that
 * one. The fleet page read it from the events with correlated subqueries per app (about 100 ms at
 * 4000 apps, bench/controller.ts --load); now each batch of events refreshes the rows of the apps it
 * touched (store.ts FLEET_STATE_SELECT, the same rule) and the page reads this table.
 */
export const FLEET_STATE_SELECT = `WITH pairs AS (SELECT DISTINCT node_id, app FROM events WHERE %PAIRS%),
  latest AS (SELECT (SELECT e2.key FROM events e2 WHERE e2.node_id = p.node_id AND e2.app = p.app ORDER BY e2.at DESC, e2.key DESC LIMIT 1) AS ekey FROM pairs p),
  cur AS MATERIALIZED (SELECT e.key, e.node_id, e.app, e.verdict, e.reason, e.at, e.data,
    (SELECT o.at FROM events o WHERE o.node_id = e.node_id AND o.app = e.app AND o.verdict <> e.verdict ORDER BY o.at DESC LIMIT 1) AS other_at
    FROM latest l JOIN events e ON e.key = l.ekey)
  SELECT c.node_id, c.app, c.key AS event_key, c.verdict, c.reason, c.at, c.data,
    (SELECT MIN(s.at) FROM events s WHERE s.node_id = c.node_id AND s.app = c.app AND s.verdict = c.verdict AND s.at > COALESCE(c.other_at, '')) AS since
  FROM cur c`;

function v5(d: Dialect): string {
  return `
CREATE TABLE fleet_state (
  node_id ${int(d)} NOT NULL REFERENCES nodes(id),
  app TEXT NOT NULL,
  event_key ${int(d)} NOT NULL,
  verdict TEXT NOT NULL,
  reason TEXT NOT NULL,
  at TEXT NOT NULL,
  data TEXT NOT NULL,
  since TEXT NOT NULL,
  PRIMARY KEY (node_id, app)
);
INSERT INTO fleet_state (node_id, app, event_key, verdict, reason, at, data, since)
  SELECT node_id, app, event_key, verdict, reason, at, data, COALESCE(since, at) FROM (${FLEET_STATE_SELECT.replace('%PAIRS%', '1 = 1')}) x;
`;
}

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: 'initial schema', sql: { sqlite: v1('sqlite'), postgres: v1('postgres') } },
  { version: 2, name: 'findings summary on reports', sql: { sqlite: v2(), postgres: v2() } },
  { version: 3, name: 'indexes of the newest reports per app, node and verdict', sql: { sqlite: v3(), postgres: v3() } },
  { version: 4, name: 'the blobs each node has sent', sql: { sqlite: v4('sqlite'), postgres: v4('postgres') } },
  { version: 5, name: 'the current state of each app, kept with its events', sql: { sqlite: v5('sqlite'), postgres: v5('postgres') } },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/** Statements of a migration script (split on `;` at line ends: no `;` appears inside our SQL). */
function statements(sql: string): string[] {
  return sql
    .split(/;\s*\n/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Brings `db` to `upTo` (default: the latest); returns the versions applied. */
export async function migrate(db: Db, upTo: number = SCHEMA_VERSION): Promise<number[]> {
  await db.run('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
  const applied: number[] = [];
  const apply = async (tx: Db) => {
    const done = new Set((await tx.all('SELECT version FROM schema_migrations')).map((r) => Number(r['version'])));
    const newest = Math.max(0, ...done);
    if (newest > SCHEMA_VERSION) throw new Error(`the database is at schema version ${newest}, newer than this controller (${SCHEMA_VERSION}): upgrade eve-diag`);
    for (const m of MIGRATIONS) {
      if (m.version > upTo || done.has(m.version)) continue;
      for (const st of statements(m.sql[tx.dialect])) await tx.run(st);
      await tx.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [m.version, m.name, new Date().toISOString()]);
      applied.push(m.version);
    }
  };
  if (db.dialect === 'postgres') {
    // One instance migrates; the others wait for it, then find nothing to do.
    await db.tx(async (tx) => {
      await tx.run('SELECT pg_advisory_xact_lock(?)', [0x65766564]);
      await apply(tx);
    });
  } else {
    await db.tx(apply);
  }
  return applied;
}
