import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FAKE_QEMU_VERSION, FakeLibvirtLink } from '../../../host-reader/libvirt/fake-link.js';
import { LibvirtQmpBridge } from '../../../host-reader/libvirt/qmp-bridge.js';
import { QmpClient, QmpCommandError, QmpConnectError } from '../../../host-reader/qmp/index.js';

let dir: string;
const open: LibvirtQmpBridge[] = [];
const clients: QmpClient[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-bridge-test-'));
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(open.splice(0).map((b) => b.close()));
  await rm(dir, { recursive: true, force: true });
});

async function bridge(link: FakeLibvirtLink, o: { watchRestartMs?: number } = {}): Promise<LibvirtQmpBridge> {
  const b = await LibvirtQmpBridge.open({ link, dir: join(dir, 'b'), ...o });
  open.push(b);
  return b;
}
async function client(b: LibvirtQmpBridge): Promise<QmpClient> {
  const c = await QmpClient.connect({ path: b.path }, { timeoutMs: 2000 });
  clients.push(c);
  return c;
}
const until = async (f: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('LibvirtQmpBridge', () => {
  it("greets with QEMU's version and passes commands through libvirt without our id", async () => {
    const link = new FakeLibvirtLink();
    const b = await bridge(link);
    const c = await client(b);
    expect(c.version).toMatchObject(FAKE_QEMU_VERSION.qemu);
    expect(await c.queryStatus()).toMatchObject({ status: 'running', running: true });
    await expect(c.execute('nope')).rejects.toThrow(QmpCommandError);
    // libvirt refuses an `id` in the command: none is passed; arguments are.
    await c.hmp('info version').catch(() => undefined);
    expect(link.commands.map((x) => Object.keys(x).sort().join(','))).toContain('arguments,execute');
    expect(link.commands.every((x) => !('id' in x))).toBe(true);
    expect(link.commands.find((x) => x.execute === 'human-monitor-command')?.arguments).toEqual({ 'command-line': 'info version' });
  });

  it('answers like QEMU before capabilities negotiation and on bad input', async () => {
    const b = await bridge(new FakeLibvirtLink());
    const s = createConnection(b.path);
    let got = '';
    s.on('data', (d) => (got += String(d)));
    await until(() => got.includes('"QMP"'));
    s.write('{"execute":"query-status","id":1}\n');
    await until(() => got.includes('Expecting capabilities negotiation'));
    s.write('{"execute":"qmp_capabilities","id":2}\nnot json\n{"execute":"query-status","arguments":[],"id":3}\n{"execute":"qmp_capabilities","id":4}\n');
    await until(() => got.includes('"id":4'));
    expect(got).toContain('{"return":{},"id":2}');
    expect(got).toContain('JSON parse error');
    expect(got).toContain("'arguments' must be an object");
    expect(got).toContain('already complete');
    s.destroy();
  });

  it('passes QEMU events to negotiated clients', async () => {
    const link = new FakeLibvirtLink();
    const b = await bridge(link);
    const c = await client(b);
    const seen: string[] = [];
    c.on('STOP', (e) => void seen.push(`${e.event}@${e.timestamp?.seconds}`));
    link.emit({ event: 'STOP', data: {}, timestamp: { seconds: 5, microseconds: 1 } });
    await until(() => seen.length === 1);
    expect(seen).toEqual(['STOP@5']);
  });

  it('is bound only while the domain runs: a stop removes the socket, a start binds it again', async () => {
    const link = new FakeLibvirtLink();
    const b = await bridge(link);
    const c = await client(b);
    link.lifecycle({ kind: 'Stopped', detail: 'Destroyed' });
    expect(await c.closed).toBeDefined();
    await until(() => !existsSync(b.path));
    // As with no QEMU: nothing listens there.
    const e = await QmpClient.connect({ path: b.path }, { timeoutMs: 1000 }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(QmpConnectError);
    expect(String((e as QmpConnectError).cause)).toMatch(/ENOENT/);
    link.lifecycle({ kind: 'Started', detail: 'Booted' });
    await until(() => b.listening);
    expect((await (await client(b)).queryStatus()).running).toBe(true);
  });

  it('a domain not running at open is not bound; a command refused as not running unbinds', async () => {
    const link = new FakeLibvirtLink({ running: false });
    const b = await bridge(link);
    expect(b.listening).toBe(false);
    expect(await b.check()).toMatch(/domain is not running/);
    link.lifecycle({ kind: 'Started', detail: 'Booted' });
    await until(() => b.listening);
    const c = await client(b);
    link.running = false; // libvirt stopped it, and the lifecycle event has not come
    await c.queryStatus().catch(() => undefined);
    await until(() => !b.listening);
  });

  it('follows the events again after virsh ended, and re-checks the domain', async () => {
    const link = new FakeLibvirtLink();
    const b = await bridge(link, { watchRestartMs: 20 });
    expect(link.watchCalls).toBe(1);
    link.running = false;
    link.endWatch();
    await until(() => link.watchCalls === 2 && !b.listening);
    expect(b.stats.watchRestarts).toBe(1);
  });

  it('close ends the watch and removes the socket', async () => {
    const link = new FakeLibvirtLink();
    const b = await bridge(link);
    await client(b);
    await b.close();
    expect(link.watching).toBe(0);
    expect(existsSync(b.path)).toBe(false);
  });
});
