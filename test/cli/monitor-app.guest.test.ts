import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { buildGuestImage } from '../../build/guest-image.js';
import { launchGuest, stopAllGuests } from '../helpers/guest.js';

/**
 * Transport 3 (network) end to end: an HTTP app in a real guest (busybox httpd behind QEMU user
 * networking), watched by `eve-diag monitor` with the kernel heartbeat and an http probe. Killing
 * the app must give `app-unhealthy` (the guest is alive), not a hang verdict.
 */
const cli = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-monitor-app-'));
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});
let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill('SIGKILL');
  child = undefined;
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('eve-diag monitor: app probe over the network', () => {
  test('app killed in a live guest -> app-unhealthy', async () => {
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
    await writeFile(join(dir, 't.aml'), aml);
    await writeFile(join(dir, 't.json'), JSON.stringify(layout));
    const image = await buildGuestImage({ modules: ['virtio_net', 'virtio_pci'] });
    const port = await freePort();
    const guest = await launchGuest({
      acpiTables: [join(dir, 't.aml')],
      append: 'quiet',
      extraArgs: ['-initrd', image.initrd, '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:8080`, '-device', 'virtio-net-pci,netdev=n0'],
    });
    // QEMU's user network: the guest is 10.0.2.15/24.
    await guest.run('busybox ip link set eth0 up && busybox ip addr add 10.0.2.15/24 dev eth0 && mkdir -p /www && echo ok > /www/health');
    await guest.run('ln -s /bin/busybox /bin/httpd && httpd -p 8080 -h /www');
    const config = join(dir, 'monitor.yaml');
    await writeFile(
      config,
      `spool: { dir: ${join(dir, 'spool')} }
apps:
  - name: web
    transports: { qmp: ${guest.qmpPath}, layout: ${join(dir, 't.json')} }
    scenarios:
      - { name: kernel, probe: { type: kernel-heartbeat }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 2 }
      - { name: health, probe: { type: http, params: { host: 127.0.0.1, port: ${port}, path: /health, bodyRegex: ok } }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 2 }
    diagnostics:
      collectors: [{ type: qmp-state, timeoutSeconds: 5 }]
`,
    );
    child = spawn(process.execPath, [cli, 'monitor', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: Array<Record<string, unknown>> = [];
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
      }
    });
    const verdict = async (v: string, ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (lines.some((l) => l['msg'] === 'verdict' && l['verdict'] === v)) return;
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`no verdict ${v} in ${ms} ms:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
    };
    await verdict('running-healthy', 60_000);
    await guest.run('killall httpd');
    await verdict('app-unhealthy', 30_000);
    expect(lines.some((l) => l['msg'] === 'verdict' && /hung|panicked/.test(String(l['verdict'])))).toBe(false);
    const done = lines.find((l) => l['msg'] === 'diagnostics started');
    expect(done?.['verdict']).toBe('app-unhealthy');
    child.kill('SIGTERM');
    await guest.stop();
  });
});
