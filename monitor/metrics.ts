import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { VERDICTS, type ProbeOutcome, type Verdict } from './types.js';

export { VERDICTS };

/** The monitor's Prometheus metrics, on a registry of their own (no global state). */
export class MonitorMetrics {
  readonly registry = new Registry();
  /** The newest heartbeat age per app and signal, in s: kept here, put in the gauge when scraped. */
  readonly #ages = new Map<string, { kernel?: number; agent?: number }>();
  readonly heartbeatAge = new Gauge({
    name: 'eve_diag_heartbeat_age_seconds',
    help: 'Seconds since the heartbeat counter last advanced, per app and signal (kernel, agent).',
    labelNames: ['app', 'signal'] as const,
    registers: [this.registry],
    // Set at scrape time: a poll per VM per second would otherwise hash the labels every time.
    collect: () => {
      for (const [app, a] of this.#ages) {
        if (a.kernel !== undefined) this.heartbeatAge.set({ app, signal: 'kernel' }, a.kernel);
        if (a.agent !== undefined) this.heartbeatAge.set({ app, signal: 'agent' }, a.agent);
      }
    },
  });
  readonly verdict = new Gauge({
    name: 'eve_diag_verdict',
    help: 'The current verdict per app: 1 for the verdict in force, 0 for the others.',
    labelNames: ['app', 'verdict'] as const,
    registers: [this.registry],
  });
  readonly probeDuration = new Histogram({
    name: 'eve_diag_probe_duration_seconds',
    help: 'Probe run time per app and scenario.',
    labelNames: ['app', 'scenario'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly probeResults = new Counter({
    name: 'eve_diag_probe_results_total',
    help: 'Probe results per app, scenario and outcome (success, failure, unknown).',
    labelNames: ['app', 'scenario', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly diagnostics = new Counter({
    name: 'eve_diag_diagnostics_total',
    help: 'Diagnostic scenarios run per app and verdict.',
    labelNames: ['app', 'verdict'] as const,
    registers: [this.registry],
  });

  readonly spoolBytes = new Gauge({
    name: 'eve_diag_spool_bytes',
    help: 'Bytes of the report bundles in the spool.',
    registers: [this.registry],
  });
  readonly spoolBundles = new Gauge({
    name: 'eve_diag_spool_bundles',
    help: 'Report bundles in the spool, delivered to the controller or not.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly spoolEvictions = new Counter({
    name: 'eve_diag_spool_evictions_total',
    help: 'Bundles removed to keep the spool within its quota; delivered="false" are reports the controller never got.',
    labelNames: ['delivered'] as const,
    registers: [this.registry],
  });

  readonly shipperUndelivered = new Gauge({ name: 'eve_diag_shipper_undelivered_reports', help: 'Report bundles in the spool the controller has not acknowledged yet.', registers: [this.registry] });
  readonly shipperOldestUndeliveredSeconds = new Gauge({ name: 'eve_diag_shipper_oldest_undelivered_seconds', help: 'Age of the oldest undelivered report bundle (0: none).', registers: [this.registry] });
  readonly shipperBytesSent = new Counter({ name: 'eve_diag_shipper_bytes_sent_total', help: 'Artifact bytes sent to the controller (as sent, compressed).', registers: [this.registry] });
  readonly shipperDelivered = new Counter({ name: 'eve_diag_shipper_delivered_total', help: 'Report bundles the controller acknowledged.', registers: [this.registry] });
  readonly shipperFailures = new Counter({ name: 'eve_diag_shipper_failures_total', help: 'Failed shipping attempts by reason (network, an HTTP status, rejected, damaged).', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly shipperEventsQueued = new Gauge({ name: 'eve_diag_shipper_events_queued', help: 'Verdict changes waiting to be sent.', registers: [this.registry] });
  readonly shipperEventsDropped = new Counter({ name: 'eve_diag_shipper_events_dropped_total', help: 'Verdict changes dropped because the queue was full.', registers: [this.registry] });

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'eve_diag_' });
  }

  readonly #scenarios = new Map<string, Set<string>>();

  probe(app: string, scenario: string, outcome: ProbeOutcome, durationMs: number): void {
    let scenarios = this.#scenarios.get(app);
    if (scenarios === undefined) this.#scenarios.set(app, (scenarios = new Set()));
    if (!scenarios.has(scenario)) scenarios.add(scenario);
    this.probeResults.inc({ app, scenario, outcome });
    this.probeDuration.observe({ app, scenario }, durationMs / 1000);
  }

  readonly #verdicts = new Map<string, Verdict>();

  /** The app's verdict in force (the series change only when it does). */
  setVerdict(app: string, v: Verdict): void {
    if (this.#verdicts.get(app) === v) return;
    for (const x of VERDICTS) this.verdict.set({ app, verdict: x }, x === v ? 1 : 0);
    this.#verdicts.set(app, v);
  }

  /** Seconds since the app's heartbeat (kernel or agent) last advanced. */
  setHeartbeatAge(app: string, signal: 'kernel' | 'agent', seconds: number): void {
    let a = this.#ages.get(app);
    if (a === undefined) this.#ages.set(app, (a = {}));
    a[signal] = seconds;
  }

  /** Forget an app that went away (its series would otherwise stay forever). */
  removeApp(app: string): void {
    for (const scenario of this.#scenarios.get(app) ?? []) {
      this.probeDuration.remove({ app, scenario });
      for (const outcome of ['success', 'failure', 'unknown']) this.probeResults.remove({ app, scenario, outcome });
    }
    this.#scenarios.delete(app);
    this.#verdicts.delete(app);
    this.#ages.delete(app);
    for (const x of VERDICTS) this.verdict.remove({ app, verdict: x });
    for (const signal of ['kernel', 'agent']) this.heartbeatAge.remove({ app, signal });
  }

  /** Serve `GET /metrics` on host:port (port 0 for any); resolves with the bound address. */
  async listen(host: string, port: number): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(e as Error).message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    return { server, port: typeof addr === 'object' && addr ? addr.port : port };
  }
}
