import { describe, expect, test } from 'vitest';
import { analyze, analyzeKernelText } from '../../controller/analyzers/index.js';
import type { Finding } from '../../controller/store/store.js';
import { bundleInput, fixtureBundles } from '../helpers/fixtures.js';

/**
 * The built-in analyzers on real captures: bundles the monitor's collectors wrote from real Linux
 * guests (6.1 and 6.12 under QEMU TCG) in test/controller/captures.guest.test.ts, kept as fixtures.
 * The serial console of a busy TCG guest doubles characters now and then (`statte:D`, `<TASK>>`,
 * `+00x13f`): the analyzers must read through that, as they must on a real node.
 */

const SCENARIOS = ['blocked', 'lockup', 'oops-panic', 'panic', 'qemu-stopped'] as const;
type Scenario = (typeof SCENARIOS)[number];

const bundles = await fixtureBundles();
const titles = (fs: Finding[]) => fs.map((f) => `${f.analyzer}/${f.severity}: ${f.title}`);
const one = (fs: Finding[], re: RegExp): Finding => {
  const hits = fs.filter((f) => re.test(f.title));
  expect(hits.map((f) => f.title), `one finding matching ${re} in\n${titles(fs).join('\n')}`).toHaveLength(1);
  return hits[0] as Finding;
};

/** What each captured scenario must give, on every kernel. */
const EXPECT: Record<Scenario, (fs: Finding[]) => void> = {
  blocked(fs) {
    const hung = one(fs, /^3 hung tasks: dd \(pid \d+\), dd \(pid \d+\), dd \(pid \d+\) blocked for more than \d+ s$/);
    expect(hung.severity).toBe('error');
    expect(hung.explanation).toMatch(/Call trace: .*folio_wait_bit_common|Call trace: .*wait_on_page/);
    expect(hung.evidence).toHaveLength(3);
    for (const e of hung.evidence) expect(e.excerpt).toMatch(/^INFO: task dd:\d+ blocked for more th/); // `thaan` in one 6.1 capture
    const oom = one(fs, /^OOM kill: tail \(pid \d+\), \d+ MiB resident$/);
    expect(oom.explanation).toMatch(/killed tail \(total-vm \d+ kB, anon-rss \d+ kB\)/);
    expect(oom.evidence[0]?.excerpt).toMatch(/^tail invoked oom-killer/);
    // SysRq w and t: the three dd in D, sharing the writeback wait.
    const blocked = fs.filter((f) => f.analyzer === 'sysrq-tasks' && f.severity === 'error');
    expect(blocked.map((f) => f.title)).toHaveLength(2);
    for (const f of blocked) expect(f.title).toMatch(/^3 task\(s\) blocked in D state; 3 wait in \S+( < \S+){3}$/);
    expect(blocked.every((f) => /Blocked tasks: dd:\d+, dd:\d+, dd:\d+\./.test(f.explanation))).toBe(true);
    one(fs, /^Task states \(SysRq sysrq-t\.txt\): \d+ idle, \d+ sleeping, 3 blocked \(D\)$/);
  },
  lockup(fs) {
    const soft = one(fs, /^Soft lockup: CPU \d stuck for \d+ s in sync \(pid \d+\)$/);
    expect(soft.severity).toBe('critical');
    expect(soft.explanation).toMatch(/It was at k+s+y+s+_+s+y+n+c+\++0+x+0+\/0x[0-9a-f]+\./);
    const rcu = one(fs, /^RCU stall \(rcu_preempt, (self-)?detected\) on CPU \d$/);
    expect(rcu.severity).toBe('error');
    // The registers sampled that vCPU in the kernel, not halted (another one may have had interrupts
    // off at that instant: a warning then, with every vCPU listed).
    const regs = one(fs, /^vCPUs: |^vCPU [\d, ]+ in the kernel with interrupts off when sampled$/);
    const cpu = /CPU (\d)/.exec(soft.title)?.[1];
    expect(regs.explanation).toContain(`CPU ${cpu} kernel at RIP`);
  },
  'oops-panic'(fs) {
    const oops = one(fs, /^Kernel oops: BUG: kernel NULL pointer dereference, address: 0+$/);
    expect(oops.explanation).toMatch(/It was at k+s+y+s+_+s+y+n+c+\++0+x+0+\/0x[0-9a-f]+\./);
    one(fs, /^Kernel panic: sysrq triggered crash$/);
  },
  panic(fs) {
    const p = one(fs, /^Kernel panic: sysrq triggered crash$/);
    expect(p.severity).toBe('critical');
    expect(p.explanation).toMatch(/Call trace: panic < sysrq_handle_crash < __handle_sysrq(\.cold)? < write_sysrq_trigger/);
    expect(p.evidence[0]?.excerpt).toMatch(/^Kernel panic - not syncing: sysrq triggered crash\n/);
  },
  'qemu-stopped'(fs) {
    const s = one(fs, /^QEMU \(pid \d+\) is stopped on the host$/);
    expect(s.severity).toBe('critical');
    expect(fs.filter((f) => f.severity === 'critical' || f.severity === 'error')).toEqual([s]);
  },
};

describe('the captured bundles', () => {
  test('every scenario was captured on both kernels', () => {
    const have = bundles.map(([k, s]) => `${k}/${s}`);
    for (const k of ['debian-6.1', 'debian-6.12']) for (const s of SCENARIOS) expect(have).toContain(`${k}/${s}`);
  });
});

describe.each(bundles)('%s %s', (_kernel, scenario, dir) => {
  test('the built-in analyzers find what happened, and nothing that did not', async () => {
    const findings = await analyze(await bundleInput(dir));
    EXPECT[scenario as Scenario](findings);
    // A panic is claimed only where there was one; a hang of tasks only where there was one.
    expect(findings.some((f) => /^Kernel panic/.test(f.title))).toBe(scenario === 'panic' || scenario === 'oops-panic');
    expect(findings.some((f) => /hung task/.test(f.title))).toBe(scenario === 'blocked');
    expect(findings.some((f) => /lockup|RCU stall/.test(f.title))).toBe(scenario === 'lockup');
    for (const f of findings) {
      expect(f.title.length).toBeLessThanOrEqual(200);
      for (const e of f.evidence) if (e.lineStart !== undefined) expect(e.lineEnd ?? e.lineStart).toBeGreaterThanOrEqual(e.lineStart);
    }
  });
});

describe('reading through a busy serial console', () => {
  test('doubled characters in the trace marker, offsets and timestamps do not lose frames', () => {
    const text = [
      '[  100.1234567] Kernel panic - not syncing: sysrq triggered crash',
      '[  100.123456]] Call Trace:',
      '[  100.123456]  <TASK>>',
      '[  100.123456]  dump_stack_lvl+0x44/0x5c',
      '[  100.123456]  panic++0x118/0x2f4',
      '[  100.123456]  sysrq_handle_crash+0x16/0x20',
      '[  100.123456]  __handle_sysrq.cold+0x4c/0x11e',
      '[  100.123456]  write_sysrq_trigger+0x244/0x388',
      '[  100.123456]  </TASK>',
    ].join('\n');
    const f = analyzeKernelText(text, { file: 'console.txt' });
    expect(f.map((x) => x.title)).toEqual(['Kernel panic: sysrq triggered crash']);
    expect(f[0]?.explanation).toContain('Call trace: panic < sysrq_handle_crash < __handle_sysrq.cold < write_sysrq_trigger');
    expect(f[0]?.evidence[0]).toMatchObject({ artifact: 'console.txt', lineStart: 1 });
  });

  test('doubled characters in the words the rules look for: `thaan`, `Call Traace:`, `statte:D`, `10..331902`', () => {
    const hung = [
      '[   10..331902] INFO: task dd:94 blocked for more thaan 3 seconds.',
      '[   10.331903] task:dd              statte:D stack:0     pid:94    ppid:89     flags:0x00004002',
      '[   10.331904] Call Traace:',
      '[   10.331905]  <TASK>',
      '[   10.331906]  __schedule+0x34d/0xa00',
      '[   10.331907]  folio_wait_bit_common+0x13d/0x380',
      '[   10.331908]  blkdev_fsync+0x13/0x30',
      '[   10.331909]  </TASK>',
    ].join('\n');
    const f = analyzeKernelText(hung, { file: 'console.txt' });
    expect(f.map((x) => x.title)).toEqual(['Hung task: dd (pid 94) blocked for more than 3 s']);
    expect(f[0]?.explanation).toContain('Call trace: folio_wait_bit_common < blkdev_fsync.');
  });

  test('a repeated lockup report fills in the RIP and trace the first one lost; `RIIP: 00010:` is still a RIP', () => {
    const report = (t: number, body: string[]) => [`[  ${t}.000001] watchdog: BUG: soft lockup - CPU#1 stuck for ${t}s! [sync:301]`, ...body].map((l) => (l.startsWith('[') ? l : `[  ${t}.000002] ${l}`));
    const text = [
      // The first report's block was lost on the console: only its first line came through.
      ...report(22, ['rcu: INFO: rcu_preempt self-detected stall on CPU']),
      ...report(26, ['Modules linked in:', 'CPU: 1 PID: 301 Comm: sync Not tainted 6.1.0-27-amd64 #1', 'RIIP: 00010:ksys_ssync+0x0/0xb0', 'Code: 00 00 00', 'Call Trace:', ' <TASK>', ' __do_sys_sync+0xa/0x20', ' do_syscall_64+0x58/0xc0', ' </TASK>']),
    ].join('\n');
    const soft = analyzeKernelText(text, { file: 'console.txt' }).find((x) => x.title.startsWith('Soft lockup'));
    expect(soft?.title).toBe('Soft lockup: CPU 1 stuck for 26 s in sync (pid 301)');
    expect(soft?.explanation).toContain('(2 reports)');
    expect(soft?.explanation).toMatch(/It was at ksys_ssync\+0x0\/0xb0\. Call trace: __do_sys_sync < do_syscall_64\.$/);
  });
});
