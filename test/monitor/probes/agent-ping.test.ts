import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { serveLines } from '../../../guest-agent/responder.js';
import { AgentPingProbe, agentPortAddress } from '../../../monitor/probes/agent-ping.js';
import type { ProbeResult } from '../../../monitor/types.js';

/**
 * The agent-ping probe against the agent's own responder code (guest-agent/responder.ts serveLines)
 * behind a unix socket, as a chardev socket would carry it, and against a few misbehaving peers.
 */
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function peer(onConnection: (s: Socket) => void, tcp = false): Promise<string> {
  const server: Server = createServer((s) => {
    s.on('error', () => undefined);
    onConnection(s);
  });
  const dir = await mkdtemp(join(tmpdir(), 'agent-ping-'));
  const path = join(dir, 'agent.sock');
  await new Promise<void>((r) => (tcp ? server.listen(0, '127.0.0.1', r) : server.listen(path, r)));
  cleanups.push(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });
  return tcp ? `tcp:127.0.0.1:${(server.address() as AddressInfo).port}` : path;
}

const stats = async () => ({ uptime: '734.21', load: '0.08' });
const responder = (s: Socket) => {
  serveLines(s, s, stats);
};
const run = (agentPort: string | undefined, timeoutMs = 500): Promise<ProbeResult> =>
  new AgentPingProbe().run(agentPort === undefined ? { name: 'vm' } : { name: 'vm', agentPort }, { timeoutMs, signal: new AbortController().signal });

describe('agent-ping', () => {
  test('PING n answered by the agent responder: success with the guest uptime and load', async () => {
    const r = await run(await peer(responder));
    expect(r.outcome, r.detail).toBe('success');
    expect(r.detail).toMatch(/^the agent answered PING \d+ in \d+ ms$/);
    expect(r.evidence).toMatchObject({ guestUptimeS: 734.21, guestLoad: 0.08, skippedLines: 0 });
  });

  test('over a TCP chardev too', async () => {
    expect((await run(await peer(responder, true))).outcome).toBe('success');
  });

  test('an older PONG and noise left in the channel are skipped, not taken for ours', async () => {
    const path = await peer((s) => {
      s.write('PONG 1 uptime=1.00 load=0.00\nboot noise\n\u0000\u00ff garbage\n');
      serveLines(s, s, stats);
    });
    const r = await run(path);
    expect(r.outcome).toBe('success');
    expect(r.evidence?.['skippedLines']).toBeGreaterThanOrEqual(2);
  });

  test('no answer within the timeout: a failure saying no PONG came', async () => {
    const r = await run(await peer(() => undefined), 200);
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('agent PING: timed out after 200 ms (no PONG)');
  });

  test('a flood is cut at maxBytes: a failure naming the cap, the port closed by us', async () => {
    let closed = false;
    const path = await peer((s) => {
      s.on('close', () => (closed = true));
      const junk = Buffer.alloc(4096, 0x41);
      const pump = () => {
        if (!s.destroyed && s.write(junk)) setImmediate(pump);
      };
      pump();
    });
    const r = await new AgentPingProbe({ maxBytes: 1024 }).run({ name: 'vm', agentPort: path }, { timeoutMs: 2000, signal: new AbortController().signal });
    expect(r.outcome).toBe('failure');
    expect(r.detail).toMatch(/more than 1024 bytes from the guest without our PONG/);
    for (let i = 0; i < 50 && !closed; i++) await new Promise((res) => setTimeout(res, 10));
    expect(closed).toBe(true);
  });

  test('no port configured is unknown; a missing socket a failure naming errno', async () => {
    expect((await run(undefined)).outcome).toBe('unknown');
    const r = await run('/nonexistent/agent.sock');
    expect(r.outcome).toBe('failure');
    expect(r.evidence).toMatchObject({ errno: 'ENOENT', step: 'connect' });
  });

  test('agentPortAddress: unix path or tcp:HOST:PORT', () => {
    expect(agentPortAddress('/run/vm/agent.sock')).toEqual({ path: '/run/vm/agent.sock' });
    expect(agentPortAddress('tcp:10.0.0.2:4000')).toEqual({ host: '10.0.0.2', port: 4000 });
    expect(agentPortAddress('tcp:[::1]:4000')).toEqual({ host: '::1', port: 4000 });
    expect(() => agentPortAddress('tcp:h:70000')).toThrow(RangeError);
    expect(() => new AgentPingProbe({ maxBytes: 10 })).toThrow(RangeError);
  });
});
