import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Log } from '../../guest-agent/log.js';
import { Marks } from '../../guest-agent/marks.js';
import { parseLoadavg, parseMemAvailable, parseUptime, readProcStats } from '../../guest-agent/procstat.js';
import { ConsoleSink, KMSG_PREFIX, SyslogSink, which, type LineSink } from '../../guest-agent/sinks.js';
import { FakeRoot, PROC_SAMPLE } from './fake-tree.js';

const stats = { uptime: '734.21', load: '0.08', memAvail: '401236kB' };

describe('/proc parsers', () => {
  it.each([
    ['734.21 1402.33\n', '734.21'],
    ['  734.21 1402.33', '734.21'],
    ['734', '734'],
    ['', '?'],
    ['\n734.21 1\n', '?'], // first line only, like sh `read`
    ['-1 2', '?'],
    ['1e5 2', '?'],
    ['7.3.4 1', '?'],
    ['12345678901234567890123.5 1', '?'], // over 24 chars
    ['734.21\r\n', '?'],
  ])('uptime %j -> %j', (text, want) => expect(parseUptime(text)).toBe(want));

  it('loadavg: the 1-minute field', () => {
    expect(parseLoadavg(PROC_SAMPLE.loadavg)).toBe('0.08');
    expect(parseLoadavg(undefined)).toBe('?');
  });

  it('meminfo: MemAvailable in kB', () => {
    expect(parseMemAvailable(PROC_SAMPLE.meminfo)).toBe('401236kB');
    expect(parseMemAvailable('MemTotal: 1 kB\n')).toBe('?'); // kernels before 3.14
    expect(parseMemAvailable('MemAvailable: 12.5 kB\n')).toBe('?');
    expect(parseMemAvailable('MemAvailable:\t77 kB')).toBe('77kB');
    expect(parseMemAvailable(undefined)).toBe('?');
  });

  it('readProcStats reads a fake root; missing files give ?', async () => {
    const r = new FakeRoot();
    try {
      expect(await readProcStats(r.root)).toEqual({ uptime: '?', load: '?', memAvail: '?' });
      r.proc(PROC_SAMPLE);
      expect(await readProcStats(r.root)).toEqual(stats);
    } finally {
      r.cleanup();
    }
  });

  it('the real /proc gives plain numbers', async () => {
    const s = await readProcStats('/');
    expect(s.uptime).toMatch(/^\d+\.\d+$/);
    expect(s.load).toMatch(/^\d+\.\d+$/);
    expect(s.memAvail).toMatch(/^\d+kB$/);
  });
});

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-marks-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('Marks.step', () => {
  it('numbers marks, runs the checks, writes the same line to every sink', async () => {
    const got: string[][] = [[], []];
    const sinks: LineSink[] = got.map((g, i) => ({ name: `s${i}`, write: async (l: string) => void g.push(l) }));
    const ran: string[][] = [];
    const marks = new Marks(
      [{ name: 'web', kind: 'tcp', host: '127.0.0.1', port: 1, timeoutMs: 100 }],
      {
        version: '9.9.9',
        readStats: async () => stats,
        runChecks: async (specs) => {
          ran.push(specs.map((s) => s.name));
          return [{ name: 'web', outcome: { ok: false, reason: 'refused' } }];
        },
        sinks,
        log: new Log(() => undefined),
      },
      41,
    );
    const line = await marks.step();
    expect(line).toBe('eve-diag mark seq=42 uptime=734.21 load=0.08 mem_avail=401236kB agent=9.9.9 check.web=fail:refused');
    await marks.step();
    expect(got[0]).toEqual([line, line.replace('seq=42', 'seq=43')]);
    expect(got[1]).toEqual(got[0]);
    expect(ran).toEqual([['web'], ['web']]);
    expect(marks.seq).toBe(43);
  });
});

describe('ConsoleSink', () => {
  it('appends lines to an existing file or tty', async () => {
    const path = join(dir, 'console');
    writeFileSync(path, 'before\n');
    const logs: string[] = [];
    const sink = new ConsoleSink(path, new Log((l) => logs.push(l)));
    await sink.write('one');
    await sink.write('two');
    expect(readFileSync(path, 'utf8')).toBe('before\none\ntwo\n');
    expect(logs).toEqual([]);
  });

  it('a missing console: logged once, never created, picked up when it appears', async () => {
    const path = join(dir, 'ttyX');
    const logs: string[] = [];
    const sink = new ConsoleSink(path, new Log((l) => logs.push(l)));
    await sink.write('a');
    await sink.write('b');
    expect(existsSync(path)).toBe(false);
    expect(logs).toEqual([`marks: cannot write to ${path} (ENOENT); will try again at the next mark`]);
    writeFileSync(path, '');
    await sink.write('c');
    expect(readFileSync(path, 'utf8')).toBe('c\n');
    expect(logs[1]).toBe(`marks: writing to ${path} again`);
  });
});

describe('SyslogSink', () => {
  const fakeLogger = (exit = 0) => {
    const p = join(dir, 'logger');
    writeFileSync(p, `#!/bin/sh\nprintf '%s|' "$@" >> ${join(dir, 'logger.out')}\necho >> ${join(dir, 'logger.out')}\nexit ${exit}\n`, { mode: 0o755 });
    return p;
  };

  it('runs logger -t eve-diag-agent -p user.info LINE', async () => {
    const logger = fakeLogger();
    const sink = new SyslogSink({ log: new Log(() => undefined), findLogger: async () => logger, kmsgPath: join(dir, 'kmsg') });
    await sink.write('eve-diag mark seq=1 x=y');
    expect(readFileSync(join(dir, 'logger.out'), 'utf8')).toBe('-t|eve-diag-agent|-p|user.info|eve-diag mark seq=1 x=y|\n');
    expect(existsSync(join(dir, 'kmsg'))).toBe(false);
  });

  it('no logger: the kernel log with a <14> prefix, said once', async () => {
    const kmsg = join(dir, 'kmsg');
    writeFileSync(kmsg, '');
    const logs: string[] = [];
    const sink = new SyslogSink({ log: new Log((l) => logs.push(l)), findLogger: async () => undefined, kmsgPath: kmsg });
    await sink.write('m1');
    await sink.write('m2');
    expect(readFileSync(kmsg, 'utf8')).toBe(`${KMSG_PREFIX}eve-diag-agent: m1\n${KMSG_PREFIX}eve-diag-agent: m2\n`);
    expect(logs).toEqual([`marks: no logger command on PATH; writing marks to ${kmsg} (kernel log) instead`]);
  });

  it('a failing logger falls back to the kernel log; neither there: logged once, no throw', async () => {
    const logger = fakeLogger(1);
    const logs: string[] = [];
    const sink = new SyslogSink({ log: new Log((l) => logs.push(l)), findLogger: async () => logger, kmsgPath: join(dir, 'nodir', 'kmsg') });
    await sink.write('m1');
    await sink.write('m2');
    expect(logs).toHaveLength(2);
    expect(logs[0]).toMatch(/logger failed \(exit 1\); writing marks to .*kmsg instead/);
    expect(logs[1]).toMatch(/cannot write to .*kmsg \(ENOENT\); marks reach syslog nowhere/);
  });

  it('a logger that hangs is killed after the timeout', async () => {
    const p = join(dir, 'hang');
    writeFileSync(p, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const logs: string[] = [];
    const kmsg = join(dir, 'kmsg');
    writeFileSync(kmsg, '');
    const sink = new SyslogSink({ log: new Log((l) => logs.push(l)), findLogger: async () => p, kmsgPath: kmsg, timeoutMs: 200 });
    const t0 = Date.now();
    await sink.write('m');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(logs[0]).toMatch(/failed \(timeout\)/);
    expect(readFileSync(kmsg, 'utf8')).toContain('m');
  });

  it('which() finds programs on PATH like a shell', async () => {
    fakeLogger();
    expect(await which('logger', `/nonexistent:${dir}`)).toBe(join(dir, 'logger'));
    expect(await which('no-such-program-here', dir)).toBeUndefined();
  });
});
