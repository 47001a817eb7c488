import { chmod, lstat, mkdir, readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { appendSpoolFile, cleanSpool, isExternalArtifact, listSpool, readSpoolFile, SpoolFileTooLarge, writeBundle, writeSpoolFile, type ReportInput, type WriteBundleOptions, type WrittenBundle } from './bundle.js';
import { isSafeName } from '../../protocol/report-manifest.js';

/**
 * The node's spool of report bundles (bundle.ts writes one atomically), with a total quota:
 *
 * - a bundle is *undelivered* until the shipper marks it delivered (`<id>/.delivered`, the
 *   controller's acknowledgement, written atomically);
 * - before a new bundle is written, room is made for it: delivered bundles go first, oldest first;
 *   if that is not enough, the oldest undelivered bundles go, and each of them is logged, counted in
 *   a metric and recorded in `<spool>/.dropped.jsonl` (so the shipper can tell the controller which
 *   reports it will never get). The newest report is kept: it describes the VM as it is now;
 * - `.tmp-*` directories a crashed writer left are removed at start and on every `maintain()`;
 * - external files (a memory dump, bundle.ts ExternalFile) count against the quota like any file of a
 *   bundle, but they never push out an undelivered report: they get the room that delivered (or
 *   refused) bundles free, within `maxExternalBytes`, or they are left out (deleted, listed as omitted).
 *
 * Nothing here follows a symlink placed in the spool: sizes come from lstat, only real directories
 * with a safe name count as bundles, every file is opened with O_NOFOLLOW (bundle.ts readSpoolFile,
 * writeSpoolFile, appendSpoolFile). A symlink in place of a bookkeeping file is removed; an undelivered
 * bundle holding anything but regular files (a symlink in place of an artifact or of its manifest)
 * is marked rejected, so the shipper never reads it. The spool directory is kept 0700, its files 0600.
 */

export const SPOOL_QUOTA_DEFAULT = 512 * 1024 * 1024;
export const DELIVERED_MARK = '.delivered';
/** The controller refused the bundle for good (invalid, too large): it will never be delivered. */
export const REJECTED_MARK = '.rejected';
export const DROPPED_LEDGER = '.dropped.jsonl';
/** The shipper's record of the dropped reports it announced. */
export const DROPPED_SENT = '.dropped.sent';
/** Files of the spool's own (not bundles): a symlink in their place is removed. */
const BOOKKEEPING_FILES = [DROPPED_LEDGER, DROPPED_SENT];
/** The ledger is cut to its newer half when it grows beyond this. */
const DROPPED_LEDGER_MAX_BYTES = 1024 * 1024;
/** What is read of the ledger at most (it is cut at DROPPED_LEDGER_MAX_BYTES). */
const DROPPED_LEDGER_READ_MAX_BYTES = 4 * DROPPED_LEDGER_MAX_BYTES;

export interface SpoolEntryInfo {
  id: string;
  dir: string;
  bytes: number;
  delivered: boolean;
  /** Refused by the controller for good (and announced to it as not delivered). */
  rejected: boolean;
}

export interface DroppedReport {
  id: string;
  bytes: number;
  droppedAt: string;
  reason: string;
}

export interface SpoolEvents {
  /** A bundle removed to make room: `delivered` false means a report the controller never got. */
  evicted?(e: { id: string; bytes: number; delivered: boolean }): void;
  /** A temporary directory of a crashed writer removed. */
  cleaned?(n: number): void;
  /** Something that is not ours found in the spool (a symlink): removed, or its bundle rejected. */
  refused?(e: { path: string; why: string }): void;
}

export interface SpoolOptions {
  dir: string;
  /** Total bytes of all bundles. Default 512 MiB. */
  quotaBytes?: number;
  /** One bundle's cap (bundle.ts). Default 16 MiB. */
  maxBundleBytes?: number;
  /**
   * The external files of one bundle (memory dumps) together, at most. Default: what the quota leaves
   * beside one bundle (quotaBytes - maxBundleBytes).
   */
  maxExternalBytes?: number;
  /** Age at which a `.tmp-*` directory is a crashed writer's. Default 10 minutes. */
  tmpMaxAgeMs?: number;
  events?: SpoolEvents;
  /** Wall clock (tests). */
  now?: () => Date;
}

export class Spool {
  readonly dir: string;
  readonly quotaBytes: number;
  readonly maxBundleBytes: number;
  readonly maxExternalBytes: number;
  readonly #tmpMaxAgeMs: number;
  readonly #events: SpoolEvents;
  readonly #now: () => Date;
  /** Bundles are immutable once written: their size is measured once. */
  readonly #sizes = new Map<string, number>();

  constructor(o: SpoolOptions) {
    this.dir = o.dir;
    this.quotaBytes = o.quotaBytes ?? SPOOL_QUOTA_DEFAULT;
    this.maxBundleBytes = o.maxBundleBytes ?? 16 * 1024 * 1024;
    this.#tmpMaxAgeMs = o.tmpMaxAgeMs ?? 10 * 60 * 1000;
    this.#events = o.events ?? {};
    this.#now = o.now ?? (() => new Date());
    for (const [k, v] of Object.entries({ quotaBytes: this.quotaBytes, maxBundleBytes: this.maxBundleBytes })) {
      if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${k}: a positive integer (got ${v})`);
    }
    if (this.maxBundleBytes > this.quotaBytes) throw new RangeError(`maxBundleBytes (${this.maxBundleBytes}) must not exceed quotaBytes (${this.quotaBytes})`);
    this.maxExternalBytes = o.maxExternalBytes ?? this.quotaBytes - this.maxBundleBytes;
    if (!Number.isSafeInteger(this.maxExternalBytes) || this.maxExternalBytes < 0) {
      throw new RangeError(`maxExternalBytes: an integer >= 0 (got ${this.maxExternalBytes})`);
    }
  }

  /** Every complete bundle, oldest first, with its size and state. */
  async entries(): Promise<SpoolEntryInfo[]> {
    await this.#removeLinks();
    const out: SpoolEntryInfo[] = [];
    for (const e of await listSpool(this.dir)) {
      const st = await lstat(e.dir).catch(() => undefined);
      if (st === undefined || !st.isDirectory()) continue; // a link or a race with a removal
      let bytes = this.#sizes.get(e.id);
      if (bytes === undefined) {
        bytes = await dirBytes(e.dir);
        this.#sizes.set(e.id, bytes);
      }
      const delivered = await isFile(join(e.dir, DELIVERED_MARK));
      let rejected = await isFile(join(e.dir, REJECTED_MARK));
      // What is still to be sent is looked at each time: a link placed in it later is caught too.
      if (!delivered && !rejected) rejected = await this.#rejectIfForeign(e.id, e.dir);
      out.push({ id: e.id, dir: e.dir, bytes, delivered, rejected });
    }
    return out;
  }

  /**
   * A symlink in place of a bookkeeping file (the ledger, the shipper's `.dropped.sent`) is removed:
   * the next write makes a real file. Other links in the spool are left alone (and never followed).
   */
  async #removeLinks(): Promise<void> {
    for (const name of BOOKKEEPING_FILES) {
      const path = join(this.dir, name);
      const st = await lstat(path).catch(() => undefined);
      if (st === undefined || !st.isSymbolicLink()) continue;
      await unlink(path).catch(() => undefined);
      this.#events.refused?.({ path, why: 'a symlink in place of a bookkeeping file (removed, not followed)' });
    }
  }

  /** Marks bundle `id` rejected when it holds anything but regular files; returns whether it did. */
  async #rejectIfForeign(id: string, dir: string): Promise<boolean> {
    const names = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const foreign = names.find((n) => !n.isFile());
    if (foreign === undefined) return false;
    const what = foreign.isSymbolicLink() ? 'a symlink' : foreign.isDirectory() ? 'a directory' : 'not a regular file';
    const why = `${foreign.name} is ${what}`;
    if (foreign.isSymbolicLink()) await unlink(join(dir, foreign.name)).catch(() => undefined);
    await this.markRejected(id, `not sent, the bundle is damaged: ${why}`);
    this.#events.refused?.({ path: join(dir, foreign.name), why: `${why}: the bundle is not sent` });
    return true;
  }

  /** The spool directory exists and is 0700 (one made by an operator with another mode is narrowed). */
  async #ownDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const st = await lstat(this.dir);
    if (st.isDirectory() && (st.mode & 0o777) !== 0o700) await chmod(this.dir, 0o700);
  }

  async usage(): Promise<{ bytes: number; bundles: number; delivered: number; undelivered: number; undeliveredBytes: number }> {
    const all = await this.entries();
    const undelivered = all.filter((e) => !e.delivered && !e.rejected);
    return {
      bytes: all.reduce((n, e) => n + e.bytes, 0),
      bundles: all.length,
      delivered: all.length - undelivered.length,
      undelivered: undelivered.length,
      undeliveredBytes: undelivered.reduce((n, e) => n + e.bytes, 0),
    };
  }

  /** Removes crashed writers' temporaries and brings the spool within its quota. */
  async maintain(): Promise<void> {
    await this.#ownDir();
    const n = await cleanSpool(this.dir, this.#tmpMaxAgeMs);
    if (n > 0) this.#events.cleaned?.(n);
    await this.#makeRoom(0);
  }

  /** Makes room for a bundle of at most maxBundleBytes, then writes it. */
  async write(input: ReportInput, options: Omit<WriteBundleOptions, 'maxTotalBytes' | 'maxExternalBytes'> = {}): Promise<WrittenBundle> {
    await this.#ownDir();
    await this.#makeRoom(this.maxBundleBytes);
    let maxExternalBytes = 0;
    const wanted = await externalBytes(input);
    if (wanted > 0 && wanted <= this.maxExternalBytes) {
      // Delivered bundles may go for a dump; undelivered reports may not.
      await this.#makeRoom(this.maxBundleBytes + wanted, true);
      const used = (await this.entries()).reduce((n, e) => n + e.bytes, 0);
      maxExternalBytes = Math.max(0, Math.min(this.maxExternalBytes, this.quotaBytes - this.maxBundleBytes - used));
    }
    const b = await writeBundle(this.dir, input, { ...options, maxTotalBytes: this.maxBundleBytes, maxExternalBytes });
    // The quota may still be exceeded by what the new bundle really took (its directory entries).
    await this.#makeRoom(0);
    return b;
  }

  /** Records the controller's acknowledgement: the bundle may be evicted from now on. */
  markDelivered(id: string, ack: Record<string, unknown>): Promise<void> {
    return this.#mark(id, DELIVERED_MARK, { ...ack, deliveredAt: this.#now().toISOString() });
  }

  /** Records that the controller refused the bundle for good (it is evicted first, never sent again). */
  markRejected(id: string, reason: string): Promise<void> {
    return this.#mark(id, REJECTED_MARK, { reason: reason.slice(0, 2000), rejectedAt: this.#now().toISOString() });
  }

  async #mark(id: string, mark: string, content: Record<string, unknown>): Promise<void> {
    if (!isSafeName(id)) throw new RangeError(`bundle id ${JSON.stringify(id)} is not a safe name`);
    const dir = join(this.dir, id);
    const st = await lstat(dir);
    if (!st.isDirectory()) throw new Error(`${dir} is not a bundle directory`);
    await writeSpoolFile(join(dir, mark), `${JSON.stringify(content)}\n`);
  }

  async isDelivered(id: string): Promise<boolean> {
    return isSafeName(id) && isFile(join(this.dir, id, DELIVERED_MARK));
  }

  /** The reports removed before they were delivered (newest last), as recorded in the ledger. */
  async dropped(): Promise<DroppedReport[]> {
    await this.#removeLinks();
    const data = await readSpoolFile(join(this.dir, DROPPED_LEDGER), DROPPED_LEDGER_READ_MAX_BYTES).catch((e: unknown) => {
      if (e instanceof SpoolFileTooLarge) return undefined; // not ours: recordDropped keeps it near 1 MiB
      throw e;
    });
    const text = data?.toString('utf8') ?? '';
    const out: DroppedReport[] = [];
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const v = JSON.parse(line) as DroppedReport;
        if (typeof v.id === 'string' && isSafeName(v.id)) out.push(v);
      } catch {
        // a torn last line after a crash
      }
    }
    return out;
  }

  async #makeRoom(incoming: number, onlyDone = false): Promise<void> {
    const all = await this.entries();
    let used = all.reduce((n, e) => n + e.bytes, 0);
    const limit = this.quotaBytes - incoming;
    if (used <= limit) return;
    // Delivered (or refused for good) first, oldest first; then undelivered, oldest first (all is oldest first).
    const done = (e: SpoolEntryInfo) => e.delivered || e.rejected;
    const order = [...all.filter(done), ...(onlyDone ? [] : all.filter((e) => !done(e)))];
    for (const e of order) {
      if (used <= limit) break;
      await rm(e.dir, { recursive: true, force: true });
      this.#sizes.delete(e.id);
      used -= e.bytes;
      if (!done(e)) await this.recordDropped({ id: e.id, bytes: e.bytes, droppedAt: this.#now().toISOString(), reason: 'spool quota' });
      this.#events.evicted?.({ id: e.id, bytes: e.bytes, delivered: done(e) });
    }
  }

  /** Records a report that will never be delivered in the ledger (the shipper announces it). */
  async recordDropped(d: DroppedReport): Promise<void> {
    await this.#removeLinks();
    const file = join(this.dir, DROPPED_LEDGER);
    const size = await appendSpoolFile(file, `${JSON.stringify(d)}\n`);
    if (size > DROPPED_LEDGER_MAX_BYTES) {
      const lines = ((await readSpoolFile(file, DROPPED_LEDGER_READ_MAX_BYTES))?.toString('utf8') ?? '').split('\n').filter((l) => l !== '');
      await writeSpoolFile(file, `${lines.slice(Math.floor(lines.length / 2)).join('\n')}\n`);
    }
  }
}

/** What the external files of `input` take (files already gone count 0; bundle.ts reports them). */
async function externalBytes(input: ReportInput): Promise<number> {
  let n = 0;
  for (const step of Array.isArray(input?.steps) ? input.steps : []) {
    for (const a of Array.isArray(step?.artifacts) ? step.artifacts : []) {
      if (!isExternalArtifact(a)) continue;
      const st = await lstat(a.external.path).catch(() => undefined);
      if (st?.isFile()) n += st.size;
    }
  }
  return n;
}

async function isFile(path: string): Promise<boolean> {
  const st = await lstat(path).catch(() => undefined);
  return st !== undefined && st.isFile();
}

/** Bytes of the regular files directly in `dir` (bundles are flat), never following a link. */
async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await lstat(join(dir, name)).catch(() => undefined);
    if (st?.isFile()) n += st.size;
  }
  return n;
}
