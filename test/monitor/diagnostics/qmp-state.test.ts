import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { HmpRegistersCollector } from '../../../monitor/diagnostics/hmp-registers.js';
import { QmpStateCollector } from '../../../monitor/diagnostics/qmp-state.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';

let server: FakeQmpServer;
beforeEach(async () => {
  server = await FakeQmpServer.start();
  server.handle('query-status', { return: { running: true, singlestep: false, status: 'running' } });
  server.handle('query-cpus-fast', { return: [{ 'cpu-index': 0, 'thread-id': 1234, 'qom-path': '/machine/unattached/device[0]', target: 'x86_64' }] });
  server.handle('query-blockstats', { return: [] });
});
afterEach(async () => {
  await server.close();
});
const opts = (maxBytes = 64 * 1024, timeoutMs = 2000) => ({ timeoutMs, signal: new AbortController().signal, maxBytes });

describe('QmpStateCollector', () => {
  test('one JSON artifact per query, and a summary', async () => {
    const r = await new QmpStateCollector().collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.ok).toBe(true);
    expect(r.artifacts.map((a) => a.name)).toEqual(['qmp-query-status.json', 'qmp-query-cpus-fast.json', 'qmp-query-blockstats.json']);
    for (const a of r.artifacts) expect(a.mediaType).toBe('application/json');
    expect(JSON.parse(r.artifacts[0]?.data as string)).toEqual({
      command: 'query-status',
      return: { running: true, singlestep: false, status: 'running' },
    });
    expect(r.summary).toBe('qmp: status running, 1 vCPU, 0 block devices');
    await expect.poll(() => server.connectionCount).toBe(0); // closed its session
  });

  test('a failing query is recorded and the others still run', async () => {
    server.handle('query-cpus-fast', { error: { class: 'CommandNotFound', desc: 'The command query-cpus-fast has not been found' } });
    const r = await new QmpStateCollector().collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.ok).toBe(false);
    expect(r.artifacts).toHaveLength(3);
    expect(JSON.parse(r.artifacts[1]?.data as string)).toMatchObject({ command: 'query-cpus-fast', error: { class: 'CommandNotFound' } });
    expect(r.summary).toMatch(/failed: query-cpus-fast/);
  });

  test('a paused VM says so', async () => {
    server.handle('query-status', { return: { running: false, status: 'paused' } });
    const r = await new QmpStateCollector({ commands: ['query-status'] }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.summary).toBe('qmp: status paused (not running)');
  });

  test('a reply larger than the cap stays valid JSON, marked truncated', async () => {
    server.handle('query-blockstats', { return: Array.from({ length: 500 }, (_, i) => ({ device: `d${i}`, stats: { rd_bytes: i } })) });
    const r = await new QmpStateCollector({ commands: ['query-blockstats'] }).collect({ name: 'vm', qmp: server.path }, opts(2000));
    const a = r.artifacts[0];
    expect(a?.truncated).toBe(true);
    expect(Buffer.byteLength(a?.data as string)).toBeLessThanOrEqual(2000);
    expect(JSON.parse(a?.data as string)).toMatchObject({ truncated: true });
  });

  test('a dead target: ok false with the reason', async () => {
    const r = await new QmpStateCollector().collect({ name: 'vm', qmp: join(server.dir, 'nope.sock') }, opts());
    expect(r).toMatchObject({ ok: false, artifacts: [] });
    expect(r.summary).toMatch(/qmp-state: .*ENOENT|connect/i);
    expect((await new QmpStateCollector().collect({ name: 'vm' }, opts())).summary).toMatch(/no QMP socket/);
  });

  test('a hung QEMU: bounded by the timeout', async () => {
    server.handle('query-status', { noReply: true });
    const t0 = Date.now();
    const r = await new QmpStateCollector().collect({ name: 'vm', qmp: server.path }, opts(4096, 200));
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/timed out/);
  });

  test('only queries', () => {
    expect(() => new QmpStateCollector({ commands: ['quit'] })).toThrow(RangeError);
  });
});

describe('HmpRegistersCollector', () => {
  test('info registers -a as a sanitized text artifact', async () => {
    server.handle('human-monitor-command', (cmd) => ({
      return: cmd.arguments?.['command-line'] === 'info registers -a' ? '\r\nCPU#0\r\nRAX=0000000000000000 RBX=0000000000000001\r\n\r\nCPU#1\r\nRAX=2\r\n' : '',
    }));
    const r = await new HmpRegistersCollector().collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.ok).toBe(true);
    expect(r.artifacts[0]).toMatchObject({ name: 'registers.txt', mediaType: 'text/plain' });
    expect(r.artifacts[0]?.data).toBe('\nCPU#0\nRAX=0000000000000000 RBX=0000000000000001\n\nCPU#1\nRAX=2\n');
    expect(r.summary).toMatch(/^info registers -a: 2 CPUs/);
  });

  test('empty output, a QMP error, a dead target: ok false', async () => {
    server.handle('human-monitor-command', { return: '' });
    expect((await new HmpRegistersCollector().collect({ name: 'vm', qmp: server.path }, opts())).ok).toBe(false);
    server.handle('human-monitor-command', { error: { class: 'GenericError', desc: 'boom' } });
    const e = await new HmpRegistersCollector().collect({ name: 'vm', qmp: server.path }, opts());
    expect(e.ok).toBe(false);
    expect(e.summary).toMatch(/boom/);
    expect((await new HmpRegistersCollector().collect({ name: 'vm', qmp: join(server.dir, 'x') }, opts())).ok).toBe(false);
  });

  test('bounded by maxBytes', async () => {
    server.handle('human-monitor-command', { return: 'R'.repeat(10_000) });
    const r = await new HmpRegistersCollector().collect({ name: 'vm', qmp: server.path }, opts(100));
    expect(r.artifacts[0]?.data).toHaveLength(100);
    expect(r.artifacts[0]?.truncated).toBe(true);
  });

  test('only read-only info commands', () => {
    expect(() => new HmpRegistersCollector({ command: 'quit' })).toThrow(RangeError);
  });
});
