import type { Command } from 'commander';
import { openSession } from '../host-reader/session.js';
import { realClock } from '../util/clock.js';
import { pollJson, pollText } from './heartbeat-view.js';
import { addTargetOptions, loadLayoutFlag, openTarget, resolveTarget, type TargetFlags } from './target.js';
import { UsageError } from './usage-error.js';

interface WatchFlags extends TargetFlags {
  json?: boolean;
  interval?: string;
  count?: string;
}

/**
 * A live view: poll every interval, redraw in place on a terminal (or one JSON line per poll with
 * --json). Ends on SIGINT/SIGTERM, after --count polls, or when QEMU goes away (exit 1).
 */
export async function watch(flags: WatchFlags, out: (s: string) => void, signal?: AbortSignal): Promise<void> {
  const spec = resolveTarget(flags);
  const { memory, pid } = spec;
  const layout = await loadLayoutFlag(flags.layout);
  const intervalMs = flags.interval === undefined ? Math.max(100, Math.min(1000, layout.kernel.periodMs / 2)) : Number(flags.interval);
  if (!Number.isInteger(intervalMs) || intervalMs < 50 || intervalMs > 3_600_000) {
    throw new UsageError('--interval', flags.interval, 'milliseconds between polls, 50..3600000');
  }
  const count = flags.count === undefined ? Infinity : Number(flags.count);
  if (count !== Infinity && (!Number.isInteger(count) || count < 1)) throw new UsageError('--count', flags.count, 'a positive integer');

  const ac = new AbortController();
  const stop = () => ac.abort(new Error('stopped'));
  signal?.addEventListener('abort', stop, { once: true });
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const tty = !flags.json && process.stdout.isTTY === true;
  const target = await openTarget(spec);
  const { qmpPath } = target;
  const s = await openSession({ qmpPath, layout, memory, memPath: flags.memPath, ...(pid !== undefined ? { pid } : {}), ...(target.pidFile !== undefined ? { pidFile: target.pidFile } : {}) }).catch(async (e: unknown) => {
    await target.close();
    throw e;
  });
  let drawn = 0;
  try {
    for (let i = 0; i < count && !ac.signal.aborted; i++) {
      const t0 = performance.now();
      const p = await s.poller.poll(ac.signal).catch((e: unknown) => {
        if (ac.signal.aborted) return undefined;
        throw e;
      });
      if (!p) break;
      const memoryPath = s.memoryChoice?.path;
      if (flags.json) out(JSON.stringify(pollJson(p, { time: new Date().toISOString(), ...(memoryPath ? { memory: memoryPath } : {}) })));
      else {
        const text = `${pollText(p, { color: tty, target: target.label })}${s.memoryChoice ? `\nmemory    ${s.memoryChoice.note}` : ''}`;
        // Redraw in place: move up over the previous frame and clear it.
        out((tty && drawn ? `\x1b[${drawn}F\x1b[J` : i ? '\n' : '') + text);
        drawn = text.split('\n').length;
      }
      const wait = intervalMs - (performance.now() - t0);
      // The sleep removes its abort listener when it wakes: a long watch adds none per poll.
      if (i + 1 < count && wait > 0) await realClock.sleep(wait, ac.signal).catch(() => undefined);
    }
  } finally {
    signal?.removeEventListener('abort', stop);
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await s.close();
    await target.close();
  }
}

export function register(program: Command, out: (s: string) => void): void {
  addTargetOptions(
    program.command('watch').description('live heartbeat view of a running VM (kernel and agent heartbeat, jitter, VM run state)'),
  )
    .option('--json', 'one JSON line per poll')
    .option('--interval <ms>', 'milliseconds between polls, 50..3600000 (default: half the kernel period, kept within 100..1000)')
    .option('--count <n>', 'stop after n polls')
    .action(async (flags: WatchFlags) => watch(flags, out));
}
