import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { aptListsBackports, executeSetup, PACKAGES, parseDpkgQuery, planSetup } from '../../build/setup.js';
import { repoRoot } from '../../util/repo-root.js';

const setupJs = join(repoRoot(), 'dist', 'build', 'setup.js');

describe('reading the machine', () => {
  test('dpkg-query output: installed (ii) packages only, arch suffix dropped', () => {
    const text = 'qemu-system-x86\tii \nseabios\tun \novmf\trc \nbusybox-static:amd64\tii \n\n';
    expect([...parseDpkgQuery(text)].sort()).toEqual(['busybox-static', 'qemu-system-x86']);
  });

  test('apt-cache policy output: whether bookworm-backports is listed', () => {
    expect(aptListsBackports(' 100 http://deb.debian.org/debian bookworm-backports/main amd64 Packages\n     release o=Debian Backports,a=oldstable-backports,n=bookworm-backports,l=Debian Backports\n')).toBe(true);
    expect(aptListsBackports(' 500 http://deb.debian.org/debian bookworm/main amd64 Packages\n     release v=12,o=Debian,n=bookworm\n')).toBe(false);
  });
});

describe('planSetup', () => {
  test('nothing missing: nothing to do', () => {
    const installed = new Set(Object.keys(PACKAGES.test));
    expect(planSetup('test', { installed, backports: true }).steps).toEqual([]);
    expect(planSetup('demo', { installed, backports: false }).steps).toEqual([]); // the demo needs no backports
  });

  test('a bare machine: backports added, one update, one install of exactly what is missing', () => {
    const plan = planSetup('test', { installed: new Set(['qemu-system-x86', 'seabios']), backports: false });
    expect(plan.missing).not.toContain('qemu-system-x86');
    expect(plan.missing).toContain('libguestfs-tools');
    expect(plan.steps).toEqual([
      expect.stringMatching(/^write \/etc\/apt\/sources\.list\.d\/eve-diag-bookworm-backports\.sources .*Pin-Priority 50/),
      'apt-get update -q',
      `apt-get install -y -q --no-install-recommends ${plan.missing.join(' ')}`,
    ]);
  });
});

describe('executeSetup', () => {
  test('as another user: names what is missing and the one command to run as root, exit 1', async () => {
    const lines: string[] = [];
    const plan = planSetup('demo', { installed: new Set(['seabios']), backports: true });
    const code = await executeSetup(plan, { log: (s) => lines.push(s), uid: 1000, rootCommand: 'sudo node setup.js demo' });
    expect(code).toBe(1);
    expect(lines.join('\n')).toBe(
      'eve-diag setup (demo): missing: qemu-system-x86 (QEMU, to boot the demo VM), linux-image-amd64 (the Debian kernel the VM boots), busybox-static (the VM’s initramfs)\nrun as root:\n  sudo node setup.js demo',
    );
  });

  test('nothing to do: ok, exit 0, as any user', async () => {
    const lines: string[] = [];
    const code = await executeSetup(planSetup('demo', { installed: new Set(Object.keys(PACKAGES.demo)), backports: false }), { log: (s) => lines.push(s), uid: 1000, rootCommand: '' });
    expect(code).toBe(0);
    expect(lines[0]).toMatch(/^eve-diag setup \(demo\): ok, installed: qemu-system-x86, seabios/);
  });
});

describe('node dist/build/setup.js on a machine where nothing is installed (dpkg-query and apt-cache faked)', () => {
  const fake = mkdtempSync(join(tmpdir(), 'eve-diag-setup-'));
  afterAll(() => rmSync(fake, { recursive: true, force: true }));
  // dpkg-query knows none of the packages (exit 1, as the real one does); apt lists no backports.
  writeFileSync(join(fake, 'dpkg-query'), '#!/bin/sh\nfor p in "$@"; do :; done\necho "dpkg-query: no packages found matching $p" >&2\nexit 1\n');
  writeFileSync(join(fake, 'apt-cache'), '#!/bin/sh\necho "Package files:"\necho " 500 http://deb.debian.org/debian bookworm/main amd64 Packages"\n');
  chmodSync(join(fake, 'dpkg-query'), 0o755);
  chmodSync(join(fake, 'apt-cache'), 0o755);
  const run = (...args: string[]) =>
    promisify(execFile)(process.execPath, [setupJs, ...args], { env: { ...process.env, PATH: `${fake}:${process.env.PATH ?? ''}` } }).then(
      (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
      (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: e.stdout ?? '', err: e.stderr ?? '' }),
    );

  test('--dry-run --json: the plan installs every test package and adds backports', async () => {
    expect(existsSync(setupJs), 'run npm run build first').toBe(true);
    const r = await run('test', '--dry-run', '--json');
    expect(r.code, r.err).toBe(0);
    const plan = JSON.parse(r.out) as { missing: string[]; addBackports: boolean; steps: string[] };
    expect(plan.missing).toEqual(Object.keys(PACKAGES.test));
    expect(plan.addBackports).toBe(true);
    expect(plan.steps.at(-1)).toBe(`apt-get install -y -q --no-install-recommends ${Object.keys(PACKAGES.test).join(' ')}`);
  });

  test('--dry-run prints the steps; a bad target or flag exits 2 naming it', async () => {
    const r = await run('demo', '--dry-run');
    expect(r.code).toBe(0);
    expect(r.err).toContain('eve-diag setup (demo) would:\n  apt-get update -q\n  apt-get install -y -q --no-install-recommends qemu-system-x86 seabios linux-image-amd64 busybox-static');
    expect(await run('prod')).toMatchObject({ code: 2, err: expect.stringContaining('TARGET: demo or test (got "prod")') });
    expect(await run('test', '--yes')).toMatchObject({ code: 2, err: expect.stringContaining('unknown flag --yes') });
  });
});
