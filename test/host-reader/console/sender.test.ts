import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ConsoleAbortError, ConsoleConnectError, ConsoleTimeoutError } from '../../../host-reader/console/errors.js';
import { sendToConsole } from '../../../host-reader/console/sender.js';
import { FakeConsole } from './fake-console.js';

let cons: FakeConsole;
beforeEach(async () => {
  cons = await FakeConsole.start();
});
afterEach(async () => {
  await cons.close();
});

const until = async (cond: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('sendToConsole', () => {
  test('writes the bytes in order, with pauses, then disconnects', async () => {
    const t0 = Date.now();
    const r = await sendToConsole(cons.path, ['\x01b', { pauseMs: 50 }, Buffer.from('w')], { lingerMs: 10 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(50);
    expect(r.bytesWritten).toBe(3);
    await until(() => cons.bytes.length === 3);
    expect(cons.bytes.toString('latin1')).toBe('\x01bw');
    expect(cons.accepted).toBe(1);
  });

  test('keeps reading while connected: a flood from QEMU is drained and only keepBytes kept', async () => {
    cons.floodOnConnect(4 * 1024 * 1024);
    const r = await sendToConsole(cons.path, ['x'], { lingerMs: 300, keepBytes: 10 });
    // Far more than a unix socket buffer holds: only a reader that keeps reading gets this much.
    expect(r.bytesReceived).toBeGreaterThan(1024 * 1024);
    expect(r.received.toString()).toBe('xxxxxxxxxx');
  });

  test('the whole session is bounded by timeoutMs', async () => {
    const t0 = Date.now();
    const e = await sendToConsole(cons.path, ['a', { pauseMs: 5000 }, 'b'], { timeoutMs: 100 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConsoleTimeoutError);
    expect(Date.now() - t0).toBeLessThan(1000);
    await until(() => cons.bytes.length === 1);
    expect(cons.bytes.toString()).toBe('a');
  });

  test('an AbortSignal ends it with ConsoleAbortError', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('enough')), 30);
    await expect(sendToConsole(cons.path, [{ pauseMs: 5000 }], { signal: ac.signal })).rejects.toBeInstanceOf(ConsoleAbortError);
    const pre = new AbortController();
    pre.abort();
    await expect(sendToConsole(cons.path, ['x'], { signal: pre.signal })).rejects.toBeInstanceOf(ConsoleAbortError);
  });

  test('no socket: ConsoleConnectError with the errno cause', async () => {
    const e = await sendToConsole(join(cons.dir, 'missing.sock'), ['x']).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConsoleConnectError);
    expect(((e as ConsoleConnectError).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  test('a peer that closes during the linger is fine; one that closes before the writes is an error', async () => {
    const path = join(cons.dir, 'closing.sock');
    const server = createServer((s) => setTimeout(() => s.destroy(), 20));
    await new Promise<void>((r) => server.listen(path, r));
    try {
      await expect(sendToConsole(path, ['x'], { lingerMs: 200 })).resolves.toMatchObject({ bytesWritten: 1 });
      await expect(sendToConsole(path, [{ pauseMs: 200 }, 'x'])).rejects.toThrow(/closed by QEMU/);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('bad arguments throw at once', async () => {
    await expect(sendToConsole('', ['x'])).rejects.toThrow(TypeError);
    await expect(sendToConsole(cons.path, [{ pauseMs: -1 }])).rejects.toThrow(TypeError);
    await expect(sendToConsole(cons.path, ['x'], { keepBytes: -1 })).rejects.toThrow(RangeError);
  });
});
