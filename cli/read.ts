import type { Command } from 'commander';
import { openSession } from '../host-reader/session.js';
import { pollJson, pollText } from './heartbeat-view.js';
import { addTargetOptions, loadLayoutFlag, openTarget, resolveTarget, type TargetFlags } from './target.js';

interface ReadFlags extends TargetFlags {
  json?: boolean;
  once?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One snapshot. Liveness needs two samples, so by default a second one is taken 1.5 kernel periods
 * after the first (capped at 10 s); `--once` reports the first sample alone.
 */
export async function read(flags: ReadFlags, out: (s: string) => void): Promise<void> {
  const spec = resolveTarget(flags);
  const { memory, pid } = spec;
  const layout = await loadLayoutFlag(flags.layout);
  const target = await openTarget(spec);
  const { qmpPath } = target;
  const s = await openSession({ qmpPath, layout, memory, memPath: flags.memPath, ...(pid !== undefined ? { pid } : {}), ...(target.pidFile !== undefined ? { pidFile: target.pidFile } : {}) }).catch(async (e: unknown) => {
    await target.close();
    throw e;
  });
  try {
    let p = await s.poller.poll();
    const discovery = p.snapshot?.discovery;
    if (!flags.once && p.snapshot) {
      await sleep(Math.min(10_000, layout.kernel.periodMs * 1.5));
      p = await s.poller.poll();
      if (p.snapshot && discovery && !p.snapshot.discovery) p.snapshot.discovery = discovery;
    }
    // The guest's AML writes a counter, then the pad byte that keeps the sum at zero (DESIGN fact 6):
    // a read between the two sees a bad sum. One more read, at once, before a checksum is called invalid.
    if (p.snapshot && !p.snapshot.checksumOk) {
      await sleep(20);
      const again = await s.poller.poll();
      if (again.snapshot) {
        if (discovery && !again.snapshot.discovery) again.snapshot.discovery = discovery;
        p = again;
      }
    }
    const choice = s.memoryChoice;
    const mem = choice === undefined ? undefined : { path: choice.path, note: choice.note, ...(choice.pid !== undefined ? { pid: choice.pid.pid } : {}) };
    out(flags.json ? JSON.stringify(pollJson(p, { qmp: target.label, ...(mem ? { memory: mem } : {}) })) : `${pollText(p, { target: target.label })}${mem ? `\nmemory    ${mem.note}` : ''}`);
    if (p.error && !p.snapshot) throw p.error;
  } finally {
    await s.close();
    await target.close();
  }
}

export function register(program: Command, out: (s: string) => void): void {
  addTargetOptions(
    program
      .command('read')
      .description('read the diagnostic region of a running VM once: table address, counters, heartbeat assessment'),
  )
    .option('--json', 'print one JSON object')
    .option('--once', 'one sample only (no liveness verdict: that needs two samples)')
    .action(async (flags: ReadFlags) => read(flags, out));
}
