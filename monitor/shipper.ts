import { createHash, randomBytes } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { paths, type DroppedNotice, type ReportAck, type ReportOffer, type VerdictEvent } from '../protocol/controller-api.js';
import { MANIFEST_FILE, type ReportManifest } from '../protocol/report-manifest.js';
import { realClock, type Clock } from '../util/clock.js';
import { ControllerError, type ControllerClient } from './controller-client.js';
import type { LogRecord } from './manager.js';
import type { MonitorMetrics } from './metrics.js';
import { MAX_MANIFEST_READ_BYTES, readSpoolFile, SpoolFileTooLarge, writeSpoolFile } from './report/bundle.js';
import type { Spool } from './report/spool.js';

/**
 * Spool -> controller. Every bundle in the spool is delivered until the controller acknowledges it
 * with the manifest's and the artifacts' hashes; then, and only then, it is marked delivered (and may
 * be evicted). The upload resumes where it stopped (the controller says which artifacts it lacks), so
 * a controller down for days, answering 500, slow, or cutting the connection, and a monitor killed
 * mid-upload, lose nothing and store nothing twice. Failures back off exponentially with jitter.
 * A bundle the controller refuses for good (invalid, too large), or one that cannot be sent as it is
 * (damaged: a file gone, a manifest that is not JSON), is marked rejected and announced as not
 * delivered; so is every bundle the spool had to drop.
 *
 * Verdict changes go as they happen, from a bounded queue (the oldest are dropped and counted when
 * the controller is away for long).
 */

/** A file of a bundle that is missing, not a regular file, or not what its manifest says. */
class BundleDamage extends Error {
  override name = 'BundleDamage';
}

/** A bundle's file, read without following a link and no longer than `max`; damage is a BundleDamage. */
async function bundleFile(path: string, max: number): Promise<Buffer> {
  const data = await readSpoolFile(path, max).catch((e: unknown) => {
    if (e instanceof SpoolFileTooLarge) throw new BundleDamage(`${path} has ${e.bytes} bytes, more than ${max}`, { cause: e });
    throw e;
  });
  if (data === undefined) throw new BundleDamage(`${path} is missing or not a regular file`);
  return data;
}

/** The shipper's own notes in the spool are small: what is larger is not ours. */
const NOTE_MAX_BYTES = 4 * 1024 * 1024;

export interface ShipperOptions {
  spool: Spool;
  client: ControllerClient;
  log: (r: LogRecord) => void;
  metrics?: MonitorMetrics;
  clock?: Clock;
  /** First retry delay; doubles up to maxBackoffMs, with jitter. Default 1 s. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How often the spool is looked at when idle. Default 5 s. */
  idleMs?: number;
  maxQueuedEvents?: number;
  random?: () => number;
}

/** What `<spool>/.dropped.sent` holds: the ids of dropped reports already announced. */
const DROPPED_SENT = '.dropped.sent';
/** How a rejected bundle's reason starts (its `.rejected` mark, the notice to the controller). */
const REFUSED = 'rejected by the controller:';
const DAMAGED = 'not sent, the bundle is damaged:';

export class Shipper {
  readonly #o: ShipperOptions;
  readonly #clock: Clock;
  #events: VerdictEvent[] = [];
  #failures = 0;
  #ac = new AbortController();
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Bundles delivered by this process (tests, metrics). */
  delivered = 0;

  constructor(o: ShipperOptions) {
    this.#o = o;
    this.#clock = o.clock ?? realClock;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Something new to send: look now. */
  kick(): void {
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#ac.abort(new Error('stopping'));
    this.#wake?.();
    await this.#loop;
  }

  /** Queues a verdict change (bounded: the oldest queued go first when full). */
  enqueueEvent(e: Omit<VerdictEvent, 'id'>): void {
    const max = this.#o.maxQueuedEvents ?? 1000;
    this.#events.push({ id: `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`, ...e });
    if (this.#events.length > max) {
      this.#o.metrics?.shipperEventsDropped.inc(this.#events.length - max);
      this.#events.splice(0, this.#events.length - max);
    }
    this.#o.metrics?.shipperEventsQueued.set(this.#events.length);
    this.kick();
  }

  /** One pass: events, dropped notices, then every undelivered bundle, oldest first. Throws on the first failure. */
  async runOnce(): Promise<void> {
    const signal = this.#ac.signal;
    await this.#sendEvents(signal);
    await this.#sendDropped(signal);
    const all = await this.#o.spool.entries();
    const pending = all.filter((e) => !e.delivered && !e.rejected);
    this.#updateMetrics(pending.map((e) => e.id));
    for (const e of pending) {
      if (signal.aborted) return;
      await this.#deliver(e.id, e.dir, signal);
    }
    this.#updateMetrics([]);
  }

  #updateMetrics(undelivered: readonly string[]): void {
    const m = this.#o.metrics;
    if (m === undefined) return;
    m.shipperUndelivered.set(undelivered.length);
    // Bundle ids start with their UTC time: the oldest's age.
    const first = undelivered[0];
    const stamp = first === undefined ? undefined : /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z/.exec(first);
    const at = stamp === undefined || stamp === null ? undefined : Date.UTC(+stamp[1]!, +stamp[2]! - 1, +stamp[3]!, +stamp[4]!, +stamp[5]!, +stamp[6]!, +stamp[7]!);
    m.shipperOldestUndeliveredSeconds.set(at === undefined ? 0 : Math.max(0, (Date.now() - at) / 1000));
  }

  async #deliver(id: string, dir: string, signal: AbortSignal): Promise<void> {
    const { client, spool, log, metrics } = this.#o;
    let text: string;
    let manifest: ReportManifest;
    try {
      text = (await bundleFile(join(dir, MANIFEST_FILE), MAX_MANIFEST_READ_BYTES)).toString('utf8');
      manifest = JSON.parse(text) as ReportManifest;
    } catch (e) {
      if (await this.#damaged(id, dir, e)) return;
      throw e;
    }
    const sha = createHash('sha256').update(text).digest('hex');
    let offer: ReportOffer;
    try {
      offer = (await client.request('POST', paths.reports, { data: Buffer.from(text, 'utf8'), type: 'application/json' }, signal)).body as ReportOffer;
    } catch (e) {
      if (await this.#refused(id, e)) return;
      throw e;
    }
    let ack = offer.ack;
    if (offer.status !== 'stored') {
      const byHash = new Map(manifest.steps.flatMap((s) => s.artifacts.map((a) => [a.sha256, a] as const)));
      for (const h of offer.missing) {
        const a = byHash.get(h);
        if (a === undefined) throw new ControllerError(`the controller asks for ${h}, which report ${id} does not have`, undefined, false);
        let data: Buffer;
        try {
          // The bytes sent are the ones the manifest names (a file changed since is damage, not sent).
          data = await bundleFile(join(dir, a.file), a.bytes);
          if (data.length !== a.bytes || createHash('sha256').update(data).digest('hex') !== a.sha256) throw new BundleDamage(`${a.file} is not the file its manifest lists (size or SHA-256 differ)`);
        } catch (e) {
          if (await this.#damaged(id, dir, e)) return;
          throw e;
        }
        // Text compresses well; what is already dense goes as it is.
        const gz = a.mediaType !== 'application/octet-stream' && data.length > 1024 ? gzipSync(data) : undefined;
        try {
          await client.request('PUT', paths.artifact(id, h), { data: gz ?? data, type: 'application/octet-stream', gzip: gz !== undefined }, signal);
        } catch (e) {
          if (await this.#refused(id, e)) return;
          throw e;
        }
        metrics?.shipperBytesSent.inc((gz ?? data).length);
      }
      try {
        ack = (await client.request('POST', paths.commit(id), undefined, signal)).body as ReportAck;
      } catch (e) {
        if (await this.#refused(id, e)) return;
        throw e;
      }
    }
    const problem = ackProblem(ack, manifest, sha);
    if (problem !== undefined) throw new ControllerError(`report ${id}: the controller's acknowledgement does not match: ${problem}`, undefined, true);
    await spool.markDelivered(id, ack as unknown as Record<string, unknown>);
    this.delivered++;
    metrics?.shipperDelivered.inc();
    log({ level: 'info', msg: 'report delivered', report: id, key: ack?.key, artifacts: ack?.artifacts.length });
  }

  /** A final refusal (not worth retrying) marks the bundle rejected; returns whether it was one. */
  async #refused(id: string, e: unknown): Promise<boolean> {
    if (!(e instanceof ControllerError) || e.retryable || e.status === undefined) return false;
    await this.#o.spool.markRejected(id, `${REFUSED} ${e.message}`);
    this.#o.metrics?.shipperFailures.inc({ reason: 'rejected' });
    this.#o.log({ level: 'error', msg: 'report rejected by the controller (not delivered)', report: id, error: e.message });
    return true;
  }

  /**
   * A bundle that can never be sent as it is (a file of it gone, a manifest that is not JSON) is
   * marked rejected too: retried, it would hold back every bundle after it, and never be announced.
   * Returns whether `e` was such damage (or the bundle was removed meanwhile, by the spool's quota).
   */
  async #damaged(id: string, dir: string, e: unknown): Promise<boolean> {
    if (!(e instanceof SyntaxError) && !(e instanceof BundleDamage) && (e as NodeJS.ErrnoException).code !== 'ENOENT') return false;
    if (!(await lstat(dir).then((st) => st.isDirectory(), () => false))) {
      // Removed by the spool's quota (then its ledger has it), or by someone else: then it goes in the
      // ledger here, so the controller hears of it (it may hold the offered manifest, never stored).
      if (!(await this.#o.spool.dropped()).some((d) => d.id === id)) {
        await this.#o.spool.recordDropped({ id, bytes: 0, droppedAt: new Date().toISOString(), reason: 'removed from the spool before it was delivered' });
        this.#o.metrics?.shipperFailures.inc({ reason: 'removed' });
        this.#o.log({ level: 'error', msg: 'report bundle removed from the spool before it was delivered', report: id });
      }
      return true;
    }
    const why = String((e as Error).message);
    await this.#o.spool.markRejected(id, `${DAMAGED} ${why}`);
    this.#o.metrics?.shipperFailures.inc({ reason: 'damaged' });
    this.#o.log({ level: 'error', msg: 'report bundle damaged (not delivered)', report: id, error: why });
    return true;
  }

  async #sendEvents(signal: AbortSignal): Promise<void> {
    while (this.#events.length > 0 && !signal.aborted) {
      const batch = this.#events.slice(0, 100);
      await this.#o.client.request('POST', paths.events, { data: Buffer.from(JSON.stringify(batch)), type: 'application/json' }, signal).catch((e: unknown) => {
        // An event the controller refuses (invalid) is dropped, not retried forever.
        if (e instanceof ControllerError && !e.retryable && e.status !== undefined) {
          this.#o.log({ level: 'warn', msg: 'verdict events refused by the controller', error: e.message, count: batch.length });
          return;
        }
        throw e;
      });
      this.#events.splice(0, batch.length);
      this.#o.metrics?.shipperEventsQueued.set(this.#events.length);
    }
  }

  /** Announces the reports the spool dropped and the ones the controller refused, once each. */
  async #sendDropped(signal: AbortSignal): Promise<void> {
    const { spool } = this.#o;
    const sentFile = join(spool.dir, DROPPED_SENT);
    const sent = new Set(((await readSpoolFile(sentFile, NOTE_MAX_BYTES).catch(() => undefined))?.toString('utf8') ?? '').split('\n').filter((l) => l !== ''));
    // One notice per id (a ledger may list one twice: the quota and the shipper both saw it go).
    const notices: DroppedNotice[] = [...new Map((await spool.dropped()).filter((d) => !sent.has(d.id)).map((d) => [d.id, d] as const)).values()];
    for (const e of await spool.entries()) {
      if (!e.rejected || sent.has(e.id)) continue;
      const why = await readSpoolFile(join(e.dir, '.rejected'), NOTE_MAX_BYTES).then((t) => (JSON.parse(t?.toString('utf8') ?? '{}') as { reason?: string }).reason ?? 'rejected', () => 'rejected');
      // Older marks hold the controller's message alone.
      const reason = why.startsWith(REFUSED) || why.startsWith(DAMAGED) ? why : `${REFUSED} ${why}`;
      notices.push({ id: e.id, bytes: e.bytes, droppedAt: new Date().toISOString(), reason: reason.slice(0, 256) });
    }
    for (let i = 0; i < notices.length && !signal.aborted; i += 100) {
      const batch = notices.slice(i, i + 100);
      await this.#o.client.request('POST', paths.dropped, { data: Buffer.from(JSON.stringify(batch)), type: 'application/json' }, signal);
      for (const d of batch) sent.add(d.id);
      // Only the ids still in the ledger or the spool matter: the file stays as small as they are.
      await writeSpoolFile(sentFile, `${[...sent].slice(-20_000).join('\n')}\n`);
    }
  }

  async #run(): Promise<void> {
    const { log, metrics } = this.#o;
    const signal = this.#ac.signal;
    while (!signal.aborted) {
      let wait = this.#o.idleMs ?? 5000;
      try {
        await this.runOnce();
        this.#failures = 0;
      } catch (e) {
        if (signal.aborted) break;
        this.#failures++;
        const ce = e instanceof ControllerError ? e : undefined;
        // Not a ControllerError: the spool itself failed (a full or read-only disk), not the network.
        metrics?.shipperFailures.inc({ reason: ce === undefined ? 'spool' : ce.status === undefined ? 'network' : String(ce.status) });
        const base = this.#o.backoffMs ?? 1000;
        const max = this.#o.maxBackoffMs ?? 300_000;
        const exp = Math.min(max, base * 2 ** Math.min(this.#failures - 1, 20));
        // Full jitter in the upper half: many nodes coming back do not retry in step.
        wait = Math.max(ce?.retryAfterMs ?? 0, exp / 2 + (this.#o.random ?? Math.random)() * (exp / 2));
        log({ level: this.#failures === 1 ? 'warn' : 'debug', msg: 'shipping to the controller failed; retrying', error: String((e as Error).message), failures: this.#failures, retryInMs: Math.round(wait) });
      }
      await new Promise<void>((r) => {
        const done = () => r();
        this.#wake = done;
        this.#clock.sleep(wait, signal).then(done, done);
      });
      this.#wake = undefined;
    }
  }
}

/** Why `ack` does not acknowledge exactly this manifest and its artifacts (undefined when it does). */
export function ackProblem(ack: ReportAck | undefined, m: ReportManifest, manifestSha256: string): string | undefined {
  if (ack === undefined || typeof ack !== 'object') return 'no acknowledgement';
  if (ack.id !== m.id) return `id ${JSON.stringify(ack.id)}, not ${m.id}`;
  if (ack.stored !== true) return 'not stored';
  if (ack.manifestSha256 !== manifestSha256) return 'the manifest hash differs';
  const want = new Map(m.steps.flatMap((s) => s.artifacts.map((a) => [a.sha256, a.bytes] as const)));
  const got = new Map((Array.isArray(ack.artifacts) ? ack.artifacts : []).map((a) => [a.sha256, a.bytes] as const));
  if (got.size !== want.size) return `${got.size} artifacts acknowledged, ${want.size} sent`;
  for (const [h, n] of want) if (got.get(h) !== n) return `artifact ${h} not acknowledged with ${n} bytes`;
  return undefined;
}
