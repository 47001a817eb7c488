import { describe, expect, test } from 'vitest';
import type { QmpClient } from '../../../host-reader/qmp/index.js';
import { QmpLinks } from '../../../monitor/probes/qmp-link.js';

describe('QmpLink reconnect backoff', () => {
  test('after a failed connect, callers fail fast until the backoff ends; it doubles, caps, and resets on success', async () => {
    let now = 0;
    let attempts = 0;
    let up = false;
    const fake = { state: 'running', closed: new Promise(() => undefined), close: async () => undefined } as unknown as QmpClient;
    const links = new QmpLinks({
      now: () => now,
      backoffMs: 100,
      maxBackoffMs: 350,
      connect: async () => {
        attempts++;
        if (!up) throw new Error('ECONNREFUSED');
        return fake;
      },
    });
    const link = links.acquire('/run/vm/qmp');
    const tryAt = async (t: number) => {
      now = t;
      return link.client().then(
        () => 'ok',
        (e: Error) => e.message,
      );
    };
    expect(await tryAt(0)).toBe('ECONNREFUSED'); // attempt 1; next at 100
    expect(await tryAt(50)).toBe('ECONNREFUSED'); // fast fail, no attempt
    expect(attempts).toBe(1);
    expect(await tryAt(100)).toBe('ECONNREFUSED'); // attempt 2; next at 300
    expect(await tryAt(299)).toBe('ECONNREFUSED');
    expect(attempts).toBe(2);
    expect(await tryAt(300)).toBe('ECONNREFUSED'); // attempt 3; next at 650 (400 capped to 350)
    expect(await tryAt(649)).toBe('ECONNREFUSED');
    expect(attempts).toBe(3);
    up = true;
    expect(await tryAt(650)).toBe('ok');
    expect(attempts).toBe(4);
    await links.closeAll();
  });
});
