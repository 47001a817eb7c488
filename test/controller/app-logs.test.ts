import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { analyze } from '../../controller/analyzers/index.js';
import { parseLogEntries } from '../../controller/logs.js';
import { startController, type TestController } from '../helpers/controller.js';

/**
 * The app-logs analyzer: the seed's first iteration done by the controller (the guest agent's marks,
 * which reach EVE's app logs through the console, stop) and eden's panic test (a panic in the app's
 * logs). The lines are EVE `LogEntry` JSON as `eden pod logs --format=json` prints them, section
 * header and all (the shape in ../shared/DESIGN.md's EVE facts). They are written here, not captured
 * from an EVE node: there is none on these machines.
 */
const T0 = Date.parse('2026-12-01T10:00:00Z');
const iso = (s: number) => new Date(T0 + s * 1000).toISOString();
const entry = (s: number, content: string, n: number) => JSON.stringify({ severity: 'INFO', source: '6a5b-4c1d.1.1', content, msgid: String(n), timestamp: iso(s) });
const mark = (seq: number, s: number) => `eve-diag mark seq=${seq} uptime=${(100 + s).toFixed(2)} load=0.05 mem_avail=401236kB agent=0.1.0`;

/** Marks every 60 s for 5 min; then only other lines for `silentS` more seconds; optionally a panic. */
function edenLogs(silentS: number, panic = false): string {
  const lines = ['App logs list for app 6a5b-4c1d:'];
  let n = 0;
  for (let s = 0; s <= 300; s += 60) lines.push(entry(s, mark(s / 60 + 1, s), ++n));
  for (let s = 310; s <= 300 + silentS; s += 20) lines.push(entry(s, `app: request ${s} served`, ++n));
  if (panic) {
    lines.push(entry(300 + silentS + 1, '[  400.000001] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b', ++n));
    lines.push(entry(300 + silentS + 1, '[  400.000002] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-57-amd64 #1  Debian 6.1.192-3', ++n));
  }
  return `${lines.join('\n')}\n`;
}

const analyzeLogs = async (text: string, nowS: number) =>
  analyze({ node: 'n1', app: 'vm1', artifacts: [], logs: parseLogEntries(text).lines }, { now: () => T0 + nowS * 1000 });

describe('app-logs analyzer', () => {
  test('marks every 60 s then none for 4 periods while the app still logs: "Marks stopped"', async () => {
    const f = await analyzeLogs(edenLogs(240), 540);
    expect(f.map((x) => [x.severity, x.title])).toEqual([['error', 'Marks stopped: none for 240 s (period 60 s)']]);
    expect(f[0]?.evidence[0]?.excerpt).toBe(mark(6, 300));
    expect(f[0]?.evidence[0]?.lineStart).toBe(6);
  });

  test('marks that keep coming, or a silence of less than 3 periods: nothing', async () => {
    expect(await analyzeLogs(edenLogs(120), 420)).toEqual([]);
    expect(await analyzeLogs(edenLogs(0), 300)).toEqual([]);
  });

  test('time passing with no line at all counts too (the logs stopped reaching the controller)', async () => {
    const f = await analyzeLogs(edenLogs(0), 300 + 600);
    expect(f.map((x) => x.title)).toEqual(['Marks stopped: none for 600 s (period 60 s)']);
  });

  test("eden's panic test: a kernel panic in the app's logs", async () => {
    const f = await analyzeLogs(edenLogs(30, true), 331);
    expect(f.map((x) => [x.analyzer, x.severity, x.title])).toEqual([['app-logs', 'critical', 'Kernel panic: Attempted to kill init! exitcode=0x0000000b']]);
  });
});

describe('through the controller: POST /api/v1/logs, then the analysis of the app', () => {
  let c: TestController;
  beforeAll(async () => {
    c = await startController({ analyze: { now: () => T0 + 600 * 1000 } });
  });
  afterAll(async () => {
    await c?.close();
  });

  test('eden JSON (plain and gzip) is stored, the app is analyzed, the findings are read back', async () => {
    const token = await c.nodeToken('edge-1');
    const post = (body: BodyInit, headers: Record<string, string>) =>
      fetch(`${c.url}/api/v1/logs?app=vm1`, { method: 'POST', headers: { authorization: `Bearer ${token}`, ...headers }, body });
    const text = edenLogs(240, true);
    const half = text.split('\n');
    const first = half.slice(0, 6).join('\n');
    const rest = half.slice(6).join('\n');
    const r1 = await post(first, { 'content-type': 'application/x-ndjson' });
    expect(r1.status, await r1.clone().text()).toBe(200);
    expect(await r1.json()).toMatchObject({ stored: 5, skipped: 1 });
    const r2 = await post(new Uint8Array(gzipSync(rest)), { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' });
    expect(r2.status, await r2.clone().text()).toBe(200);
    const admin = { authorization: `Bearer ${c.admin}` };
    let findings: { title: string }[] = [];
    for (let i = 0; i < 100; i++) {
      const r = (await (await fetch(`${c.url}/api/v1/apps/edge-1/vm1`, { headers: admin })).json()) as { findings: { title: string }[]; logs: number };
      findings = r.findings;
      if (findings.length >= 2) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(findings.map((f) => f.title).sort()).toEqual(['Kernel panic: Attempted to kill init! exitcode=0x0000000b', 'Marks stopped: none for 300 s (period 60 s)']);
  });
});
