import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_BUNDLE_MAX_BYTES, buildAgentBundle } from '../../build/agent-bundle.js';
import { AGENT_VERSION } from '../../guest-agent/version.js';
import { FakeRoot, PROC_SAMPLE } from './fake-tree.js';

let dir: string;
let bundle: string;
let bytes: number;
let inputs: string[];
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-bundle-'));
  const b = await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') });
  bundle = b.outfile;
  bytes = b.bytes;
  inputs = b.inputs;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (file: string, ...args: string[]) => spawnSync(process.execPath, [file, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('the agent bundle', () => {
  it('is made of guest-side code and the shared protocol formats only', () => {
    expect(inputs).toContain('guest-agent/main.ts');
    expect(inputs).toContain('protocol/heartbeat-disk.ts');
    for (const f of inputs) expect(f).toMatch(/^(guest-agent|protocol)\//);
  });

  it(`is one file under ${AGENT_BUNDLE_MAX_BYTES / 1024} KB with a node shebang`, () => {
    console.log(`agent bundle: ${bytes} bytes`);
    expect(bytes).toBeLessThan(AGENT_BUNDLE_MAX_BYTES);
    const code = readFileSync(bundle, 'utf8');
    expect(code.startsWith('#!/usr/bin/env node\n')).toBe(true);
    // No static import/export: the same file loads as CommonJS and as ESM.
    expect(code).not.toMatch(/^\s*(import|export)\s/m);
  });

  it('runs --version as CommonJS (no package.json around it, as in a VM image)', () => {
    const r = run(bundle, '--version');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`eve-diag-agent ${AGENT_VERSION}\n`);
  });

  it('runs --version as ESM (next to a "type": "module" package.json, as in this repo’s dist/)', () => {
    const esm = mkdtempSync(join(dir, 'esm-'));
    writeFileSync(join(esm, 'package.json'), '{"type":"module"}\n');
    copyFileSync(bundle, join(esm, 'eve-diag-agent.js'));
    const r = run(join(esm, 'eve-diag-agent.js'), '--version');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`eve-diag-agent ${AGENT_VERSION}\n`);
  });

  it('--help prints the usage; a bad flag exits 2 naming it', () => {
    expect(run(bundle, '--help').stdout).toMatch(/^usage: eve-diag-agent \[options\]/);
    const r = run(bundle, '--mark-period', 'soon');
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('eve-diag-agent: --mark-period: seconds, e.g. 1 or 0.5 (got "soon")\n');
  });

  it('a bad config file exits 2 naming the file and the key; a missing --config too', () => {
    const cfg = join(dir, 'bad.json');
    writeFileSync(cfg, JSON.stringify({ checks: [{ name: 'x', tcp: 'nowhere' }] }));
    const r = run(bundle, '--config', cfg);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`eve-diag-agent: ${cfg}: checks[0].tcp: host:port (IPv6 as [addr]:port), port 1..65535 (got "nowhere")\n`);
    const m = run(bundle, '--config', join(dir, 'missing.json'));
    expect(m.status).toBe(2);
    expect(m.stderr).toMatch(/--config: cannot read .*missing\.json \(ENOENT\)/);
  });

  it('--once prints one mark from the given root; --print-config the resolved configuration', () => {
    const root = new FakeRoot();
    try {
      root.proc(PROC_SAMPLE);
      const ok = run(bundle, '--once', '--root', root.root, '--console', 'none', '--no-syslog');
      expect(ok.stdout).toBe(`eve-diag mark seq=1 uptime=734.21 load=0.08 mem_avail=401236kB agent=${AGENT_VERSION}\n`);
      const pc = JSON.parse(run(bundle, '--print-config', '--period', '2').stdout);
      expect(pc).toMatchObject({ zone: '\\_TZ_.EDGA', period: 2, markPeriod: 60, console: '/dev/console', checks: [] });
    } finally {
      root.cleanup();
    }
  });

  it('as a process: beats, marks, SIGHUP reloads the file, a bad reload keeps running, SIGTERM exits 0', async () => {
    const root = new FakeRoot();
    try {
      root.proc(PROC_SAMPLE);
      const temp = root.addZone(3, '\\_TZ_.EDGA');
      const console_ = join(root.root, 'console');
      writeFileSync(console_, '');
      const cfg = join(root.root, 'agent.json');
      writeFileSync(cfg, JSON.stringify({ markPeriod: 1, period: 0.2 }));
      const child = spawn(process.execPath, [bundle, '--config', cfg, '--root', root.root, '--console', console_, '--no-syslog'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      const marks = () => readFileSync(console_, 'utf8').split('\n').filter((l) => l !== '');
      const waitFor = async (what: string, pred: () => boolean, ms = 10_000) => {
        const end = Date.now() + ms;
        while (!pred()) {
          if (Date.now() > end) throw new Error(`timed out waiting for ${what}; stderr:\n${stderr}\nconsole:\n${marks().join('\n')}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      try {
        await waitFor('two marks', () => marks().length >= 2);
        expect(marks()[0]).toBe(`eve-diag mark seq=1 uptime=734.21 load=0.08 mem_avail=401236kB agent=${AGENT_VERSION}`);
        expect(stderr).toContain(`eve-diag-agent: heartbeat: reading ${temp} (\\_TZ_.EDGA)`);

        writeFileSync(cfg, JSON.stringify({ markPeriod: 1, period: 0.2, checks: [{ name: 'self', command: 'true' }] }));
        child.kill('SIGHUP');
        await waitFor('a mark with the check', () => marks().some((l) => l.endsWith('check.self=ok')));
        expect(stderr).toMatch(/eve-diag-agent: reloaded: heartbeat .* checks self/);
        const seqs = marks().map((l) => Number(/seq=(\d+)/.exec(l)?.[1]));
        expect(seqs).toEqual(seqs.map((_, i) => i + 1)); // the sequence goes on across the reload

        writeFileSync(cfg, '{"period": "fast"}');
        child.kill('SIGHUP');
        await waitFor('the reload failure', () => stderr.includes('reload failed'));
        expect(stderr).toContain(`reload failed, keeping the running configuration: ${cfg}: period: seconds between 0.1 and 3600, or 0 for off (got "fast")`);
        const n = marks().length;
        await waitFor('marks going on', () => marks().length > n);
      } finally {
        child.kill('SIGTERM');
      }
      expect(await exited).toBe(0);
      expect(stderr).toContain('eve-diag-agent: SIGTERM: stopping');
    } finally {
      root.cleanup();
    }
  });
});
