import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeCommand, probeHttp, probeTcp, reasonOf, runCheck, runChecks } from '../../guest-agent/checks.js';
import { formatChecks } from '../../protocol/mark.js';

let tcp: Server;
let tcpPort: number;
let closedPort: number;
let http: HttpServer;
let httpPort: number;
const sockets = new Set<{ destroy(): void }>();

beforeAll(async () => {
  tcp = createServer((s) => s.end());
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  tcpPort = (tcp.address() as AddressInfo).port;
  // A port that was free a moment ago: connecting to it is refused.
  const tmp = createServer();
  await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
  closedPort = (tmp.address() as AddressInfo).port;
  await new Promise((r) => tmp.close(r));
  http = createHttpServer((req, res) => {
    if (req.url === '/ok') res.end('fine');
    else if (req.url === '/redirect') res.writeHead(302, { location: '/ok' }).end();
    else if (req.url === '/down') res.writeHead(503).end('down');
    // '/hang': never answers
  });
  http.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  httpPort = (http.address() as AddressInfo).port;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => tcp.close(r));
  await new Promise((r) => http.close(r));
});

describe('probeTcp (a local server on port 0)', () => {
  it('connects: ok', async () => {
    expect(await probeTcp('127.0.0.1', tcpPort, 2000)).toEqual({ ok: true });
  });
  it('nothing listening: refused', async () => {
    expect(await probeTcp('127.0.0.1', closedPort, 2000)).toEqual({ ok: false, reason: 'refused' });
  });
});

describe('probeHttp (a local server on 127.0.0.1 port 0)', () => {
  const url = (p: string) => `http://127.0.0.1:${httpPort}${p}`;
  it('2xx and 3xx: ok', async () => {
    expect(await probeHttp(url('/ok'), 2000)).toEqual({ ok: true });
    expect(await probeHttp(url('/redirect'), 2000)).toEqual({ ok: true });
  });
  it('5xx: fail:http-503', async () => {
    expect(await probeHttp(url('/down'), 2000)).toEqual({ ok: false, reason: 'http-503' });
  });
  it('no answer within the timeout: timeout, promptly', async () => {
    const t0 = Date.now();
    expect(await probeHttp(url('/hang'), 300)).toEqual({ ok: false, reason: 'timeout' });
    expect(Date.now() - t0).toBeLessThan(2000);
  });
  it('refused', async () => {
    expect(await probeHttp(`http://127.0.0.1:${closedPort}/`, 2000)).toEqual({ ok: false, reason: 'refused' });
  });
  it('a URL that cannot be requested: bad-url', async () => {
    expect(await probeHttp('not a url', 2000)).toEqual({ ok: false, reason: 'bad-url' });
  });
});

describe('probeCommand', () => {
  it('exit 0: ok; otherwise exit-N', async () => {
    expect(await probeCommand('true', 2000)).toEqual({ ok: true });
    expect(await probeCommand('exit 3', 2000)).toEqual({ ok: false, reason: 'exit-3' });
  });
  it('killed by a signal: signal-NAME', async () => {
    expect(await probeCommand('kill -TERM $$', 2000)).toEqual({ ok: false, reason: 'signal-SIGTERM' });
  });
  /** Runs `command` (which writes a background child's pid to $PIDFILE); returns the outcome and the child's state after it. */
  async function withBackgroundChild(command: string, timeoutMs: number) {
    const dir = mkdtempSync(join(tmpdir(), 'eve-diag-check-'));
    try {
      const pidFile = join(dir, 'pid');
      const t0 = Date.now();
      const outcome = await probeCommand(command.replace('$PIDFILE', pidFile), timeoutMs);
      const ms = Date.now() - t0;
      const child = readFileSync(pidFile, 'utf8').trim();
      await new Promise((r) => setTimeout(r, 200));
      let state = 'gone';
      try {
        state = execFileSync('ps', ['-o', 'stat=', '-p', child]).toString().trim();
      } catch {
        // ps exits 1: no such process
      }
      // Gone, or a zombie about to be reaped by init.
      return { outcome, ms, child, state, gone: state === 'gone' || state.startsWith('Z') };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  it('timeout kills the whole process group (children too)', async () => {
    const r = await withBackgroundChild('sleep 30 & echo $! > $PIDFILE; wait', 300);
    expect(r.outcome).toEqual({ ok: false, reason: 'timeout' });
    expect(r.ms).toBeLessThan(2000);
    expect(r.gone, `background sleep ${r.child}: ${r.state}`).toBe(true);
  });
  it('a check that succeeds leaves no background child behind (its process group is killed)', async () => {
    const r = await withBackgroundChild('sleep 30 & echo $! > $PIDFILE', 2000);
    expect(r.outcome).toEqual({ ok: true });
    expect(r.gone, `background sleep ${r.child}: ${r.state}`).toBe(true);
  });
  it('a shell that does not exist: spawn-enoent', async () => {
    expect(await probeCommand('true', 2000, '/nonexistent/sh')).toEqual({ ok: false, reason: 'spawn-enoent' });
  });
});

describe('runChecks / formatChecks', () => {
  it('runs them together and formats them in order', async () => {
    const results = await runChecks([
      { name: 'web', kind: 'http', url: `http://127.0.0.1:${httpPort}/ok`, timeoutMs: 2000 },
      { name: 'db', kind: 'tcp', host: '127.0.0.1', port: closedPort, timeoutMs: 2000 },
      { name: 'slow', kind: 'http', url: `http://127.0.0.1:${httpPort}/hang`, timeoutMs: 200 },
      { name: 'cmd', kind: 'command', command: 'true', timeoutMs: 2000 },
    ]);
    expect(formatChecks(results)).toBe('check.web=ok check.db=fail:refused check.slow=fail:timeout check.cmd=ok');
  });
  it('runCheck never rejects', async () => {
    const bad = { name: 'x', kind: 'tcp', host: '127.0.0.1', port: -1, timeoutMs: 100 } as const;
    expect(await runCheck(bad)).toEqual({ name: 'x', outcome: { ok: false, reason: 'error' } });
  });
  it('reasonOf maps errno codes to tokens', () => {
    expect(reasonOf({ code: 'ECONNRESET' })).toBe('reset');
    expect(reasonOf({ code: 'ENOTFOUND' })).toBe('dns');
    expect(reasonOf({ code: 'EAI_AGAIN' })).toBe('dns');
    expect(reasonOf({ code: 'EACCES' })).toBe('eacces');
    expect(reasonOf({ code: 'weird code!' })).toBe('error');
    expect(reasonOf(undefined)).toBe('error');
  });
});
