import { opendir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { LineSplitter, DEFAULT_MAX_LINE_BYTES } from '../../host-reader/console/line-splitter.js';
import { parseLogEntry } from '../../host-reader/console/log-entry.js';
import { readLogfile, type LogRead } from '../../host-reader/console/logfile-reader.js';
import { sanitizeLine } from '../../host-reader/console/sanitize.js';
import { MARK_PATTERN } from '../../protocol/mark.js';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { compileRegex, errnoCode, errorText, failure, success, unknown } from './common.js';

/**
 * `log-marks`: monitoring from the app's own log stream. Marks (the agent's `eve-diag mark seq=N ...`
 * line, which the Node and the POSIX-sh agent both write, or any line matching `pattern`: a cron job
 * running `logger`, an app's own heartbeat line) must keep arriving: a mark seen within
 * `withinPeriods` scenario periods is success, marks that stop are failure. The kernel's own words
 * for trouble in the same stream (panic, oops, hung task, soft/hard lockup, RCU stall, OOM kill)
 * become evidence (`kernelEvents`); a panic line is failure at once, until a later mark shows the
 * guest runs again.
 *
 * Sources (`source`):
 *   console      the console logfile QEMU writes (`AppTarget.consoleLog`, or `path`)
 *   log-entries  a file of EVE LogEntry JSON lines (`path`; a `*` in its file name takes the newest
 *                matching file): newlogd's /persist/newlog/collect/app.<uuid>.log*, where an EVE app's
 *                console goes, or a capture of `eden pod logs --format=json`
 *
 * Each run reads what was appended since the previous one, at most `maxReadBytes` (a flood skips to
 * the newest bytes, counted in `skippedBytes`); a file that shrank or was replaced, or a glob whose
 * newest file changed (newlogd rotates at ~550 kB), is read again from its start. Lines are bounded
 * (`maxLineBytes`; longer ones are cut, counted in `cutLines`), invalid JSON entries are skipped and
 * counted (`invalidLines`). A file that does not exist (yet) is `unknown`; once it appears its whole
 * content is new. A file replaced under its path (renamed away, a new one made) is `unknown` until
 * something is written to the new one: QEMU keeps writing the renamed file through its descriptor.
 *
 * Timing: a mark is fresh when this probe saw it appear within `withinPeriods` × period (host time;
 * the resolution is the probe's period). The first run that finds the file is a baseline: the marks
 * already in it have no known age (an entry's own timestamp is guest-controlled: not trusted), so it
 * is `unknown` unless the file was not written for longer than the bound (then no mark can be fresh:
 * failure). When no mark was ever seen, the probe fails once it has watched for `graceMs` (default:
 * the same bound) with none: marks that never start are as bad as marks that stop.
 */

export type LogMarksSource = 'console' | 'log-entries';

export interface LogMarksParams {
  /** Where the log stream comes from. Default `console`. */
  source?: LogMarksSource;
  /** The file (log-entries: required; a `*`/`?` in the file name: the newest match). Console: default `consoleLog`. */
  path?: string;
  /** Regex of a mark line; group 1 (if any, all digits) is its sequence number. Default: the agent's mark. */
  pattern?: string;
  /** log-entries: only entries whose `source` matches this regex count (others are skipped and counted). */
  sourcePattern?: string;
  /** A mark must have arrived within this many scenario periods. Default 2. */
  withinPeriods?: number;
  /** With no mark ever seen, fail after watching this long. Default `withinPeriods` × period. */
  graceMs?: number;
  /** Most bytes read in one run. Default 1 MiB. */
  maxReadBytes?: number;
  /** Longest line kept (longer ones are cut). Default 64 KiB. */
  maxLineBytes?: number;
}

export interface LogMarksContext {
  /** Scenario period. */
  periodMs: number;
  /** Monotonic ms. */
  now?: () => number;
  /** Wall clock ms (compared with the file's mtime). */
  wallNow?: () => number;
}

export type KernelEventKind = 'panic' | 'oops' | 'hung-task' | 'soft-lockup' | 'hard-lockup' | 'rcu-stall' | 'oom';

export interface KernelEvent {
  kind: KernelEventKind;
  /** The line, sanitized and cut to 300 characters. */
  line: string;
  /** How long ago this probe saw it. */
  ageMs: number;
}

export const DEFAULT_WITHIN_PERIODS = 2;
export const DEFAULT_LOG_MAX_READ_BYTES = 1024 * 1024;
/** Events kept in the evidence (the newest), and how long. */
export const MAX_KERNEL_EVENTS = 16;
export const KERNEL_EVENT_MAX_AGE_MS = 600_000;
const MAX_LINE_EVIDENCE = 300;
/** Lines of one entry's content looked at (a hostile entry may hold many `\n`). */
const MAX_CONTENT_LINES = 64;
/** Directory entries looked at, and files stat'ed, for a glob path. */
const MAX_DIR_ENTRIES = 10_000;
const MAX_GLOB_STATS = 256;

/**
 * The kernel's report lines, first match wins (the same families as the controller's kernel-log
 * analyzer, which the monitor may not import: these only spot the line, the analyzer explains it).
 */
const KERNEL_PATTERNS: readonly [KernelEventKind, RegExp][] = [
  // Not the closing `---[ end Kernel panic - not syncing: ... ]---` line: one panic, one event.
  ['panic', /^(?!.*---\[ end )(?:.*\s)?Kernel panic - not syncing/],
  ['soft-lockup', /BUG: soft lockup - CPU#?\d+ stuck for/],
  ['hard-lockup', /Watchdog detected hard LOCKUP on cpu/],
  ['hung-task', /INFO: task .{1,64}:\d+ blocked for more than \d+ seconds/],
  ['rcu-stall', /rcu: INFO: rcu_\w+ (?:self-)?detected stalls?/],
  ['oom', /[Oo]ut of memory: Kill(?:ed)? process/],
  ['oops', /(?:^|\s)(?:BUG: |Oops: |general protection fault|kernel BUG at |invalid opcode: \d+ \[#\d+\])/],
];

/** The kind of kernel report `line` is, if it is one. */
export function kernelEventKind(line: string): KernelEventKind | undefined {
  for (const [kind, re] of KERNEL_PATTERNS) if (re.test(line)) return kind;
  return undefined;
}

interface StreamState {
  path: string;
  identity: string;
  offset: number;
}

export class LogMarksProbe implements Probe {
  readonly kind = 'log-marks';
  readonly #source: LogMarksSource;
  readonly #path: string | undefined;
  readonly #mark: RegExp;
  readonly #sourceRe: RegExp | undefined;
  readonly #maxAgeMs: number;
  readonly #graceMs: number;
  readonly #maxRead: number;
  readonly #lines: LineSplitter;
  readonly #now: () => number;
  readonly #wallNow: () => number;
  #stream: StreamState | undefined;
  /** Host monotonic ms of the first run. */
  #since: number | undefined;
  /** A run found no file: the first file found later is new, not a baseline. */
  #sawMissing = false;
  #lastSeq: number | undefined;
  #lastMarkAt: number | undefined;
  #lastMarkLine: string | undefined;
  #lastMarkTimestamp: number | undefined;
  #panic: { line: string; seenAt: number } | undefined;
  #events: { kind: KernelEventKind; line: string; seenAt: number }[] = [];
  readonly #eventCounts: Partial<Record<KernelEventKind, number>> = {};
  #invalidLines = 0;
  #otherSourceLines = 0;
  #skippedBytes = 0;
  #resets = 0;
  /**
   * When the file at the path was replaced (rotated) and nothing has been written to the new one since:
   * a writer that keeps its descriptor (QEMU's chardev logfile) still writes the old file, so marks no
   * longer showing up here say nothing of the guest.
   */
  #replacedAt: number | undefined;

  constructor(params: LogMarksParams, ctx: LogMarksContext) {
    this.#source = params.source ?? 'console';
    if (this.#source !== 'console' && this.#source !== 'log-entries') throw new RangeError(`source: console or log-entries (got ${JSON.stringify(this.#source)})`);
    this.#path = params.path;
    if (this.#source === 'log-entries' && (this.#path === undefined || this.#path === '')) throw new RangeError('path: required with source log-entries');
    if (this.#path !== undefined && /[*?]/.test(dirname(this.#path))) throw new RangeError(`path: a glob only in the file name (got ${JSON.stringify(this.#path)})`);
    this.#mark = compileRegex('pattern', params.pattern ?? MARK_PATTERN);
    if (params.sourcePattern !== undefined && this.#source !== 'log-entries') throw new RangeError('sourcePattern: only with source log-entries');
    this.#sourceRe = params.sourcePattern !== undefined ? compileRegex('sourcePattern', params.sourcePattern) : undefined;
    const within = params.withinPeriods ?? DEFAULT_WITHIN_PERIODS;
    if (!(within > 0) || !Number.isFinite(within)) throw new RangeError(`withinPeriods: a positive number (got ${String(within)})`);
    if (!(ctx.periodMs > 0)) throw new RangeError(`periodMs: a positive number (got ${String(ctx.periodMs)})`);
    this.#maxAgeMs = within * ctx.periodMs;
    this.#graceMs = params.graceMs ?? this.#maxAgeMs;
    if (!(this.#graceMs >= 0) || !Number.isFinite(this.#graceMs)) throw new RangeError(`graceMs: a number >= 0 (got ${String(this.#graceMs)})`);
    this.#maxRead = params.maxReadBytes ?? DEFAULT_LOG_MAX_READ_BYTES;
    if (!Number.isSafeInteger(this.#maxRead) || this.#maxRead < 1024) throw new RangeError(`maxReadBytes: an integer >= 1024 (got ${String(this.#maxRead)})`);
    const maxLine = params.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    if (!Number.isSafeInteger(maxLine) || maxLine < 256 || maxLine > this.#maxRead) {
      throw new RangeError(`maxLineBytes: an integer from 256 to maxReadBytes (${this.#maxRead}) (got ${String(maxLine)})`);
    }
    this.#lines = new LineSplitter(maxLine);
    this.#now = ctx.now ?? (() => performance.now());
    this.#wallNow = ctx.wallNow ?? (() => Date.now());
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    if (opts.signal.aborted) return unknown('aborted');
    const now = this.#now();
    const first = this.#since === undefined;
    this.#since ??= now;
    const configured = this.#source === 'console' ? (this.#path ?? target.consoleLog) : this.#path;
    if (configured === undefined) return unknown('no console logfile configured', { source: this.#source });

    const base = { source: this.#source, path: configured };
    let file: string | undefined;
    try {
      file = /[*?]/.test(basename(configured)) ? await newestMatch(configured) : configured;
    } catch (e) {
      return this.#missing(e, base);
    }
    if (file === undefined) return this.#missing(Object.assign(new Error(`no file matches ${configured}`), { code: 'ENOENT' }), base);

    const prev = this.#stream;
    const baseline = first || (prev === undefined && !this.#sawMissing);
    let read: LogRead;
    try {
      read = await readLogfile(file, {
        from: prev !== undefined && prev.path === file ? prev.offset : 0,
        maxBytes: this.#maxRead,
        keep: 'tail',
        ...(prev !== undefined && prev.path === file ? { identity: prev.identity } : {}),
      });
    } catch (e) {
      return this.#missing((e as Error).cause ?? e, base);
    }
    let reset: 'rotated' | 'truncated' | 'new-file' | undefined;
    if (prev !== undefined && prev.path !== file) reset = 'new-file';
    else if (prev !== undefined && read.reset) reset = read.identity !== prev.identity ? 'rotated' : 'truncated';
    if (reset !== undefined) {
      this.#resets += 1;
      this.#lines.reset();
      if (reset !== 'truncated') this.#replacedAt = now;
    }
    if (read.data.length > 0) this.#replacedAt = undefined;
    if (read.skipped > 0) {
      this.#skippedBytes += read.skipped;
      this.#lines.resync();
    }
    this.#stream = { path: file, identity: read.identity, offset: read.end };

    let newMarks = 0;
    let seqWentBack = false;
    let newEvents = 0;
    const onLine = (line: string, timestampMs?: number) => {
      const m = this.#mark.exec(line);
      if (m !== null) {
        const seq = m[1] !== undefined && /^\d{1,15}$/.test(m[1]) ? Number(m[1]) : undefined;
        if (seq !== undefined && this.#lastSeq !== undefined && seq < this.#lastSeq) seqWentBack = true;
        if (seq !== undefined) this.#lastSeq = seq;
        this.#lastMarkLine = sanitizeLine(line, MAX_LINE_EVIDENCE);
        this.#lastMarkTimestamp = timestampMs;
        newMarks++;
        if (!baseline) this.#lastMarkAt = now;
        this.#panic = undefined; // a mark after a panic: the guest runs again (rebooted)
        return;
      }
      const kind = kernelEventKind(line);
      if (kind === undefined) return;
      const text = sanitizeLine(line, MAX_LINE_EVIDENCE);
      newEvents++;
      this.#eventCounts[kind] = (this.#eventCounts[kind] ?? 0) + 1;
      this.#events.push({ kind, line: text, seenAt: now });
      if (this.#events.length > MAX_KERNEL_EVENTS) this.#events.splice(0, this.#events.length - MAX_KERNEL_EVENTS);
      if (kind === 'panic') this.#panic = { line: text, seenAt: now };
    };
    for (const { text } of this.#lines.push(read.data)) {
      if (this.#source === 'console') {
        onLine(text);
        continue;
      }
      if (text.trim() === '') continue;
      const p = parseLogEntry(text, this.#lines.maxLineBytes);
      if (!p.ok) {
        this.#invalidLines++;
        continue;
      }
      if (this.#sourceRe !== undefined && !this.#sourceRe.test(p.entry.source ?? '')) {
        this.#otherSourceLines++;
        continue;
      }
      const parts = p.entry.content.split('\n', MAX_CONTENT_LINES);
      for (const part of parts) onLine(part.replace(/\r+$/, ''), p.entry.timestampMs);
    }
    this.#events = this.#events.filter((e) => now - e.seenAt <= KERNEL_EVENT_MAX_AGE_MS);

    const ageMs = this.#lastMarkAt !== undefined ? now - this.#lastMarkAt : undefined;
    const events: KernelEvent[] = this.#events.map((e) => ({ kind: e.kind, line: e.line, ageMs: Math.round(now - e.seenAt) }));
    const evidence: Record<string, unknown> = {
      ...base,
      ...(file !== configured ? { file } : {}),
      newMarks,
      offset: read.end,
      size: read.size,
      ...(this.#lastSeq !== undefined ? { lastSeq: this.#lastSeq } : {}),
      ...(ageMs !== undefined ? { ageMs: Math.round(ageMs) } : {}),
      ...(this.#lastMarkLine !== undefined ? { lastMark: this.#lastMarkLine } : {}),
      ...(this.#lastMarkTimestamp !== undefined ? { lastMarkLogged: new Date(this.#lastMarkTimestamp).toISOString() } : {}),
      ...(this.#panic !== undefined ? { panic: { line: this.#panic.line, ageMs: Math.round(now - this.#panic.seenAt) } } : {}),
      ...(events.length > 0 ? { kernelEvents: events, kernelEventCounts: { ...this.#eventCounts } } : {}),
      ...(newEvents > 0 ? { newKernelEvents: newEvents } : {}),
      ...(this.#invalidLines > 0 ? { invalidLines: this.#invalidLines } : {}),
      ...(this.#otherSourceLines > 0 ? { otherSourceLines: this.#otherSourceLines } : {}),
      ...(this.#lines.cutLines > 0 ? { cutLines: this.#lines.cutLines } : {}),
      ...(this.#skippedBytes > 0 ? { skippedBytes: this.#skippedBytes } : {}),
      ...(reset !== undefined ? { reset } : {}),
      ...(this.#resets > 0 ? { resets: this.#resets } : {}),
      ...(seqWentBack ? { seqRestarted: true } : {}),
      maxAgeMs: this.#maxAgeMs,
    };
    const seqText = this.#lastSeq !== undefined ? `seq=${this.#lastSeq}` : 'a mark';

    if (this.#panic !== undefined) return failure(`kernel panic in the log: ${this.#panic.line}`, evidence);
    if (baseline) {
      const writtenAgoMs = this.#wallNow() - (await mtimeMs(file));
      if (writtenAgoMs > this.#maxAgeMs) {
        return failure(`log not written for ${fmt(writtenAgoMs)} (marks due within ${fmt(this.#maxAgeMs)})`, { ...evidence, writtenAgoMs: Math.round(writtenAgoMs) });
      }
      return unknown(`baseline: ${newMarks > 0 ? `last ${seqText} already in the log` : 'no mark in the log yet'}`, evidence);
    }
    if (newMarks > 0) return success(`${newMarks} new mark(s), last ${seqText}`, evidence);
    if (this.#replacedAt !== undefined) {
      return unknown(`the log was replaced ${fmt(now - this.#replacedAt)} ago and nothing has been written to the new file since (its writer may still write the old one: QEMU keeps its descriptor)`, { ...evidence, replacedAgoMs: Math.round(now - this.#replacedAt) });
    }
    if (ageMs !== undefined) {
      return ageMs <= this.#maxAgeMs
        ? success(`last ${seqText} seen ${fmt(ageMs)} ago`, evidence)
        : failure(`no mark for ${fmt(ageMs)} (last ${seqText}; due within ${fmt(this.#maxAgeMs)})`, evidence);
    }
    const watched = now - this.#since;
    return watched > this.#graceMs
      ? failure(`no mark in ${fmt(watched)} of watching (grace ${fmt(this.#graceMs)})`, evidence)
      : unknown(`no mark yet (${fmt(watched)} of watching)`, evidence);
  }

  /** The file is missing or unreadable: unknown (a path may be wrong; newlogd creates the file with the first entry). */
  #missing(e: unknown, base: Record<string, unknown>): ProbeResult {
    const code = errnoCode(e);
    if (this.#stream === undefined && code === 'ENOENT') this.#sawMissing = true;
    return unknown(`${this.#source === 'console' ? 'console log' : 'log entries'} ${String(base.path)}: ${errorText(e)}`, { ...base, ...(code !== undefined ? { errno: code } : {}) });
  }
}

/** The newest (mtime, then name) regular file matching a `*`/`?` glob in the file name; `.gz` files are not live. */
async function newestMatch(glob: string): Promise<string | undefined> {
  const dir = dirname(glob);
  const re = new RegExp(`^${basename(glob).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  const names: string[] = [];
  let seen = 0;
  const d = await opendir(dir);
  try {
    for await (const ent of d) {
      if (++seen > MAX_DIR_ENTRIES) break;
      if (re.test(ent.name) && !ent.name.endsWith('.gz') && (ent.isFile() || ent.isSymbolicLink())) names.push(ent.name);
    }
  } finally {
    await d.close().catch(() => undefined);
  }
  let best: { name: string; mtime: number } | undefined;
  for (const name of names.sort().slice(-MAX_GLOB_STATS)) {
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (st === undefined || !st.isFile()) continue;
    if (best === undefined || st.mtimeMs > best.mtime || (st.mtimeMs === best.mtime && name > best.name)) best = { name, mtime: st.mtimeMs };
  }
  return best === undefined ? undefined : join(dir, best.name);
}

async function mtimeMs(path: string): Promise<number> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return Number.NEGATIVE_INFINITY;
  }
}

function fmt(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(0)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
