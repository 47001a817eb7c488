import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LineStream } from '../../../host-reader/qmp/line-stream.js';

/** A connected pair of unix sockets: `peer` is the far end the test writes into. */
async function socketPair(): Promise<{ local: Socket; peer: Socket; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'line-stream-'));
  const path = join(dir, 's.sock');
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const peerPromise = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const local = createConnection(path);
  await new Promise<void>((resolve) => local.once('connect', resolve));
  const peer = await peerPromise;
  peer.on('error', () => undefined);
  return {
    local,
    peer,
    cleanup: async () => {
      local.destroy();
      peer.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
});

async function pair(): Promise<{ local: Socket; peer: Socket }> {
  const p = await socketPair();
  cleanups.push(p.cleanup);
  return p;
}

describe('LineStream', () => {
  it('splits lines across and within chunks and drops a trailing CR', async () => {
    const { local, peer } = await pair();
    const lines = new LineStream(local);
    peer.write('one\r\ntw');
    expect(await lines.readLine()).toBe('one');
    peer.write('o\nthree\nfour\r');
    expect(await lines.readLine()).toBe('two');
    expect(await lines.readLine()).toBe('three');
    peer.write('\n\n');
    expect(await lines.readLine()).toBe('four');
    expect(await lines.readLine()).toBe('');
  });

  it('keeps multi-byte UTF-8 characters split across chunks intact', async () => {
    const { local, peer } = await pair();
    const lines = new LineStream(local);
    const bytes = Buffer.from('h\u00e9\u20ac\n');
    peer.write(bytes.subarray(0, 2));
    await new Promise((resolve) => setTimeout(resolve, 10));
    peer.write(bytes.subarray(2));
    expect(await lines.readLine()).toBe('h\u00e9\u20ac');
  });

  it('returns queued lines, then null with the reason, after the peer closes', async () => {
    const { local, peer } = await pair();
    const lines = new LineStream(local);
    peer.end('last\npartial');
    expect(await lines.readLine()).toBe('last');
    expect(await lines.readLine()).toBeNull();
    expect(lines.end).toEqual({ kind: 'eof', discardedBytes: 7 });
    expect(await lines.readLine()).toBeNull();
    expect(lines.writeLine('ignored')).toBe(false);
  });

  it('accepts a line of exactly maxLineBytes and refuses one byte more, bounding the buffer', async () => {
    const { local, peer } = await pair();
    const lines = new LineStream(local, { maxLineBytes: 1000 });
    peer.write(`${'a'.repeat(1000)}\n`);
    expect(await lines.readLine()).toBe('a'.repeat(1000));
    peer.write('b'.repeat(600));
    peer.write('b'.repeat(600));
    peer.write('\n');
    expect(await lines.readLine()).toBeNull();
    expect(lines.end).toMatchObject({ kind: 'overflow', limit: 1000, receivedBytes: 1200 });
    expect((lines.end as { head: string }).head).toBe('b'.repeat(160));
    expect(lines.peakBufferedBytes).toBeLessThanOrEqual(1000);
    expect(local.destroyed).toBe(true);
    expect(await lines.closed).toMatchObject({ kind: 'overflow' });
  });

  it('never holds more than the limit of an endless line', async () => {
    const { local, peer } = await pair();
    const limit = 256 * 1024;
    const lines = new LineStream(local, { maxLineBytes: limit });
    const chunk = Buffer.alloc(16 * 1024, 0x41);
    let written = 0;
    while (!peer.destroyed && written < 64 * 1024 * 1024) {
      written += chunk.length;
      if (!peer.write(chunk)) {
        await new Promise<void>((resolve) => {
          peer.once('drain', resolve);
          peer.once('close', resolve);
        });
      }
      if (lines.end !== undefined) break;
    }
    expect(await lines.readLine()).toBeNull();
    expect(lines.end?.kind).toBe('overflow');
    expect(lines.peakBufferedBytes).toBeLessThanOrEqual(limit);
  });

  it('pauses the socket when lines pile up unread, and resumes as they are read', async () => {
    const { local, peer } = await pair();
    const lines = new LineStream(local, { maxQueuedLines: 4 });
    peer.write('1\n2\n3\n4\n5\n6\n');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(local.isPaused()).toBe(true);
    const got: (string | null)[] = [];
    for (let i = 0; i < 6; i += 1) got.push(await lines.readLine());
    expect(got).toEqual(['1', '2', '3', '4', '5', '6']);
    expect(local.isPaused()).toBe(false);
  });

  it('close() ends a pending read with null and is idempotent', async () => {
    const { local } = await pair();
    const lines = new LineStream(local);
    const pending = lines.readLine();
    await lines.close();
    expect(await pending).toBeNull();
    expect(lines.end).toEqual({ kind: 'closed' });
    await lines.close();
  });

  it('refuses programmer errors at once', async () => {
    const { local } = await pair();
    expect(() => new LineStream(local, { maxLineBytes: 0 })).toThrow(RangeError);
    const lines = new LineStream(local);
    expect(() => lines.writeLine('a\nb')).toThrow(TypeError);
    const pending = lines.readLine();
    expect(() => lines.readLine()).toThrow(/already pending/);
    local.destroy();
    await pending.catch(() => undefined);
  });
});
