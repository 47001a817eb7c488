import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { ConsoleActiveProbe, type ConsoleActiveParams } from '../../../monitor/probes/console-active.js';
import type { ProbeResult } from '../../../monitor/types.js';
import { FakeConsole, type FakeConsoleOptions } from './fake-console.js';

const UPTIME = ' 12:00:01 up 3 min,  load average: 0.00, 0.01, 0.00\r\n';
const shell = (line: string) => (line === 'uptime' ? UPTIME : line.startsWith('echo ') ? `${line.slice(5)}\r\n` : undefined);

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(options: FakeConsoleOptions, params: ConsoleActiveParams = {}) {
  const cons = await FakeConsole.start(options);
  cleanups.push(() => cons.close());
  const probe = new ConsoleActiveProbe(params);
  const run = (timeoutMs = 500): Promise<ProbeResult> => probe.run({ name: 'vm', console: cons.path }, { timeoutMs, signal: new AbortController().signal });
  return { cons, probe, run };
}

const settle = () => new Promise((r) => setTimeout(r, 30));

describe('console-active', () => {
  test('`uptime` answered is a success; the probe disconnects at once', async () => {
    const { cons, run } = await setup({ answer: shell });
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ matched: 'load average', step: 'command' });
    expect(r.evidence?.received).toBe(UPTIME);
    await settle();
    expect(cons.connected).toBe(false);
    expect(cons.received).toEqual(['uptime\n']);
    const s = cons.sessions[0];
    expect((s?.closed ?? Infinity) - (s?.opened ?? 0)).toBeLessThan(200);
  });

  test('the echo of the command line cannot satisfy the expectation', async () => {
    // `echo OK` echoed by the tty contains OK; only the printed line may match.
    const { run } = await setup({ echo: true, answer: (l) => (l === 'echo OK' ? undefined : shell(l)) }, { command: 'echo OK', expect: 'OK' });
    const r = await run(300);
    expect(r.outcome).toBe('failure');
    expect(r.evidence?.received).toBe('echo OK\r\n');
  });

  test('with echo on, the real answer still matches', async () => {
    const { run } = await setup({ echo: true, answer: shell }, { command: 'echo OK', expect: '^OK' });
    expect((await run()).outcome).toBe('success');
  });

  test('login steps run in order before the command', async () => {
    const { cons, run } = await setup(
      {
        banner: '\r\ndebian login: ',
        answer: (l) => (l === 'root' ? 'Password: ' : l === 'secret' ? '\r\n# ' : shell(l)),
      },
      { login: [{ expect: 'login: $', send: 'root\n' }, { expect: 'Password: $', send: 'secret\n' }, { expect: '# $' }] },
    );
    const r = await run();
    expect(r.outcome).toBe('success');
    await settle();
    expect(cons.received).toEqual(['root\nsecret\nuptime\n']);
  });

  test('a login prompt that never comes fails at that step', async () => {
    const { run } = await setup({ banner: 'welcome\r\n', answer: shell }, { login: [{ expect: 'login:', send: 'root\n' }] });
    const r = await run(200);
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('console login[0]: timed out after 200 ms: no match for /login:/');
    expect(r.evidence).toMatchObject({ step: 'login[0]', received: 'welcome\r\n', timedOut: true });
  });

  test('a console that gives not a byte back (not even the echo) is unknown at the timeout: held by another client, or nothing reads it', async () => {
    const { cons, run } = await setup({});
    const t0 = performance.now();
    const r = await run(200);
    expect(performance.now() - t0).toBeLessThan(700);
    expect(r.outcome).toBe('unknown');
    expect(r.detail).toMatch(/timed out after 200 ms: nothing received, not even the echo \(the console is held by another client/);
    expect(r.evidence).toMatchObject({ timedOut: true, held: true, bytes: 0 });
    await settle();
    expect(cons.connected).toBe(false);
  });

  test('a console held by another client: the probe waits in the backlog and says unknown at its timeout (never a userspace hang)', async () => {
    const { cons, run } = await setup({ answer: shell });
    const other = connect(cons.path);
    cleanups.push(() => {
      other.destroy();
    });
    await new Promise((r) => other.once('connect', r));
    await settle();
    const r = await run(200);
    expect(r.outcome).toBe('unknown');
    // Once the other client leaves, the console answers again.
    other.destroy();
    await settle();
    expect((await run()).outcome).toBe('success');
  });

  test('a wrong answer fails with the received text as evidence', async () => {
    const { run } = await setup({ answer: () => 'sh: uptime: not found\r\n' });
    const r = await run(200);
    expect(r.outcome).toBe('failure');
    expect(r.evidence?.received).toBe('sh: uptime: not found\r\n');
  });

  test('no console configured is unknown; a missing socket is a failure; a closing console too', async () => {
    const probe = new ConsoleActiveProbe();
    const signal = new AbortController().signal;
    expect((await probe.run({ name: 'x' }, { timeoutMs: 100, signal })).outcome).toBe('unknown');
    const missing = await probe.run({ name: 'x', console: '/nonexistent/cons' }, { timeoutMs: 100, signal });
    expect(missing.outcome).toBe('failure');
    expect(missing.evidence).toMatchObject({ errno: 'ENOENT' });
    const dir = await mkdtemp(join(tmpdir(), 'closing-console-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const closing = createServer((s) => s.destroy());
    await new Promise<void>((r) => closing.listen(join(dir, 'c.sock'), r));
    cleanups.push(() => new Promise<void>((r) => closing.close(() => r())));
    const closed = await probe.run({ name: 'x', console: join(dir, 'c.sock') }, { timeoutMs: 500, signal });
    expect(closed.outcome).toBe('failure');
    expect(closed.detail).toMatch(/the console closed the connection/);
  });

  test('output is bounded while the probe keeps reading', async () => {
    const flood = 'x'.repeat(100_000);
    const { run } = await setup({ answer: (l) => (l === 'uptime' ? flood + UPTIME : undefined) }, { maxBytes: 4096 });
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence?.bytes).toBe(flood.length + UPTIME.length);
    expect((r.evidence?.received as string).length).toBeLessThanOrEqual(2000);
  });

  test('a caller abort is unknown', async () => {
    const { cons } = await setup({});
    const probe = new ConsoleActiveProbe();
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop')), 50);
    const r = await probe.run({ name: 'x', console: cons.path }, { timeoutMs: 5000, signal: ac.signal });
    expect(r.outcome).toBe('unknown');
  });

  test('Ctrl-A (the mux escape) in anything sent is refused up front', () => {
    expect(() => new ConsoleActiveProbe({ command: 'a\x01b' })).toThrow(/Ctrl-A/);
    expect(() => new ConsoleActiveProbe({ expect: '(' })).toThrow(/expect: not a valid regular expression/);
  });
});
