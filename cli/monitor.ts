import type { Command } from 'commander';
import { pino } from 'pino';
import { ConfigError, loadConfig, type MonitorConfig } from '../monitor/config.js';
import { COLLECTOR_KINDS, runMonitor } from '../monitor/daemon.js';
import { MonitorMetrics } from '../monitor/metrics.js';
import { UsageError } from './usage-error.js';

/** Load the monitor configuration; every problem (file:line: field: why) is a usage error (exit 2). */
export async function loadMonitorConfig(file: string): Promise<MonitorConfig> {
  try {
    return await loadConfig(file, { collectorKinds: COLLECTOR_KINDS });
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError('--config', undefined, e.message, { cause: e });
    throw e;
  }
}

interface MonitorFlags {
  config: string;
  metrics?: string;
  logLevel: string;
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(.*):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new UsageError('--metrics', text, 'HOST:PORT, e.g. 127.0.0.1:9464');
  return { host: (m[1] as string).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port };
}

/**
 * `eve-diag monitor`: long-running; JSON-lines logs on stdout; Prometheus /metrics; ends cleanly
 * on SIGTERM/SIGINT (workers stopped, QMP connections closed, running diagnostics finished).
 */
export async function monitor(flags: MonitorFlags, signal?: AbortSignal): Promise<void> {
  if (!['debug', 'info', 'warn', 'error'].includes(flags.logLevel)) throw new UsageError('--log-level', flags.logLevel, 'debug, info, warn or error');
  const config = await loadMonitorConfig(flags.config);
  const listen = flags.metrics !== undefined ? parseListen(flags.metrics) : config.metrics;
  const logger = pino({ level: flags.logLevel, base: { name: 'eve-diag' }, timestamp: pino.stdTimeFunctions.isoTime });
  const metrics = new MonitorMetrics();
  const server = listen ? await metrics.listen(listen.host, listen.port) : undefined;
  if (server) logger.info({ port: server.port, host: listen?.host }, 'metrics listening');
  const ac = new AbortController();
  const stop = () => ac.abort(new Error('signal'));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  signal?.addEventListener('abort', stop, { once: true });
  try {
    await runMonitor(config, {
      signal: ac.signal,
      metrics,
      log: ({ level, msg, ...rest }) => logger[level](rest, msg),
    });
  } catch (e) {
    // The files the configuration names (controller.tokenFile, caFile) are read at start.
    if (e instanceof ConfigError) throw new UsageError('--config', undefined, e.message, { cause: e });
    throw e;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    await new Promise((r) => (server ? server.server.close(r) : r(undefined)));
    logger.flush();
  }
}

export function register(program: Command): void {
  program
    .command('monitor')
    .description('run the monitor: scenarios bound to apps (VMs), verdicts, diagnostics into the spool on failure')
    .requiredOption('--config <file>', 'YAML or JSON configuration (schema: docs/monitor-config.schema.json)')
    .option('--metrics <host:port>', 'serve Prometheus /metrics here (overrides metrics.listen)')
    .option('--log-level <level>', 'debug, info, warn or error', 'info')
    .action(async (flags: MonitorFlags) => monitor(flags));
}
