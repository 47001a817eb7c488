import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { repoRoot } from '../../util/repo-root.js';

/**
 * The package as a user gets it: `npm pack` of this repository (its built dist/), installed into an
 * empty prefix with `npm install -g --prefix`, run from there, far from the sources. Dependencies come
 * from npm's cache (`npm ci` filled it), the registry otherwise.
 */
const run = promisify(execFile);
const root = repoRoot();
let tmp: string;
let bin: string;

beforeAll(async () => {
  expect(existsSync(join(root, 'dist', 'cli', 'main.js')), 'run npm run build first').toBe(true);
  tmp = mkdtempSync(join(tmpdir(), 'eve-diag-pack-'));
  await run('npm', ['pack', '--ignore-scripts', '--pack-destination', tmp], { cwd: root });
  const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  expect(tgz).toBeDefined();
  const prefix = join(tmp, 'prefix');
  await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(tmp, tgz as string)], {
    cwd: tmp,
    timeout: 240_000,
  });
  bin = join(prefix, 'bin', 'eve-diag');
}, 300_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const cli = async (...args: string[]) =>
  run(bin, args, { cwd: tmp, timeout: 30_000 }).then(
    (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: e.stdout ?? '', err: e.stderr ?? '' }),
  );

describe('the installed package', () => {
  test('eve-diag --version, --help', async () => {
    expect((await cli('--version')).out.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const r = await cli('--help');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/Usage: eve-diag/);
    expect(r.out).toMatch(/monitor/);
  });

  test('eve-diag ssdt build writes the table, its ASL and layout', async () => {
    const out = join(tmp, 'ssdt');
    const r = await cli('ssdt', 'build', '-o', out, '--nonce', 'c0ffee', '--json');
    expect(r.code, r.err).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['eve-diag-ssdt.aml', 'eve-diag-ssdt.asl', 'eve-diag-ssdt.json']);
  });

  test('eve-diag monitor --config on a bad file: exit 2 naming the line and the field (the schema travels with the package)', async () => {
    const bad = join(tmp, 'bad.yaml');
    writeFileSync(bad, 'apps:\n  - name: vm1\n    scenarios:\n      - name: k\n        probe: { type: kernel-heartbeat }\n        periodSeconds: 0\n');
    const r = await cli('monitor', '--config', bad);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/bad\.yaml:6: apps\[0\]\.scenarios\[0\]\.periodSeconds: must be/);
  });

  test('eve-diag bake cloud-init finds the agent bundle and the install assets inside the package', async () => {
    const r = await cli('bake', 'cloud-init', '--sh');
    expect(r.code, r.err).toBe(0);
    expect(r.out.startsWith('#cloud-config')).toBe(true);
  });

  test('eve-diag controller serve runs from the package: the dashboard assets and the API document travel with it', async () => {
    const data = join(tmp, 'controller');
    const child = spawn(bin, ['controller', 'serve', '--data', data, '--listen', '127.0.0.1:0'], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      const url = await new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no 'controller listening' line in 30 s: ${out}`)), 30_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out);
          if (m) {
            clearTimeout(t);
            resolve(m[1] as string);
          }
        });
        child.once('exit', (code) => reject(new Error(`controller exited (${code}): ${out}`)));
      });
      for (const asset of ['app.css', 'uPlot.iife.min.js']) expect((await fetch(`${url}/assets/${asset}`)).status, asset).toBe(200);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const installed = join(tmp, 'prefix', 'lib', 'node_modules', 'eve-diag', 'docs');
      expect(readdirSync(installed)).toEqual(expect.arrayContaining(['controller-api.yaml', 'analyzer-plugin-example.mjs']));
    } finally {
      child.kill('SIGKILL');
    }
  });
});
