import type { DroppedNotice, ReportAck, VerdictEvent } from '../../protocol/controller-api.js';
import type { ReportManifest } from '../../protocol/report-manifest.js';
import type { BlobFiles } from './blobs.js';
import type { Db, Row } from './db.js';
import { FLEET_STATE_SELECT } from './migrations.js';

/**
 * The controller's data, one implementation over both databases (db.ts): nodes and their tokens,
 * reports (a manifest, its artifacts by hash), verdict events, app log lines, dropped-report notices,
 * analyzer findings, and the job queue the analyzers take work from. Every write that must not be
 * half done is one transaction; everything a node sends is keyed by (node, its id), so a retry finds
 * what the first try stored.
 */

export type Role = 'node' | 'admin';
export const SEVERITIES = ['critical', 'error', 'warning', 'info'] as const;
export type Severity = (typeof SEVERITIES)[number];

export interface TokenInfo {
  role: Role;
  nodeId: number | null;
  nodeName: string | null;
  label: string;
}

export interface ReportRow {
  key: number;
  nodeId: number;
  node: string;
  reportId: string;
  app: string;
  verdict: string;
  reason: string;
  createdAt: string;
  receivedAt: string;
  storedAt: string | null;
  status: 'pending' | 'stored';
  manifestSha256: string;
  totalBytes: number;
  findings: number;
  worstSeverity: Severity | null;
}

export interface ArtifactRow {
  step: number;
  kind: string;
  file: string;
  name: string;
  mediaType: string;
  bytes: number;
  sha256: string;
}

export interface FindingEvidence {
  artifact?: string;
  lineStart?: number;
  lineEnd?: number;
  excerpt?: string;
}

export interface Finding {
  analyzer: string;
  severity: Severity;
  title: string;
  explanation: string;
  evidence: FindingEvidence[];
}

export interface FindingRow extends Finding {
  key: number;
  reportKey: number | null;
  node: string;
  app: string;
  createdAt: string;
}

export interface FleetRow {
  node: string;
  app: string;
  verdict: string;
  reason: string;
  since: string;
  lastEventAt: string;
  kernel: { status?: string; beats?: number; ageMs?: number } | null;
  agent: { status?: string; beats?: number; ageMs?: number } | null;
  lastReportKey: number | null;
  lastReportAt: string | null;
}

export interface LogLine {
  at: string;
  severity: string;
  source: string;
  content: string;
}

export interface Job {
  key: number;
  kind: 'analyze-report' | 'analyze-logs';
  reportKey: number | null;
  nodeId: number | null;
  app: string | null;
  attempts: number;
}

export interface ReportFilter {
  node?: string;
  app?: string;
  verdict?: string;
  since?: string;
  until?: string;
  /** Reports with a key below this (paging, newest first). */
  before?: number;
  limit?: number;
  /** Only this node's (a node token). */
  nodeId?: number;
}

export class ConflictError extends Error {
  override name = 'ConflictError';
}

const ARTIFACT_ROWS_PER_INSERT = 100;
const BLOB_LOOKUPS_PER_QUERY = 500;

const SEVERITY_RANK: Record<Severity, number> = { critical: 0, error: 1, warning: 2, info: 3 };

const num = (v: unknown): number => Number(v);
const str = (v: unknown): string => String(v);
const now = () => new Date().toISOString();

function reportRow(r: Row): ReportRow {
  return {
    key: num(r['key']),
    nodeId: num(r['node_id']),
    node: str(r['node']),
    reportId: str(r['report_id']),
    app: str(r['app']),
    verdict: str(r['verdict']),
    reason: str(r['reason']),
    createdAt: str(r['created_at']),
    receivedAt: str(r['received_at']),
    storedAt: r['stored_at'] === null ? null : str(r['stored_at']),
    status: str(r['status']) as ReportRow['status'],
    manifestSha256: str(r['manifest_sha256']),
    totalBytes: num(r['total_bytes']),
    findings: num(r['findings'] ?? 0),
    worstSeverity: (r['worst_severity'] ?? null) as Severity | null,
  };
}

const REPORT_COLUMNS =
  'r.key, r.node_id, n.name AS node, r.report_id, r.app, r.verdict, r.reason, r.created_at, r.received_at, r.stored_at, r.status, r.manifest_sha256, r.total_bytes, r.findings, r.worst_severity';

export class Store {
  constructor(
    readonly db: Db,
    readonly blobs: BlobFiles | 'in-db',
  ) {}

  // -- nodes and tokens ---------------------------------------------------------------------------

  async nodeId(name: string, create = true): Promise<number | undefined> {
    const found = await this.db.get('SELECT id FROM nodes WHERE name = ?', [name]);
    if (found !== undefined) return num(found['id']);
    if (!create) return undefined;
    await this.db.run('INSERT INTO nodes (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING', [name, now()]);
    return num((await this.db.get('SELECT id FROM nodes WHERE name = ?', [name]))?.['id']);
  }

  async addToken(hash: string, role: Role, nodeId: number | null, label: string): Promise<void> {
    await this.db.run('INSERT INTO tokens (hash, role, node_id, label, created_at) VALUES (?, ?, ?, ?, ?)', [hash, role, nodeId, label, now()]);
  }

  async token(hash: string): Promise<TokenInfo | undefined> {
    const r = await this.db.get(
      'SELECT t.role, t.node_id, t.label, n.name FROM tokens t LEFT JOIN nodes n ON n.id = t.node_id WHERE t.hash = ? AND t.revoked_at IS NULL',
      [hash],
    );
    if (r === undefined) return undefined;
    return { role: str(r['role']) as Role, nodeId: r['node_id'] === null ? null : num(r['node_id']), nodeName: r['name'] === null ? null : str(r['name']), label: str(r['label']) };
  }

  async tokens(): Promise<{ hashPrefix: string; role: Role; node: string | null; label: string; createdAt: string; revoked: boolean }[]> {
    const rows = await this.db.all('SELECT t.hash, t.role, n.name, t.label, t.created_at, t.revoked_at FROM tokens t LEFT JOIN nodes n ON n.id = t.node_id ORDER BY t.created_at');
    return rows.map((r) => ({
      hashPrefix: str(r['hash']).slice(0, 12),
      role: str(r['role']) as Role,
      node: r['name'] === null ? null : str(r['name']),
      label: str(r['label']),
      createdAt: str(r['created_at']),
      revoked: r['revoked_at'] !== null,
    }));
  }

  /** Revokes the tokens whose hash starts with `hashPrefix` (at least 8 hex digits); returns how many. */
  async revokeToken(hashPrefix: string): Promise<number> {
    if (!/^[0-9a-f]{8,64}$/.test(hashPrefix)) throw new RangeError('a token hash prefix of 8 to 64 hex digits');
    return this.db.run('UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND substr(hash, 1, ?) = ?', [now(), hashPrefix.length, hashPrefix]);
  }

  // -- reports -------------------------------------------------------------------------------------

  /**
   * Records a report's manifest (pending until every artifact is there). The same manifest again is
   * the same report (returned as it is); another manifest under the same id is a ConflictError.
   */
  async offerReport(nodeId: number, m: ReportManifest, manifestText: string, manifestSha256: string): Promise<ReportRow> {
    return this.db.tx(async (tx) => {
      const known = async () => {
        const existing = await tx.get('SELECT key, manifest_sha256 FROM reports WHERE node_id = ? AND report_id = ?', [nodeId, m.id]);
        if (existing === undefined) return undefined;
        if (str(existing['manifest_sha256']) !== manifestSha256) throw new ConflictError(`report ${m.id} was already sent with another manifest`);
        return (await this.#report(tx, num(existing['key']))) as ReportRow;
      };
      const before = await known();
      if (before !== undefined) return before;
      const reason = typeof m.evidence['reason'] === 'string' ? m.evidence['reason'].slice(0, 2000) : '';
      const row = await tx.get(
        `INSERT INTO reports (node_id, report_id, app, verdict, reason, created_at, received_at, status, manifest, manifest_sha256, total_bytes)
         VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (node_id, report_id) DO NOTHING RETURNING key`,
        [nodeId, m.id, m.app.name, m.verdict, reason, m.createdAt, now(), manifestText, manifestSha256, m.totalBytes],
      );
      // Nothing inserted: the same offer committed meanwhile (a retry racing its original on
      // another instance; PostgreSQL made this insert wait for it). It is that report.
      if (row === undefined) return (await known()) as ReportRow;
      const key = num(row['key']);
      // A few rows per statement (one round trip each on PostgreSQL), under both databases' parameter limits.
      const rows = m.steps.flatMap((step) => step.artifacts.map((a) => [key, step.index, step.kind, a.file, a.name, a.mediaType, a.bytes, a.sha256]));
      for (let i = 0; i < rows.length; i += ARTIFACT_ROWS_PER_INSERT) {
        const chunk = rows.slice(i, i + ARTIFACT_ROWS_PER_INSERT);
        await tx.run(`INSERT INTO report_artifacts (report_key, step, kind, file, name, media_type, bytes, sha256) VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`, chunk.flat());
      }
      return (await this.#report(tx, key)) as ReportRow;
    });
  }

  async reportByNodeId(nodeId: number, reportId: string): Promise<ReportRow | undefined> {
    const r = await this.db.get(`SELECT ${REPORT_COLUMNS} FROM reports r JOIN nodes n ON n.id = r.node_id WHERE r.node_id = ? AND r.report_id = ?`, [nodeId, reportId]);
    return r === undefined ? undefined : reportRow(r);
  }

  report(key: number): Promise<ReportRow | undefined> {
    return this.#report(this.db, key);
  }

  async #report(db: Db, key: number): Promise<ReportRow | undefined> {
    const r = await db.get(`SELECT ${REPORT_COLUMNS} FROM reports r JOIN nodes n ON n.id = r.node_id WHERE r.key = ?`, [key]);
    return r === undefined ? undefined : reportRow(r);
  }

  async manifest(key: number): Promise<ReportManifest | undefined> {
    const r = await this.db.get('SELECT manifest FROM reports WHERE key = ?', [key]);
    return r === undefined ? undefined : (JSON.parse(str(r['manifest'])) as ReportManifest);
  }

  async artifacts(key: number): Promise<ArtifactRow[]> {
    const rows = await this.db.all('SELECT step, kind, file, name, media_type, bytes, sha256 FROM report_artifacts WHERE report_key = ? ORDER BY step, file', [key]);
    return rows.map((r) => ({ step: num(r['step']), kind: str(r['kind']), file: str(r['file']), name: str(r['name']), mediaType: str(r['media_type']), bytes: num(r['bytes']), sha256: str(r['sha256']) }));
  }

  /** The artifact of report `key` with this hash. */
  async artifact(key: number, sha256: string): Promise<ArtifactRow | undefined> {
    const r = await this.db.get('SELECT step, kind, file, name, media_type, bytes, sha256 FROM report_artifacts WHERE report_key = ? AND sha256 = ? ORDER BY step, file LIMIT 1', [key, sha256]);
    return r === undefined ? undefined : { step: num(r['step']), kind: str(r['kind']), file: str(r['file']), name: str(r['name']), mediaType: str(r['media_type']), bytes: num(r['bytes']), sha256: str(r['sha256']) };
  }

  /**
   * Of `shas`, those node `nodeId` has to send (in their order, each once): every one it has not sent
   * itself, stored or not (a node never gets another node's bytes by naming their hash).
   */
  async missingBlobs(nodeId: number, shas: readonly string[]): Promise<string[]> {
    const unique = [...new Set(shas)];
    const present = new Set<string>();
    for (let i = 0; i < unique.length; i += BLOB_LOOKUPS_PER_QUERY) {
      const chunk = unique.slice(i, i + BLOB_LOOKUPS_PER_QUERY);
      const rows = await this.db.all(`SELECT b.sha256 FROM blobs b JOIN node_blobs o ON o.sha256 = b.sha256 AND o.node_id = ? WHERE b.sha256 IN (${chunk.map(() => '?').join(', ')})`, [nodeId, ...chunk]);
      for (const r of rows) present.add(str(r['sha256']));
    }
    return unique.filter((sha) => !present.has(sha));
  }

  /**
   * Stores an artifact's bytes under their hash (the caller checked it; a second copy is not stored
   * again) and records that node `sender` sent them (undefined: bytes put in by the operator's tools).
   */
  async putBlob(sha256: string, data: Buffer, sender?: number): Promise<void> {
    if ((await this.db.get('SELECT 1 AS x FROM blobs WHERE sha256 = ?', [sha256])) === undefined) {
      if (this.blobs === 'in-db') {
        await this.db.run('INSERT INTO blobs (sha256, bytes, stored_at, data) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING', [sha256, data.length, now(), data]);
      } else {
        // The file first: a row means the bytes are there.
        await this.blobs.put(sha256, data);
        await this.db.run('INSERT INTO blobs (sha256, bytes, stored_at) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING', [sha256, data.length, now()]);
      }
    }
    if (sender !== undefined) await this.db.run('INSERT INTO node_blobs (node_id, sha256) VALUES (?, ?) ON CONFLICT (node_id, sha256) DO NOTHING', [sender, sha256]);
  }

  async blob(sha256: string): Promise<Buffer | undefined> {
    if (this.blobs !== 'in-db') {
      if ((await this.db.get('SELECT 1 AS x FROM blobs WHERE sha256 = ?', [sha256])) === undefined) return undefined;
      return this.blobs.get(sha256);
    }
    const r = await this.db.get('SELECT data FROM blobs WHERE sha256 = ?', [sha256]);
    return r === undefined ? undefined : Buffer.from(r['data'] as Uint8Array);
  }

  /**
   * Stores a pending report whose artifacts are all there, and queues its analysis, in one
   * transaction; a stored one is answered as it is (the job is queued once). Missing artifacts: a
   * ConflictError listing them.
   */
  async commitReport(key: number): Promise<ReportAck> {
    return this.db.tx(async (tx) => {
      const r = await this.#report(tx, key);
      if (r === undefined) throw new Error(`no report ${key}`);
      // Present: stored, and sent by this report's node (see missingBlobs).
      const arts = await tx.all(
        'SELECT DISTINCT a.sha256, a.bytes, o.sha256 AS present FROM report_artifacts a LEFT JOIN blobs b ON b.sha256 = a.sha256 LEFT JOIN node_blobs o ON o.sha256 = b.sha256 AND o.node_id = ? WHERE a.report_key = ? ORDER BY a.sha256',
        [r.nodeId, key],
      );
      const missing = arts.filter((a) => a['present'] === null).map((a) => str(a['sha256']));
      if (missing.length > 0) throw new ConflictError(`artifacts not received yet: ${missing.join(', ')}`);
      let storedAt = r.storedAt;
      if (r.status === 'pending') {
        storedAt = now();
        // Only the commit that changes the row queues the analysis. Two commits of one report at
        // once (a retry racing its original on another instance) both read 'pending' on
        // PostgreSQL; the second waits for the first's row lock, then updates nothing.
        const changed = await tx.run("UPDATE reports SET status = 'stored', stored_at = ? WHERE key = ? AND status = 'pending'", [storedAt, key]);
        if (changed === 1) {
          await tx.run("INSERT INTO jobs (kind, report_key, node_id, app, state, run_after, created_at) VALUES ('analyze-report', ?, ?, ?, 'queued', ?, ?)", [key, r.nodeId, r.app, storedAt, storedAt]);
        } else {
          storedAt = (await this.#report(tx, key))?.storedAt ?? storedAt;
        }
      }
      return {
        id: r.reportId,
        key,
        stored: true,
        manifestSha256: r.manifestSha256,
        artifacts: arts.map((a) => ({ sha256: str(a['sha256']), bytes: num(a['bytes']) })),
        storedAt: storedAt as string,
      };
    });
  }

  async listReports(f: ReportFilter = {}): Promise<ReportRow[]> {
    const where: string[] = ["r.status = 'stored'"];
    const params: (string | number)[] = [];
    const add = (sql: string, v: string | number | undefined) => {
      if (v === undefined) return;
      where.push(sql);
      params.push(v);
    };
    add('r.node_id = ?', f.nodeId);
    add('n.name = ?', f.node);
    add('r.app = ?', f.app);
    add('r.verdict = ?', f.verdict);
    add('r.created_at >= ?', f.since);
    add('r.created_at < ?', f.until);
    add('r.key < ?', f.before);
    const limit = Math.max(1, Math.min(500, f.limit ?? 50));
    const rows = await this.db.all(`SELECT ${REPORT_COLUMNS} FROM reports r JOIN nodes n ON n.id = r.node_id WHERE ${where.join(' AND ')} ORDER BY r.key DESC LIMIT ${limit}`, params);
    return rows.map(reportRow);
  }

  async countReports(): Promise<{ stored: number; pending: number; bytes: number }> {
    const r = await this.db.get("SELECT SUM(CASE WHEN status = 'stored' THEN 1 ELSE 0 END) AS s, SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS p, SUM(total_bytes) AS b FROM reports");
    return { stored: num(r?.['s'] ?? 0), pending: num(r?.['p'] ?? 0), bytes: num(r?.['b'] ?? 0) };
  }

  /** Bytes of stored and pending reports of a node, and how many it sent since `since`. */
  async nodeUsage(nodeId: number, since: string): Promise<{ bytes: number; recent: number }> {
    const r = await this.db.get('SELECT COALESCE(SUM(total_bytes), 0) AS b, SUM(CASE WHEN received_at >= ? THEN 1 ELSE 0 END) AS n FROM reports WHERE node_id = ?', [since, nodeId]);
    return { bytes: num(r?.['b'] ?? 0), recent: num(r?.['n'] ?? 0) };
  }

  // -- events, dropped notices, logs ---------------------------------------------------------------

  /** Stores the events not stored before (by node and event id); returns how many were new. */
  async addEvents(nodeId: number, events: readonly VerdictEvent[]): Promise<number> {
    return this.db.tx(async (tx) => {
      let n = 0;
      const touched = new Set<string>();
      for (const e of events) {
        const added = await tx.run('INSERT INTO events (node_id, event_id, app, verdict, reason, at, received_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id, event_id) DO NOTHING', [
          nodeId,
          e.id,
          e.app,
          e.verdict,
          e.reason,
          new Date(e.at).toISOString(),
          now(),
          JSON.stringify({ kernel: e.kernel ?? null, agent: e.agent ?? null }),
        ]);
        if (added > 0) touched.add(e.app);
        n += added;
      }
      if (touched.size > 0) await refreshFleet(tx, nodeId, [...touched]);
      return n;
    });
  }

  /**
   * Recomputes the fleet state of every app from its events: for events put in by other means than
   * addEvents (bench/controller.ts fills the store through SQL). addEvents keeps it current itself.
   */
  async refreshFleet(): Promise<void> {
    await this.db.tx(async (tx) => {
      for (const r of await tx.all('SELECT DISTINCT node_id, app FROM events ORDER BY node_id, app')) await refreshFleet(tx, num(r['node_id']), [str(r['app'])]);
    });
  }

  async addDropped(nodeId: number, notices: readonly DroppedNotice[]): Promise<number> {
    return this.db.tx(async (tx) => {
      let n = 0;
      for (const d of notices) {
        n += await tx.run('INSERT INTO dropped (node_id, report_id, bytes, dropped_at, reason, received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id, report_id) DO NOTHING', [
          nodeId,
          d.id,
          d.bytes,
          new Date(d.droppedAt).toISOString(),
          d.reason,
          now(),
        ]);
      }
      return n;
    });
  }

  async dropped(nodeId?: number): Promise<{ node: string; reportId: string; bytes: number; droppedAt: string; reason: string }[]> {
    const rows = await this.db.all(
      `SELECT n.name, d.report_id, d.bytes, d.dropped_at, d.reason FROM dropped d JOIN nodes n ON n.id = d.node_id ${nodeId === undefined ? '' : 'WHERE d.node_id = ?'} ORDER BY d.dropped_at DESC LIMIT 500`,
      nodeId === undefined ? [] : [nodeId],
    );
    return rows.map((r) => ({ node: str(r['name']), reportId: str(r['report_id']), bytes: num(r['bytes']), droppedAt: str(r['dropped_at']), reason: str(r['reason']) }));
  }

  /**
   * Stores app log lines, keeps at most `keep` per (node, app) (the oldest go), and queues one log
   * analysis for the app unless one is queued already.
   */
  async addLogs(nodeId: number, app: string, lines: readonly LogLine[], keep: number): Promise<void> {
    await this.db.tx(async (tx) => {
      const received = now();
      for (const l of lines) {
        await tx.run('INSERT INTO app_logs (node_id, app, at, severity, source, content, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [nodeId, app, l.at, l.severity, l.source, l.content, received]);
      }
      const cut = await tx.get('SELECT key FROM app_logs WHERE node_id = ? AND app = ? ORDER BY key DESC LIMIT 1 OFFSET ?', [nodeId, app, keep]);
      if (cut !== undefined) await tx.run('DELETE FROM app_logs WHERE node_id = ? AND app = ? AND key <= ?', [nodeId, app, num(cut['key'])]);
      const queued = await tx.get("SELECT 1 AS x FROM jobs WHERE kind = 'analyze-logs' AND state = 'queued' AND node_id = ? AND app = ?", [nodeId, app]);
      if (queued === undefined) {
        await tx.run("INSERT INTO jobs (kind, node_id, app, state, run_after, created_at) VALUES ('analyze-logs', ?, ?, 'queued', ?, ?)", [nodeId, app, received, received]);
      }
    });
  }

  async logs(nodeId: number, app: string, limit = 10_000): Promise<LogLine[]> {
    const rows = await this.db.all('SELECT at, severity, source, content FROM app_logs WHERE node_id = ? AND app = ? ORDER BY key DESC LIMIT ?', [nodeId, app, limit]);
    return rows.reverse().map((r) => ({ at: str(r['at']), severity: str(r['severity']), source: str(r['source']), content: str(r['content']) }));
  }

  // -- fleet ----------------------------------------------------------------------------------------

  /**
   * Each (node, app) with its latest verdict event, when it took that verdict (the first event of the
   * run of this verdict that ends with the latest one), and its latest report. One statement: it was
   * one query plus three per (node, app), 1200 round trips for 400 apps (bench/controller.ts); the
   * correlated subqueries each read one (node, app) through events_app or reports_latest (migration 3);
   * `cur` is materialized so that other_at is computed once per app, not once per event it bounds.
   */
  async fleet(nodeId?: number): Promise<FleetRow[]> {
    const scope = nodeId === undefined ? '' : 'WHERE f.node_id = ?';
    const params = nodeId === undefined ? [] : [nodeId];
    // fleet_state: each app's newest event and since when (kept by addEvents); the newest stored
    // report of each app through the reports_latest index.
    const rows = await this.db.all(
      `SELECT n.name AS node, f.node_id, f.app, f.verdict, f.reason, f.at, f.data, f.since, f.rep_key, rr.created_at AS rep_at
       FROM (SELECT s.*, (SELECT r.key FROM reports r WHERE r.node_id = s.node_id AND r.app = s.app AND r.status = 'stored' ORDER BY r.key DESC LIMIT 1) AS rep_key FROM fleet_state s) f
       JOIN nodes n ON n.id = f.node_id LEFT JOIN reports rr ON rr.key = f.rep_key
       ${scope}
       ORDER BY n.name, f.app`,
      params,
    );
    return rows.map((r) => {
      const data = JSON.parse(str(r['data'])) as { kernel: FleetRow['kernel']; agent: FleetRow['agent'] };
      const repKey = r['rep_key'] === null || r['rep_key'] === undefined ? null : num(r['rep_key']);
      return {
        node: str(r['node']),
        app: str(r['app']),
        verdict: str(r['verdict']),
        reason: str(r['reason']),
        since: str(r['since'] ?? r['at']),
        lastEventAt: str(r['at']),
        kernel: data.kernel,
        agent: data.agent,
        lastReportKey: repKey,
        lastReportAt: repKey === null ? null : str(r['rep_at']),
      };
    });
  }

  // -- findings and jobs ---------------------------------------------------------------------------

  async findings(reportKey: number): Promise<FindingRow[]> {
    return this.#findings('f.report_key = ?', [reportKey]);
  }

  async appFindings(nodeId: number, app: string): Promise<FindingRow[]> {
    return this.#findings('f.report_key IS NULL AND f.node_id = ? AND f.app = ?', [nodeId, app]);
  }

  async #findings(where: string, params: (string | number)[]): Promise<FindingRow[]> {
    const rows = await this.db.all(
      `SELECT f.key, f.report_key, n.name AS node, f.app, f.analyzer, f.severity, f.title, f.explanation, f.evidence, f.created_at FROM findings f JOIN nodes n ON n.id = f.node_id WHERE ${where} ORDER BY f.key`,
      params,
    );
    return rows
      .map((r) => ({
        key: num(r['key']),
        reportKey: r['report_key'] === null ? null : num(r['report_key']),
        node: str(r['node']),
        app: str(r['app']),
        analyzer: str(r['analyzer']),
        severity: str(r['severity']) as Severity,
        title: str(r['title']),
        explanation: str(r['explanation']),
        evidence: JSON.parse(str(r['evidence'])) as FindingEvidence[],
        createdAt: str(r['created_at']),
      }))
      .sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity] || a.key - b.key);
  }

  /**
   * Takes the oldest due job for `worker`: exactly one taker even with several controllers on one
   * PostgreSQL (`FOR UPDATE SKIP LOCKED`); SQLite serializes writers anyway. A job running for longer
   * than `staleMs` (its taker died) is due again.
   */
  async claimJob(worker: string, staleMs = 5 * 60_000): Promise<Job | undefined> {
    return this.db.tx(async (tx) => {
      const t = now();
      const stale = new Date(Date.now() - staleMs).toISOString();
      const lock = tx.dialect === 'postgres' ? 'FOR UPDATE SKIP LOCKED' : '';
      const j = await tx.get(
        `SELECT key, kind, report_key, node_id, app, attempts FROM jobs
         WHERE (state = 'queued' AND run_after <= ?) OR (state = 'running' AND locked_at < ?)
         ORDER BY key LIMIT 1 ${lock}`,
        [t, stale],
      );
      if (j === undefined) return undefined;
      await tx.run("UPDATE jobs SET state = 'running', locked_by = ?, locked_at = ?, attempts = attempts + 1 WHERE key = ?", [worker, t, num(j['key'])]);
      return {
        key: num(j['key']),
        kind: str(j['kind']) as Job['kind'],
        reportKey: j['report_key'] === null ? null : num(j['report_key']),
        nodeId: j['node_id'] === null ? null : num(j['node_id']),
        app: j['app'] === null ? null : str(j['app']),
        attempts: num(j['attempts']) + 1,
      };
    });
  }

  /** The job's findings replace its scope's previous ones, and the job is done: one transaction. */
  async completeJob(job: Job, worker: string, findings: readonly Finding[]): Promise<boolean> {
    return this.db.tx(async (tx) => {
      // Still ours? (A job taken again after looking stale must not be completed twice.)
      const mine = await tx.run("UPDATE jobs SET state = 'done', finished_at = ?, error = NULL WHERE key = ? AND state = 'running' AND locked_by = ?", [now(), job.key, worker]);
      if (mine === 0) return false;
      const t = now();
      if (job.kind === 'analyze-report') {
        await tx.run('DELETE FROM findings WHERE report_key = ?', [job.reportKey as number]);
      } else {
        await tx.run('DELETE FROM findings WHERE report_key IS NULL AND node_id = ? AND app = ?', [job.nodeId as number, job.app as string]);
      }
      for (const f of findings) {
        await tx.run('INSERT INTO findings (report_key, node_id, app, analyzer, severity, title, explanation, evidence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', [
          job.kind === 'analyze-report' ? job.reportKey : null,
          job.nodeId as number,
          job.app as string,
          f.analyzer,
          f.severity,
          f.title,
          f.explanation,
          JSON.stringify(f.evidence),
          t,
        ]);
      }
      if (job.kind === 'analyze-report') {
        const worst = [...findings].sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity])[0]?.severity ?? null;
        await tx.run('UPDATE reports SET findings = ?, worst_severity = ? WHERE key = ?', [findings.length, worst, job.reportKey as number]);
      }
      return true;
    });
  }

  /** A failed job is retried later (`retryAfterMs`), or marked failed after `maxAttempts`. */
  async failJob(job: Job, worker: string, error: string, retryAfterMs: number, maxAttempts: number): Promise<void> {
    const final = job.attempts >= maxAttempts;
    await this.db.run(`UPDATE jobs SET state = ?, run_after = ?, error = ?, locked_by = NULL, finished_at = ? WHERE key = ? AND locked_by = ?`, [
      final ? 'failed' : 'queued',
      new Date(Date.now() + retryAfterMs).toISOString(),
      error.slice(0, 2000),
      final ? now() : null,
      job.key,
      worker,
    ]);
  }

  async jobCounts(): Promise<Record<string, number>> {
    const rows = await this.db.all('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state');
    return Object.fromEntries(rows.map((r) => [str(r['state']), num(r['n'])]));
  }

  /**
   * Queues an analysis of the stored reports matching `f` (newest first, at most `f.limit` of them,
   * all without a limit) and, with `logs`, of every app with log lines; a report or app whose
   * analysis is queued already is skipped. Returns how many jobs were queued.
   */
  async enqueueReanalysis(f: ReportFilter, logs = false): Promise<number> {
    const t = now();
    let n = 0;
    let left = f.limit ?? Infinity;
    let before = f.before;
    while (left > 0) {
      const page = await this.listReports({ ...f, limit: Math.min(500, left), ...(before !== undefined ? { before } : {}) });
      if (page.length === 0) break;
      await this.db.tx(async (tx) => {
        for (const r of page) {
          if ((await tx.get("SELECT 1 AS x FROM jobs WHERE kind = 'analyze-report' AND state = 'queued' AND report_key = ?", [r.key])) !== undefined) continue;
          await tx.run("INSERT INTO jobs (kind, report_key, node_id, app, state, run_after, created_at) VALUES ('analyze-report', ?, ?, ?, 'queued', ?, ?)", [r.key, r.nodeId, r.app, t, t]);
          n++;
        }
      });
      left -= page.length;
      before = page[page.length - 1]?.key;
    }
    if (logs) {
      const apps = await this.db.all('SELECT DISTINCT node_id, app FROM app_logs');
      for (const a of apps) {
        const [nodeId, app] = [num(a['node_id']), str(a['app'])];
        n += await this.db.tx(async (tx) => {
          if ((await tx.get("SELECT 1 AS x FROM jobs WHERE kind = 'analyze-logs' AND state = 'queued' AND node_id = ? AND app = ?", [nodeId, app])) !== undefined) return 0;
          return tx.run("INSERT INTO jobs (kind, node_id, app, state, run_after, created_at) VALUES ('analyze-logs', ?, ?, 'queued', ?, ?)", [nodeId, app, t, t]);
        });
      }
    }
    return n;
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** Rows per refresh of the fleet state (under both databases' parameter limits). */
const FLEET_APPS_PER_QUERY = 200;

/**
 * Recomputes the fleet state (migrations.ts v5) of these apps of one node from their events, in the
 * transaction that added them. (Two transactions adding events of one app at once on PostgreSQL each
 * see only their own: the later write wins until the next event. A node's shipper sends its events
 * one batch at a time.)
 */
async function refreshFleet(tx: Db, nodeId: number, apps: readonly string[]): Promise<void> {
  for (let i = 0; i < apps.length; i += FLEET_APPS_PER_QUERY) {
    const chunk = apps.slice(i, i + FLEET_APPS_PER_QUERY);
    const where = `node_id = ? AND app IN (${chunk.map(() => '?').join(', ')})`;
    await tx.run(
      `INSERT INTO fleet_state (node_id, app, event_key, verdict, reason, at, data, since)
       SELECT node_id, app, event_key, verdict, reason, at, data, COALESCE(since, at) FROM (${FLEET_STATE_SELECT.replace('%PAIRS%', where)}) x WHERE TRUE
       ON CONFLICT (node_id, app) DO UPDATE SET event_key = excluded.event_key, verdict = excluded.verdict, reason = excluded.reason,
         at = excluded.at, data = excluded.data, since = excluded.since`,
      [nodeId, ...chunk],
    );
  }
}
