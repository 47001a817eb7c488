import { appendFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { LineSplitter } from '../../../host-reader/console/line-splitter.js';
import { LogfileTail } from '../../../host-reader/console/logfile-reader.js';
import { classify, type ScenarioObservation } from '../../../monitor/classify.js';
import { HeartbeatProbe, LogMarksProbe, QmpLinks, type KernelEvent } from '../../../monitor/probes/index.js';
import type { AppTarget, ProbeResult } from '../../../monitor/types.js';
import { diagTableFiles } from '../../helpers/diag-table.js';
import { launchGuest, stopAllGuests, type Guest } from '../../helpers/guest.js';

/**
 * `log-marks` on a real guest (one boot): a shell loop on ttyS0 prints a mark line every second, read
 * from the console logfile (source `console`) and, through a small pump that rewrites each console
 * line as a newlogd LogEntry JSON line (what EVE's newlogd does with an app's console), from a file
 * of entries (source `log-entries`). Both succeed; the loop is killed while the kernel still beats:
 * both fail and the classifier says guest-userspace-hung; then `echo c > /proc/sysrq-trigger`: both
 * fail with a `panic` kernel event, and with the kernel heartbeat stalled the verdict is guest-panicked.
 */

const PERIOD_MS = 1000;
const BEAT_MS = 500;
const files = diagTableFiles('eve-diag-log-marks-guest-', { nonce: 0x9b0b_e500_0000_0012n, kernelPeriodMs: BEAT_MS });
afterAll(stopAllGuests);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const opts = () => ({ timeoutMs: 5000, signal: new AbortController().signal });

/** Copies new console lines into `entries` as newlogd's LogEntry JSON lines. */
function startPump(consoleLog: string, entries: string): { stop: () => Promise<void> } {
  const tail = new LogfileTail(consoleLog);
  const lines = new LineSplitter();
  let msgid = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const read = await tail.poll();
      const out = lines
        .push(read.data)
        .map((l) => {
          const t = Date.now();
          return `${JSON.stringify({ severity: 'info', source: 'guest-uuid.1.1', content: l.text, msgid: ++msgid, timestamp: { seconds: Math.floor(t / 1000), nanos: (t % 1000) * 1e6 } })}\n`;
        })
        .join('');
      if (out !== '') await appendFile(entries, out);
      await sleep(200);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** Runs both probes every period until `until` holds for both, or `maxMs` passes. */
async function pollBoth(run: () => Promise<[ProbeResult, ProbeResult]>, until: (r: ProbeResult) => boolean, maxMs: number): Promise<[ProbeResult, ProbeResult][]> {
  const log: [ProbeResult, ProbeResult][] = [];
  const t0 = performance.now();
  for (;;) {
    const r = await run();
    log.push(r);
    if ((until(r[0]) && until(r[1])) || performance.now() - t0 > maxMs) return log;
    await sleep(PERIOD_MS);
  }
}
const outline = (log: readonly [ProbeResult, ProbeResult][]) => log.map(([a, b]) => `${a.outcome}/${b.outcome}`).join(' ');
const kinds = (r: ProbeResult) => ((r.evidence?.kernelEvents ?? []) as KernelEvent[]).map((e) => e.kind);

test('marks from a shell loop: success; loop killed with the kernel beating: userspace hung; sysrq crash: panic', async () => {
  let guest: Guest | undefined;
  const links = new QmpLinks();
  let pump: { stop: () => Promise<void> } | undefined;
  try {
    guest = await launchGuest({ acpiTables: [files.tableFile], append: 'quiet' });
    const target: AppTarget = { name: 'guest', qmp: guest.qmpPath, consoleLog: guest.consoleLogPath, layout: files.layoutFile };
    const entries = join(files.dir, 'app.guest-uuid.log123');
    await writeFile(entries, 'guest-app\n'); // newlogd's first line: the app name
    pump = startPump(guest.consoleLogPath, entries);

    const consoleMarks = new LogMarksProbe({ source: 'console' }, { periodMs: PERIOD_MS });
    const entryMarks = new LogMarksProbe({ source: 'log-entries', path: join(files.dir, 'app.guest-uuid.log*') }, { periodMs: PERIOD_MS });
    const both = async (): Promise<[ProbeResult, ProbeResult]> => [await consoleMarks.run(target, opts()), await entryMarks.run(target, opts())];
    const kernel = new HeartbeatProbe('kernel', links);

    const base = await both();
    expect(base.map((r) => r.outcome)).toEqual(['unknown', 'unknown']);

    // The guest's own cron/logger stand-in: a mark every second on the console.
    const started = await guest.run(
      'i=0; while :; do i=$((i+1)); read up _ < /proc/uptime; echo "eve-diag mark seq=$i uptime=$up load=0 mem_avail=0kB agent=test-sh"; sleep 1; done & echo "LOOP=$!"',
    );
    const pid = /LOOP=(\d+)/.exec(started)?.[1];
    expect(pid, started).toBeDefined();

    const up = await pollBoth(both, (r) => r.outcome === 'success', 15_000);
    const [c1, e1] = up.at(-1) as [ProbeResult, ProbeResult];
    expect(c1.outcome, outline(up)).toBe('success');
    expect(e1.outcome, outline(up)).toBe('success');
    expect(c1.evidence?.lastMark).toMatch(/^eve-diag mark seq=\d+ uptime=[\d.]+ .*agent=test-sh$/);
    expect(e1.evidence).toMatchObject({ source: 'log-entries', file: entries, invalidLines: 1 });

    let k: ProbeResult | undefined;
    for (let i = 0; i < 20 && k?.outcome !== 'success'; i++) {
      k = await kernel.run(target, opts());
      if (k.outcome !== 'success') await sleep(BEAT_MS);
    }
    expect(k?.outcome, JSON.stringify(k)).toBe('success');

    // Userspace's marks stop; the kernel keeps beating.
    await guest.run(`kill ${pid as string}`);
    const down = await pollBoth(both, (r) => r.outcome === 'failure', 10_000);
    const [c2, e2] = down.at(-1) as [ProbeResult, ProbeResult];
    expect(c2.outcome, outline(down)).toBe('failure');
    expect(e2.outcome, outline(down)).toBe('failure');
    expect(c2.detail).toMatch(/^no mark for [\d.]+ s \(last seq=\d+; due within 2\.0 s\)$/);
    const k2 = await kernel.run(target, opts());
    expect(k2.outcome).toBe('success');
    const obs = (marks: ProbeResult, beat: ProbeResult, result: 'success' | 'failure'): ScenarioObservation[] => [
      { scenario: 'kernel', probe: 'kernel-heartbeat', result, last: { ...beat, at: 2 } },
      { scenario: 'app-marks', probe: 'log-marks', result: 'failure', last: { ...marks, at: 2 } },
    ];
    expect(classify({ app: 'guest', scenarios: obs(c2, k2, 'success') })).toMatchObject({ verdict: 'guest-userspace-hung', reason: 'kernel alive, app-marks failing' });
    expect(classify({ app: 'guest', scenarios: obs(e2, k2, 'success') }).verdict).toBe('guest-userspace-hung');

    // A crash: the panic line reaches both streams.
    await guest.run('echo c > /proc/sysrq-trigger', 3000).catch(() => undefined);
    const crash = await pollBoth(both, (r) => kinds(r).includes('panic'), 15_000);
    const [c3, e3] = crash.at(-1) as [ProbeResult, ProbeResult];
    for (const r of [c3, e3]) {
      expect(r.outcome, outline(crash)).toBe('failure');
      expect(kinds(r)).toContain('panic');
      expect(r.detail).toMatch(/^kernel panic in the log: .*Kernel panic - not syncing: sysrq triggered crash/);
    }
    let k3: ProbeResult | undefined;
    for (let i = 0; i < 20 && k3?.outcome !== 'failure'; i++) {
      k3 = await kernel.run(target, opts());
      if (k3.outcome !== 'failure') await sleep(BEAT_MS);
    }
    expect(k3?.outcome, JSON.stringify(k3)).toBe('failure');
    expect(classify({ app: 'guest', scenarios: obs(e3, k3 as ProbeResult, 'failure') })).toMatchObject({ verdict: 'guest-panicked' });
  } finally {
    await pump?.stop();
    await links.closeAll();
    await guest?.stop();
  }
}, 110_000);
