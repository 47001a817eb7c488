import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { GuestPingProbe } from '../../../monitor/probes/guest-ping.js';
import type { ProbeResult } from '../../../monitor/types.js';

/**
 * A tiny fake qemu-guest-agent behind its host chardev socket: no greeting; 0xFF resets its parser;
 * `guest-sync-delimited` answers 0xFF + `{"return": id}`; `guest-ping` answers `{"return": {}}`.
 * `stale` is written first on each connection (what an earlier client left in the channel).
 */
async function fakeQga(opts: { stale?: string; silent?: boolean; pingError?: boolean } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'fake-qga-'));
  const path = join(dir, 'qga.sock');
  const received: string[] = [];
  const server: Server = createServer((s: Socket) => {
    s.on('error', () => undefined);
    if (opts.stale !== undefined) s.write(Buffer.from(opts.stale, 'latin1'));
    let buf = '';
    s.on('data', (b: Buffer) => {
      for (const byte of b) {
        if (byte === 0xff) {
          buf = ''; // the agent's parser resets on an invalid UTF-8 byte
          received.push('<FF>');
          continue;
        }
        buf += String.fromCharCode(byte);
        if (byte !== 0x0a) continue;
        const line = buf.trim();
        buf = '';
        received.push(line);
        if (opts.silent === true) continue;
        const cmd = JSON.parse(line) as { execute: string; arguments?: { id?: number } };
        if (cmd.execute === 'guest-sync-delimited') s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`${JSON.stringify({ return: cmd.arguments?.id })}\n`)]));
        else if (cmd.execute === 'guest-ping') s.write(opts.pingError === true ? '{"error": {"class": "GenericError", "desc": "frozen"}}\n' : '{"return": {}}\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  cleanups.push(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });
  return { path, received };
}

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const run = (qga: string | undefined, timeoutMs = 500): Promise<ProbeResult> =>
  new GuestPingProbe().run(qga === undefined ? { name: 'vm' } : { name: 'vm', qga }, { timeoutMs, signal: new AbortController().signal });

describe('guest-ping', () => {
  test('sync then ping is a success', async () => {
    const qga = await fakeQga();
    const r = await run(qga.path);
    expect(r.outcome).toBe('success');
    expect(qga.received[0]).toBe('<FF>');
    expect(qga.received[1]).toMatch(/^\{"execute":"guest-sync-delimited","arguments":\{"id":\d+\}\}$/);
    expect(qga.received[2]).toBe('{"execute":"guest-ping"}');
  });

  test('stale replies left in the channel are skipped', async () => {
    const qga = await fakeQga({ stale: '{"return": {}}\n\xff{"return": 12}\ngarbage\n' });
    expect((await run(qga.path)).outcome).toBe('success');
  });

  test('an agent that never answers is a failure at the timeout', async () => {
    const qga = await fakeQga({ silent: true });
    const r = await run(qga.path, 200);
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('qemu-guest-agent guest-sync-delimited: timed out after 200 ms (no agent answer)');
  });

  test('an error reply is a failure with the error as evidence', async () => {
    const qga = await fakeQga({ pingError: true });
    const r = await run(qga.path);
    expect(r.outcome).toBe('failure');
    expect(r.evidence?.error).toEqual({ class: 'GenericError', desc: 'frozen' });
  });

  test('no socket configured is unknown; a missing socket a failure', async () => {
    expect((await run(undefined)).outcome).toBe('unknown');
    const r = await run('/nonexistent/qga.sock');
    expect(r.outcome).toBe('failure');
    expect(r.evidence).toMatchObject({ errno: 'ENOENT', step: 'connect' });
  });

  test('a channel that floods stops being read at the cap: a failure naming it, the socket closed by us', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flood-qga-'));
    const path = join(dir, 'qga.sock');
    let sent = 0;
    let closedAfter = -1;
    const server = createServer((s: Socket) => {
      s.on('error', () => undefined);
      s.on('close', () => (closedAfter = sent));
      // 20 MiB in 1 KiB writes, yielding between them: the guest side of a flood.
      const chunk = Buffer.alloc(1024, 0x41);
      const pump = () => {
        if (s.destroyed || sent >= 20 * 1024 * 1024) return;
        sent += chunk.length;
        if (s.write(chunk)) setImmediate(pump);
        else s.once('drain', pump);
      };
      pump();
    });
    await new Promise<void>((r) => server.listen(path, r));
    cleanups.push(async () => {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    });
    const r = await new GuestPingProbe({ maxBytes: 4096 }).run({ name: 'vm', qga: path }, { timeoutMs: 5000, signal: new AbortController().signal });
    expect(r.outcome).toBe('failure');
    expect(r.detail).toMatch(/more than 4096 bytes without a reply/);
    for (let i = 0; i < 100 && closedAfter < 0; i++) await new Promise((res) => setTimeout(res, 10));
    // Closed long before the flood's end: what the kernel buffers in between is all the guest got in.
    expect(closedAfter).toBeGreaterThanOrEqual(0);
    expect(closedAfter).toBeLessThan(2 * 1024 * 1024);
  });
});

