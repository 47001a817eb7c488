import { open, stat } from 'node:fs/promises';
import { MARK_PATTERN } from '../../protocol/mark.js';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { compileRegex, errnoCode, errorText, failure, success, unknown } from './common.js';

/**
 * `console-passive`: the agent's mark lines (`eve-diag mark seq=N ...`, protocol/mark.ts) in the
 * console logfile QEMU writes (chardev `logfile=`), read without touching the console socket (DESIGN
 * fact 8: the socket serves one client; the logfile gets everything with or without one).
 *
 * Each run reads only what was appended since the previous run (bounded by `maxReadBytes`: a flood
 * skips to the newest bytes), tracking the file offset; a file that shrank (truncated) or whose inode
 * changed (rotated) is read again from its start. A line split across runs is carried (bounded).
 *
 * A mark is fresh when this probe saw it appear within `maxAgeMs` (host time, so the resolution is
 * the probe period). The first run is a baseline: the marks already in the file have no known age,
 * so it is `unknown`, unless the file was not written for longer than `maxAgeMs` (then no mark can
 * be fresh: failure). The probe also notices a `Kernel panic - not syncing` line and keeps it in the
 * evidence (`panic`) until a later mark shows the guest is up again: eden's panic test looks for the
 * same line in the app logs.
 */

export interface ConsolePassiveParams {
  /** Regex of a mark line; group 1 (if any) is the sequence number. Default: the agent's mark. */
  pattern?: string;
  /** How old the newest mark may be. Default: the scenario period. */
  maxAgeMs?: number;
  /** Most bytes read in one run. Default 1 MiB. */
  maxReadBytes?: number;
  /** Regex of a kernel panic line. Default `Kernel panic - not syncing`. */
  panicPattern?: string;
}

/** The agent's mark line (protocol/mark.ts); group 1 is its seq. */
export const DEFAULT_MARK_PATTERN = MARK_PATTERN;
export const DEFAULT_PANIC_PATTERN = 'Kernel panic - not syncing';
const MAX_CARRY = 4096;
const MAX_LINE_EVIDENCE = 300;

export interface ConsolePassiveContext {
  /** Scenario period: the default `maxAgeMs`. */
  periodMs: number;
  /** Monotonic ms. */
  now?: () => number;
  /** Wall clock ms (compared with the file's mtime). */
  wallNow?: () => number;
}

interface FileState {
  path: string;
  ino: number;
  dev: number;
  offset: number;
  carry: string;
  /** When monitoring of this file began (host monotonic). */
  since: number;
  lastSeq?: number;
  /** Host monotonic ms of the run that first saw the newest mark; undefined for baseline marks. */
  lastMarkAt?: number;
  lastMarkLine?: string;
  panic?: { line: string; seenAt: number };
}

export class ConsolePassiveProbe implements Probe {
  readonly kind = 'console-passive';
  readonly #mark: RegExp;
  readonly #panic: RegExp;
  readonly #maxAgeMs: number;
  readonly #maxRead: number;
  readonly #now: () => number;
  readonly #wallNow: () => number;
  #state: FileState | undefined;

  constructor(params: ConsolePassiveParams, ctx: ConsolePassiveContext) {
    this.#mark = compileRegex('pattern', params.pattern ?? DEFAULT_MARK_PATTERN);
    this.#panic = compileRegex('panicPattern', params.panicPattern ?? DEFAULT_PANIC_PATTERN);
    this.#maxAgeMs = params.maxAgeMs ?? ctx.periodMs;
    this.#maxRead = params.maxReadBytes ?? 1024 * 1024;
    this.#now = ctx.now ?? (() => performance.now());
    this.#wallNow = ctx.wallNow ?? (() => Date.now());
    if (!(this.#maxAgeMs > 0)) throw new RangeError(`maxAgeMs: a positive number (got ${this.#maxAgeMs})`);
    if (!Number.isSafeInteger(this.#maxRead) || this.#maxRead < 1024) throw new RangeError(`maxReadBytes: an integer >= 1024 (got ${this.#maxRead})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    const path = target.consoleLog;
    if (path === undefined) return unknown('no console logfile configured');
    if (opts.signal.aborted) return unknown('aborted');
    const now = this.#now();
    let st;
    try {
      st = await stat(path);
    } catch (e) {
      const code = errnoCode(e);
      return unknown(`console log ${path}: ${errorText(e)}`, { consoleLog: path, ...(code ? { errno: code } : {}) });
    }
    let s = this.#state;
    let reset: 'new' | 'rotated' | 'truncated' | undefined;
    if (s === undefined || s.path !== path) {
      s = { path, ino: st.ino, dev: st.dev, offset: 0, carry: '', since: now };
      reset = 'new';
    } else if (s.ino !== st.ino || s.dev !== st.dev) {
      s = { ...s, ino: st.ino, dev: st.dev, offset: 0, carry: '' };
      reset = 'rotated';
    } else if (st.size < s.offset) {
      s = { ...s, offset: 0, carry: '' };
      reset = 'truncated';
    }
    const baseline = reset === 'new';
    let start = s.offset;
    let skipped = 0;
    if (st.size - start > this.#maxRead) {
      skipped = st.size - this.#maxRead - start;
      start = st.size - this.#maxRead;
      s.carry = '';
    }
    let chunk: string;
    try {
      chunk = await readRange(path, start, st.size - start);
    } catch (e) {
      return unknown(`console log ${path}: ${errorText(e)}`, { consoleLog: path });
    }
    // Up to the last newline; the rest waits for the next run. Skipped bytes cut a line: drop its head.
    let text = s.carry + chunk;
    if (skipped > 0) text = text.slice(text.indexOf('\n') + 1);
    const cut = text.lastIndexOf('\n') + 1;
    s.carry = text.slice(cut).slice(-MAX_CARRY);
    s.offset = start + Buffer.byteLength(chunk, 'latin1');

    let newMarks = 0;
    let seqWentBack = false;
    for (const raw of text.slice(0, cut).split('\n')) {
      const line = raw.replace(/\r$/, '');
      const m = this.#mark.exec(line);
      if (m !== null) {
        const seq = m[1] !== undefined && /^\d+$/.test(m[1]) ? Number(m[1]) : undefined;
        if (seq !== undefined && s.lastSeq !== undefined && seq < s.lastSeq) seqWentBack = true;
        if (seq !== undefined) s.lastSeq = seq;
        s.lastMarkLine = line.slice(0, MAX_LINE_EVIDENCE);
        newMarks++;
        if (!baseline) s.lastMarkAt = now;
        // A mark after a panic: the guest runs again (rebooted).
        s.panic = undefined;
        continue;
      }
      if (this.#panic.test(line)) s.panic = { line: line.slice(0, MAX_LINE_EVIDENCE), seenAt: now };
    }
    this.#state = s;

    const ageMs = s.lastMarkAt !== undefined ? now - s.lastMarkAt : undefined;
    const evidence: Record<string, unknown> = {
      consoleLog: path,
      newMarks,
      offset: s.offset,
      size: st.size,
      ...(s.lastSeq !== undefined ? { lastSeq: s.lastSeq } : {}),
      ...(ageMs !== undefined ? { ageMs: Math.round(ageMs) } : {}),
      ...(s.lastMarkLine !== undefined ? { lastMark: s.lastMarkLine } : {}),
      ...(s.panic !== undefined ? { panic: { line: s.panic.line, ageMs: Math.round(now - s.panic.seenAt) } } : {}),
      ...(skipped > 0 ? { skippedBytes: skipped } : {}),
      ...(reset !== undefined && reset !== 'new' ? { reset } : {}),
      ...(seqWentBack ? { seqRestarted: true } : {}),
      maxAgeMs: this.#maxAgeMs,
    };
    const seqText = s.lastSeq !== undefined ? `seq=${s.lastSeq}` : 'a mark';
    const writtenAgoMs = this.#wallNow() - st.mtimeMs;
    if (baseline) {
      if (writtenAgoMs > this.#maxAgeMs) {
        return failure(`console log not written for ${fmt(writtenAgoMs)} (max mark age ${fmt(this.#maxAgeMs)})`, { ...evidence, writtenAgoMs: Math.round(writtenAgoMs) });
      }
      return unknown(`baseline: ${newMarks > 0 ? `last ${seqText} already in the log` : 'no mark in the log yet'}`, evidence);
    }
    if (newMarks > 0) return success(`${newMarks} new mark(s), last ${seqText}`, evidence);
    if (ageMs !== undefined) {
      return ageMs <= this.#maxAgeMs
        ? success(`last ${seqText} seen ${fmt(ageMs)} ago`, evidence)
        : failure(`no mark for ${fmt(ageMs)} (last ${seqText}; max ${fmt(this.#maxAgeMs)})`, evidence);
    }
    const watched = now - s.since;
    return watched > this.#maxAgeMs
      ? failure(`no new mark in ${fmt(watched)} of watching (max ${fmt(this.#maxAgeMs)})`, evidence)
      : unknown(`no new mark yet (${fmt(watched)} of watching)`, evidence);
  }
}

async function readRange(path: string, start: number, length: number): Promise<string> {
  if (length <= 0) return '';
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    // latin1: one character per byte, so the offset arithmetic stays in bytes. Marks are ASCII.
    return buf.subarray(0, got).toString('latin1');
  } finally {
    await fh.close();
  }
}

function fmt(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(0)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
