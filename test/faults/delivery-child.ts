/**
 * A child process for the delivery faults (test/faults/delivery-scenarios.ts), so that a test can
 * SIGKILL the real code mid-work. Bundled by esbuild into .cache/faults/ and run with node:
 *
 *   ship SPOOL URL TOKEN   the real Shipper on SPOOL (small backoffs), every log record one JSON line
 *                          on stdout; on SIGTERM it stops and prints {"metrics": [...]} (its
 *                          MonitorMetrics) and exits 0.
 *   write SPOOL N PAUSE    the real spool writer (Spool.write, bundle.ts) writes N bundles; in the
 *                          last one it stops after PAUSE files (fsynced, in its .tmp- directory),
 *                          prints {"paused": "<tmp dir>"} and waits to be killed.
 */
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ControllerClient } from '../../monitor/controller-client.js';
import { MonitorMetrics } from '../../monitor/metrics.js';
import { Spool } from '../../monitor/report/spool.js';
import { Shipper } from '../../monitor/shipper.js';
import { isMainModule } from '../../util/main-module.js';

const out = (r: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(r)}\n`);

/** The bundle a fault scenario writes: a console unique per report and a QMP state shared by all. */
export function reportInput(app: string, i: number) {
  return {
    app,
    verdict: 'guest-panicked' as const,
    evidence: { reason: `kernel heartbeat stopped (report ${i})` },
    steps: [
      {
        kind: 'console-capture',
        ok: true,
        summary: 'console',
        artifacts: [{ name: 'console.txt', mediaType: 'text/plain' as const, data: `[    0.000000] Linux version 6.1.0-57-amd64\n[    2.846732] Kernel panic - not syncing: sysrq triggered crash (${app} report ${i})\n`.repeat(40) }],
      },
      { kind: 'qmp-state', ok: true, summary: 'qmp', artifacts: [{ name: 'qmp.json', mediaType: 'application/json' as const, data: JSON.stringify({ status: 'running', running: true }) }] },
    ],
  };
}

async function ship(dir: string, url: string, token: string): Promise<void> {
  const metrics = new MonitorMetrics({ processMetrics: false });
  const shipper = new Shipper({ spool: new Spool({ dir }), client: new ControllerClient({ url, token, timeoutMs: 5000 }), log: out, metrics, backoffMs: 20, maxBackoffMs: 250, idleMs: 50 });
  process.once('SIGTERM', () => {
    shipper
      .stop()
      .then(() => metrics.registry.getMetricsAsJSON())
      .then((m) => {
        out({ metrics: m });
        process.exit(0);
      })
      .catch((e: unknown) => {
        process.stderr.write(`${String(e)}\n`);
        process.exit(1);
      });
  });
  shipper.start();
}

async function write(dir: string, n: number, pauseAfter: number): Promise<void> {
  const spool = new Spool({ dir });
  for (let i = 0; i < n; i++) {
    let files = 0;
    const last = i === n - 1;
    await spool.write(reportInput('writer', i), {
      io: {
        async writeFile(path, data) {
          if (last && files === pauseAfter) {
            out({ paused: dirname(path) });
            await new Promise(() => setInterval(() => undefined, 60_000)); // killed here (the timer keeps node alive)
          }
          const fh = await open(path, 'wx', 0o600);
          try {
            await fh.writeFile(data);
            await fh.sync();
          } finally {
            await fh.close();
          }
          files++;
        },
      },
    });
    out({ written: i });
  }
}

if (isMainModule(import.meta.url, /delivery-child(-\d+)?\.m?js$/)) {
  const [mode, ...args] = process.argv.slice(2);
  const run = mode === 'ship' ? ship(args[0]!, args[1]!, args[2]!) : mode === 'write' ? write(args[0]!, Number(args[1]), Number(args[2])) : Promise.reject(new Error(`mode: ship or write (got ${String(mode)})`));
  run.catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
