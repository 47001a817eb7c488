import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readFile } from 'node:fs/promises';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { watch } from '../../cli/watch.js';
import { FakeQmpServer } from '../helpers/fake-qmp-server.js';

/**
 * `watch` over a fake QEMU: QMP from a fake server, guest RAM from a file laid out as
 * `-object memory-backend-file` (the table at its SeaBIOS address). Long runs must not leak.
 */
let dir: string;
let server: FakeQmpServer;
let layoutFile: string;
let memPath: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-watch-'));
  const { aml, layout } = buildDiagSsdt({ nonce: 0x5a5an, kernelPeriodMs: 1000 });
  layoutFile = join(dir, 'layout.json');
  await writeFile(layoutFile, JSON.stringify(layout));
  memPath = join(dir, 'ram');
  const fh = await open(memPath, 'w');
  await fh.truncate(0x2000_0000);
  await fh.write(aml, 0, aml.length, 0x1ffe_2270);
  await fh.close();
  const mtree = await readFile(join(import.meta.dirname, '..', 'host-reader', 'region', 'fixtures', 'q35-512-memory-backend.mtree-f.txt'), 'utf8');
  server = await FakeQmpServer.start();
  server.handle('query-status', () => ({ return: { running: true, status: 'running' } }));
  server.handle('human-monitor-command', (c) => ({ return: c.arguments?.['command-line'] === 'info mtree -f' ? mtree : '' }));
});
afterAll(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('eve-diag watch', () => {
  test('polls --count times with --json and adds no listener per poll (no MaxListenersExceededWarning)', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const lines: string[] = [];
    try {
      await watch({ qmp: server.path, layout: layoutFile, memory: 'file', memPath, json: true, interval: '50', count: '25' }, (s) => lines.push(s));
      await new Promise((r) => setTimeout(r, 50)); // warnings are emitted on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(lines).toHaveLength(25);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ vm: { status: 'running' } });
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  });
});
