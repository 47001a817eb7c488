import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from '../helpers/cli.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-readargs-'));
  await writeFile(join(dir, 'bad.json'), '{"format": "something-else"}');
  await writeFile(join(dir, 'notjson.json'), 'nope');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('read / watch: bad input exits 2 naming the flag', () => {
  test.each([
    [['read', '--qmp', '/x'], 'layout'],
    [['read', '--layout', 'BAD'], '--qmp'],
    [['read', '--qmp', '/x', '--eve-dom', 'vm1', '--layout', 'BAD'], '--qmp'],
    [['read', '--eve-dom', '../x', '--layout', 'BAD'], '--eve-dom'],
    [['read', '--qmp', '/x', '--layout', 'BAD', '--memory', 'dma'], '--memory'],
    [['read', '--qmp', '/x', '--layout', 'BAD', '--memory', 'file'], '--mem-path'],
    [['read', '--qmp', '/x', '--layout', 'BAD', '--pid', '12x'], '--pid'],
    [['read', '--qmp', '/x', '--layout', 'BAD', '--pid', '0'], '--pid'],
    [['read', '--qmp', '/x', '--layout', 'BAD', '--memory', 'xp', '--pid', '12'], '--pid'],
    [['read', '--qmp', '/x', '--layout', 'BAD'], '--layout'],
    [['read', '--qmp', '/x', '--layout', 'NOTJSON'], '--layout'],
    [['read', '--qmp', '/x', '--layout', 'MISSING'], '--layout'],
    [['watch', '--qmp', '/x', '--layout', 'BAD', '--interval', '0'], '--layout'],
    [['read', '--qmp', '/x', '--libvirt-domain', 'vm1', '--layout', 'BAD'], '--libvirt-domain'],
    [['read', '--libvirt-domain', '-vm1', '--layout', 'BAD'], '--libvirt-domain'],
    [['read', '--libvirt-domain', 'vm1', '--libvirt-uri', 'qemu+ssh://host/system', '--layout', 'BAD'], '--libvirt-uri'],
    [['watch', '--libvirt-domain', 'vm1', '--libvirt-uri', 'qemu:///embed', '--layout', 'BAD'], '--libvirt-uri'],
  ])('%j', async (args, field) => {
    const real = args.map((a) =>
      a === 'BAD' ? join(dir, 'bad.json') : a === 'NOTJSON' ? join(dir, 'notjson.json') : a === 'MISSING' ? join(dir, 'missing.json') : a,
    );
    const r = await runCli(...real);
    expect(r.code).toBe(2);
    expect(r.err).toContain(field);
  });
});
