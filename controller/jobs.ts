import { hostname } from 'node:os';
import { analyze, MAX_ANALYZED_ARTIFACT_BYTES, reportInput, type AnalyzeOptions, type AnalysisInput } from './analyzers/index.js';
import type { Job, Store } from './store/store.js';

/**
 * The analysis worker of one controller instance: it takes due jobs from the store's queue (with
 * PostgreSQL, `SKIP LOCKED` gives each job to exactly one instance), runs the analyzers and stores
 * the findings with the job's completion in one transaction: a report is analyzed once per job, and
 * a job whose taker died is taken again after `staleMs`.
 */

export interface JobRunnerOptions {
  store: Store;
  analyze?: AnalyzeOptions;
  log?: (r: { level: string; msg: string; [k: string]: unknown }) => void;
  /** Idle poll interval. Default 500 ms. */
  pollMs?: number;
  /** Most bytes of one artifact read for analysis. Default 8 MiB. */
  maxArtifactBytes?: number;
  maxAttempts?: number;
  retryMs?: number;
  /** How long a taken job is held while the store does not answer (its input read, its outcome recorded). Default 60 s. */
  holdMs?: number;
  /** This instance's name in the queue. Default host:pid:random. */
  worker?: string;
}

export class JobRunner {
  readonly worker: string;
  #stopping = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Jobs this instance completed (tests and metrics). */
  done = 0;
  failed = 0;

  constructor(private readonly o: JobRunnerOptions) {
    this.worker = o.worker ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  }

  start(): void {
    this.#loop ??= this.#run().catch((e: unknown) => this.o.log?.({ level: 'error', msg: 'job runner stopped', error: String(e) }));
  }

  /** Look at the queue now (a report was just stored). */
  kick(): void {
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
  }

  /** Takes and runs one job; false when none was due. */
  async runOne(): Promise<boolean> {
    const job = await this.o.store.claimJob(this.worker);
    if (job === undefined) return false;
    const t0 = performance.now();
    // The job is ours now: its input and its outcome go through #held, so a database restart in
    // between neither leaves it 'running' (untouched until it looks stale) nor counts as a failure.
    let findings;
    try {
      const input = await this.#held(job, () => this.#input(job));
      findings = input === undefined ? [] : await analyze(input, this.o.analyze ?? {});
    } catch (e) {
      this.failed++;
      this.o.log?.({ level: 'error', msg: 'analysis failed', job: job.key, error: String((e as Error)?.message ?? e) });
      await this.#held(job, () => this.o.store.failJob(job, this.worker, String((e as Error)?.message ?? e), this.o.retryMs ?? 30_000, this.o.maxAttempts ?? 5));
      return true;
    }
    const mine = await this.#held(job, () => this.o.store.completeJob(job, this.worker, findings));
    this.done += mine ? 1 : 0;
    this.o.log?.({ level: 'info', msg: 'analysis done', job: job.key, kind: job.kind, report: job.reportKey, findings: findings.length, ms: Math.round(performance.now() - t0) });
    return true;
  }

  /**
   * A store call for a job this instance holds, made again (backing off to 2 s) while the store does
   * not answer, for at most `holdMs`; then, or when stopping, its error is thrown and the job is left
   * to be taken again once it looks stale. (completeJob only completes a job still ours: a retry
   * after a COMMIT whose answer was lost changes nothing.)
   */
  async #held<T>(job: Job, call: () => Promise<T>): Promise<T> {
    const deadline = performance.now() + (this.o.holdMs ?? 60_000);
    for (let wait = 100; ; wait = Math.min(2000, wait * 2)) {
      try {
        return await call();
      } catch (e) {
        if (this.#stopping || performance.now() + wait > deadline) throw e;
        this.o.log?.({ level: 'warn', msg: 'job store unavailable: trying again', job: job.key, retryInMs: wait, error: String((e as Error)?.message ?? e) });
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      let worked = false;
      try {
        worked = await this.runOne();
      } catch (e) {
        // The database went away (a restart): wait and try again.
        this.o.log?.({ level: 'warn', msg: 'job queue unavailable', error: String((e as Error)?.message ?? e) });
      }
      // Between two jobs, a turn of the event loop: requests that came in meanwhile are served
      // first (the analyzers are synchronous CPU work in this thread, and ingest must not wait behind a queue of them).
      if (worked) await new Promise<void>((r) => setImmediate(r));
      else if (!this.#stopping) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, this.o.pollMs ?? 500);
          this.#wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.#wake = undefined;
      }
    }
  }

  async #input(job: Job): Promise<AnalysisInput | undefined> {
    const { store } = this.o;
    if (job.kind === 'analyze-logs') {
      if (job.nodeId === null || job.app === null) return undefined;
      const node = await store.db.get('SELECT name FROM nodes WHERE id = ?', [job.nodeId]);
      return { node: String(node?.['name'] ?? '?'), app: job.app, artifacts: [], logs: await store.logs(job.nodeId, job.app) };
    }
    if (job.reportKey === null) return undefined;
    const report = await store.report(job.reportKey);
    const manifest = await store.manifest(job.reportKey);
    if (report === undefined || manifest === undefined) return undefined;
    return reportInput(report.node, manifest, (a) => store.blob(a.sha256), this.o.maxArtifactBytes ?? MAX_ANALYZED_ARTIFACT_BYTES);
  }
}
