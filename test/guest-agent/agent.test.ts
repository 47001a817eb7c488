import { describe, expect, it } from 'vitest';
import { Agent, describeDuties } from '../../guest-agent/agent.js';
import { DEFAULT_CONFIG, type AgentConfig } from '../../guest-agent/config.js';
import { Log } from '../../guest-agent/log.js';
import type { LineSink } from '../../guest-agent/sinks.js';
import { FakeClock } from './fake-clock.js';

const stats = { uptime: '1.00', load: '0.00', memAvail: '1kB' };

function setup(found = true) {
  const clock = new FakeClock();
  const logs: string[] = [];
  const reads: number[] = [];
  const lookups: number[] = [];
  const lines: string[] = [];
  const sinkConfigs: AgentConfig[] = [];
  const agent = new Agent({
    clock,
    log: new Log((l) => logs.push(l)),
    version: 'test',
    findZone: async (_root, zone) => {
      lookups.push(clock.now());
      return found ? { found: true, zone, dir: '/z', temp: '/z/temp' } : { found: false, reason: 'no zone' };
    },
    readTemp: async () => {
      reads.push(clock.now());
      return '25000';
    },
    readStats: async () => stats,
    runChecks: async (specs) => specs.map((s) => ({ name: s.name, outcome: { ok: true } })),
    sinks: (config) => {
      sinkConfigs.push(config);
      const sink: LineSink = { name: 'mem', write: async (l) => void lines.push(l) };
      return [sink];
    },
    openPort: async () => {
      throw Object.assign(new Error('x'), { code: 'ENOENT' });
    },
  });
  return { clock, logs, reads, lookups, lines, agent, sinkConfigs };
}

const config = (over: Partial<AgentConfig> = {}): AgentConfig => ({ ...DEFAULT_CONFIG, ...over });

describe('Agent (fake clock, fake I/O)', () => {
  it('beats every period and marks every mark period', async () => {
    const { clock, reads, lines, agent } = setup();
    agent.apply(config({ periodMs: 1000, markPeriodMs: 10_000 }));
    await clock.advance(20_500);
    expect(reads).toEqual([0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10_000, 11_000, 12_000, 13_000, 14_000, 15_000, 16_000, 17_000, 18_000, 19_000, 20_000]);
    expect(lines).toEqual([
      'eve-diag mark seq=1 uptime=1.00 load=0.00 mem_avail=1kB agent=test',
      'eve-diag mark seq=2 uptime=1.00 load=0.00 mem_avail=1kB agent=test',
      'eve-diag mark seq=3 uptime=1.00 load=0.00 mem_avail=1kB agent=test',
    ]);
    agent.stop();
    expect(clock.pending).toBe(0);
  });

  it('a missing zone does not stop the marks; the zone is looked for every zoneRetry', async () => {
    const { clock, reads, lookups, lines, agent, logs } = setup(false);
    agent.apply(config({ periodMs: 1000, zoneRetryMs: 30_000, markPeriodMs: 10_000 }));
    await clock.advance(61_000);
    expect(reads).toEqual([]);
    expect(lookups).toEqual([0, 30_000, 60_000]);
    expect(lines).toHaveLength(7);
    expect(logs.filter((l) => l.startsWith('heartbeat paused'))).toHaveLength(1);
    agent.stop();
  });

  it('apply (SIGHUP) swaps the configuration and keeps counting marks', async () => {
    const { clock, lines, agent, reads, sinkConfigs } = setup();
    agent.apply(config({ periodMs: 1000, markPeriodMs: 5000 }));
    await clock.advance(5500); // marks 1 (t=0), 2 (t=5000)
    agent.apply(config({ periodMs: 500, markPeriodMs: 2000, checks: [{ name: 'self', kind: 'command', command: 'true', timeoutMs: 1000 }] }));
    const before = reads.length;
    await clock.advance(4100); // marks 3, 4, 5 at +0, +2000, +4000
    expect(lines.map((l) => l.split(' ')[2])).toEqual(['seq=1', 'seq=2', 'seq=3', 'seq=4', 'seq=5']);
    expect(lines[4]).toContain('check.self=ok');
    expect(reads.length - before).toBe(9); // every 500 ms now
    expect(sinkConfigs).toHaveLength(2);
    agent.stop();
    expect(clock.pending).toBe(0);
  });

  it('duties can be turned off; the responder retries its port on the injected clock', async () => {
    const { clock, reads, lines, agent, logs } = setup();
    agent.apply(config({ periodMs: 0, markPeriodMs: 0, responder: '/dev/ttyS1' }));
    await clock.advance(65_000);
    expect(reads).toEqual([]);
    expect(lines).toEqual([]);
    expect(logs).toEqual(['responder: cannot open /dev/ttyS1 (ENOENT); trying again every 30 s']);
    expect(clock.pending).toBe(1); // the next open attempt
    agent.stop();
    expect(clock.pending).toBe(0);
  });

  it('markOnce writes one mark now', async () => {
    const { agent, lines } = setup();
    expect(await agent.markOnce(config())).toBe('eve-diag mark seq=1 uptime=1.00 load=0.00 mem_avail=1kB agent=test');
    expect(lines).toHaveLength(1);
  });

  it('describeDuties says what runs', () => {
    expect(describeDuties(config(), 'defaults')).toBe('heartbeat \\_TZ_.EDGA every 1 s; marks every 60 s to syslog, /dev/console (config: defaults)');
    expect(describeDuties(config({ periodMs: 0, markPeriodMs: 0, responder: '/dev/ttyS1' }), 'f')).toBe('no heartbeat; no marks; responder on /dev/ttyS1 (config: f)');
  });
});
