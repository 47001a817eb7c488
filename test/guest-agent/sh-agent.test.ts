import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAgentBundle } from '../../build/agent-bundle.js';
import { installDir } from '../../bake/assets.js';
import { formatMark } from '../../protocol/mark.js';
import { readProcStats } from '../../guest-agent/procstat.js';
import { AGENT_VERSION } from '../../guest-agent/version.js';
import { FakeRoot, PROC_SAMPLE } from './fake-tree.js';

/** The POSIX-sh agent, run on the host with dash and busybox sh against fake roots. */

const SH_AGENT = join(installDir(), 'eve-diag-agent.sh');
const SHELLS = [
  ['dash', ['/bin/dash']],
  ['busybox sh', ['/bin/busybox', 'sh']],
] as const;

let dir: string;
let bundle: string;
beforeAll(async () => {
  for (const [name, [bin]] of SHELLS) if (!existsSync(bin)) throw new Error(`${name} (${bin}) is missing: apt-get install ${name === 'dash' ? 'dash' : 'busybox-static'}`);
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-sh-'));
  bundle = (await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') })).outfile;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sh(shell: readonly string[], args: string[], env: Record<string, string> = {}) {
  const [bin, ...pre] = shell;
  return spawnSync(bin as string, [...pre, SH_AGENT, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 20_000 });
}

const CASES: [string, { uptime?: string; loadavg?: string; meminfo?: string }][] = [
  ['a real-looking /proc', PROC_SAMPLE],
  ['no /proc files', {}],
  ['no trailing newlines', { uptime: '12.5 3.0', loadavg: '1.25 0 0 1/1 1', meminfo: 'MemAvailable: 42 kB' }],
  ['leading blanks and tabs', { uptime: '  \t12.5 3.0\n', loadavg: '\t1.25\t0\n', meminfo: 'MemTotal:\t1 kB\nMemAvailable:\t\t42\tkB\n' }],
  ['a leading empty line', { uptime: '\n12.5 3.0\n', loadavg: '\n1.0\n', meminfo: '\nMemAvailable: 7 kB\n' }],
  ['garbage', { uptime: 'abc 1\n', loadavg: '1.2.3\n', meminfo: 'MemAvailable: 1.5 kB\n' }],
  ['hostile values', { uptime: '$(reboot) 1\n', loadavg: '-1 0\n', meminfo: 'MemAvailable: 99999999999999999999999999 kB\n' }],
  ['no MemAvailable (old kernel)', { uptime: '1.00 1\n', loadavg: '0.00 0\n', meminfo: 'MemTotal: 5 kB\nMemFree: 3 kB\n' }],
];

describe('eve-diag-agent.sh', () => {
  it('says the same version as the Node agent', () => {
    for (const [, shell] of SHELLS) expect(sh(shell, ['--version']).stdout).toBe(`eve-diag-agent.sh ${AGENT_VERSION}\n`);
  });

  it('is valid POSIX sh for dash and busybox (sh -n)', () => {
    for (const [, [bin, ...pre]] of SHELLS) expect(() => execFileSync(bin, [...pre, '-n', SH_AGENT])).not.toThrow();
  });

  it('bad usage exits 2', () => {
    for (const [, shell] of SHELLS) {
      expect(sh(shell, []).status).toBe(2);
      expect(sh(shell, ['mark', '--bogus']).status).toBe(2);
      const r = sh(shell, ['heartbeat', '--period', 'soon']);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain("--period: seconds, e.g. 1 or 0.5 (got 'soon')");
    }
  });

  describe.each(SHELLS)('mark line with %s equals the Node agent’s for the same inputs', (_name, shell) => {
    it.each(CASES)('%s', async (_case, files) => {
      const root = new FakeRoot();
      try {
        root.proc(files);
        const seqFile = join(root.root, 'seq');
        const console_ = join(root.root, 'console');
        writeFileSync(console_, '');
        const r = sh(shell, ['mark', '--root', root.root, '--no-syslog', '--console', console_, '--seq-file', seqFile]);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        const shLine = readFileSync(console_, 'utf8');
        const want = formatMark({ seq: 1, stats: await readProcStats(root.root), version: `${AGENT_VERSION}-sh` });
        expect(shLine).toBe(`${want}\n`);
        // And the bundled Node agent itself, on the same root: the same line but for who wrote it.
        const node = spawnSync(process.execPath, [bundle, '--once', '--root', root.root, '--console', 'none', '--no-syslog'], { encoding: 'utf8' });
        expect(node.stdout).toBe(`${want.replace(`agent=${AGENT_VERSION}-sh`, `agent=${AGENT_VERSION}`)}\n`);
      } finally {
        root.cleanup();
      }
    });
  });

  it.each(SHELLS)('%s: seq counts up in the seq file and survives garbage in it', (_name, shell) => {
    const root = new FakeRoot();
    try {
      root.proc(PROC_SAMPLE);
      const seqFile = join(root.root, 'state', 'mark.seq');
      const console_ = join(root.root, 'console');
      const seqs = () => {
        writeFileSync(console_, '');
        sh(shell, ['mark', '--root', root.root, '--no-syslog', '--console', console_, '--seq-file', seqFile]);
        return /seq=(\d+)/.exec(readFileSync(console_, 'utf8'))?.[1];
      };
      expect([seqs(), seqs(), seqs()]).toEqual(['1', '2', '3']);
      writeFileSync(seqFile, 'junk\n');
      expect(seqs()).toBe('1');
    } finally {
      root.cleanup();
    }
  });

  // dash only: Debian's busybox sh runs its own logger applet whatever PATH says.
  it('dash: syslog through logger with the Node agent’s arguments; without logger, the kernel log', () => {
    const shell = SHELLS[0][1];
    const root = new FakeRoot();
    try {
      root.proc(PROC_SAMPLE);
      const bin = join(root.root, 'bin');
      execFileSync('mkdir', ['-p', bin]);
      writeFileSync(join(bin, 'logger'), `#!/bin/sh\nprintf '%s|' "$@" >> ${join(root.root, 'logger.out')}\n`, { mode: 0o755 });
      const seqFile = join(root.root, 'seq');
      sh(shell, ['mark', '--root', root.root, '--console', 'none', '--seq-file', seqFile], { PATH: `${bin}:/usr/bin:/bin` });
      expect(readFileSync(join(root.root, 'logger.out'), 'utf8')).toBe(
        `-t|eve-diag-agent|-p|user.info|eve-diag mark seq=1 uptime=734.21 load=0.08 mem_avail=401236kB agent=${AGENT_VERSION}-sh|`,
      );
      const kmsg = join(root.root, 'kmsg');
      writeFileSync(kmsg, '');
      sh(shell, ['mark', '--root', root.root, '--console', 'none', '--seq-file', seqFile], { PATH: '/nonexistent', EVE_DIAG_KMSG: kmsg });
      expect(readFileSync(kmsg, 'utf8')).toBe(`<14>eve-diag-agent: eve-diag mark seq=2 uptime=734.21 load=0.08 mem_avail=401236kB agent=${AGENT_VERSION}-sh\n`);
    } finally {
      root.cleanup();
    }
  });

  it.each(SHELLS)('%s: a console that does not exist is not created', (_name, shell) => {
    const root = new FakeRoot();
    try {
      const r = sh(shell, ['mark', '--root', root.root, '--no-syslog', '--console', join(root.root, 'ttyX'), '--seq-file', join(root.root, 's')]);
      expect(r.status).toBe(0);
      expect(existsSync(join(root.root, 'ttyX'))).toBe(false);
    } finally {
      root.cleanup();
    }
  });
});

/** Serves a FIFO standing in for `temp`: counts each time a reader opens and reads it. */
function fifoServer(fifo: string) {
  let reads = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        // Non-blocking open for writing succeeds only while a reader has the FIFO open.
        const fh = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
        await fh.write('25000\n').catch(() => undefined);
        await fh.close();
        reads++;
      } catch {
        // no reader right now
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    get reads() {
      return reads;
    },
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

describe.each(SHELLS)('eve-diag-agent.sh heartbeat with %s', (_name, shell) => {
  it('reads the zone every period; a missing zone is said once and looked for again; SIGTERM exits', async () => {
    const root = new FakeRoot();
    const [bin, ...pre] = shell;
    const child = spawn(bin, [...pre, SH_AGENT, 'heartbeat', '--root', root.root, '--period', '0.2', '--zone-retry', '0.5'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const server = { current: undefined as ReturnType<typeof fifoServer> | undefined };
    try {
      await new Promise((r) => setTimeout(r, 1300)); // two or three lookups, one message
      expect(stderr.match(/heartbeat paused: no thermal zone \\_TZ_\.EDGA/g)).toHaveLength(1);
      // The zone appears (the table got loaded): its temp is a FIFO so every read can be counted.
      const temp = root.addZone(2, '\\_TZ_.EDGA');
      rmSync(temp);
      execFileSync('mkfifo', [temp]);
      server.current = fifoServer(temp);
      await new Promise((r) => setTimeout(r, 2500));
      const reads = server.current.reads;
      // 0.2 s period over ~2 s after the next lookup: about 10 reads; loose for a busy host.
      expect(reads).toBeGreaterThanOrEqual(4);
      expect(reads).toBeLessThanOrEqual(14);
      expect(stderr).toContain(`heartbeat: reading ${temp} (\\_TZ_.EDGA)`);
    } finally {
      child.kill('SIGTERM');
      await server.current?.stop();
      root.cleanup();
    }
    expect(await exited).toBe(0);
  });
});
