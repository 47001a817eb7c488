import { stat } from 'node:fs/promises';
import { sanitizeLine } from '../../host-reader/console/sanitize.js';
import { GdbClient, GdbError, GdbReplyError, type GdbClientOptions } from '../../host-reader/gdb/client.js';
import { readStackWindow, walkStackWindow, type StackWindow } from '../../host-reader/gdb/stack.js';
import { cpl, decodeRegisters, interruptsOn, type X86Registers } from '../../host-reader/gdb/x86-64.js';
import type { QmpStatus } from '../../host-reader/qmp/client.js';
import { findKaslrOffset, type KaslrResult } from '../../host-reader/symbols/kaslr.js';
import { loadSystemMap, type SymbolTable } from '../../host-reader/symbols/system-map.js';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, jsonArtifact, textArtifact, type QmpConnector, type QmpLease } from './common.js';

/**
 * The vCPUs' kernel stacks through the VM's gdbstub (`qemu-args --gdb`), symbolized with the guest
 * kernel's System.map: for every vCPU (a gdbstub thread) its registers, RIP as `symbol+0xoff/0xsize`
 * and a stack walk (host-reader/gdb/stack.ts: frame pointers where there are, else a bounded scan
 * whose frames are `? ` guesses), so a hard lockup with interrupts off, where the guest prints
 * nothing, still says where each vCPU is.
 *
 * Attaching stops the whole VM; detaching (`D;1`) resumes it. The pause (connect to detach done) is
 * measured and reported; the work inside it is only reads: the System.map is parsed before, the
 * KASLR offset (host-reader/symbols/kaslr.ts) usually takes a few reads, remembered per VM and
 * confirmed next time by one. QEMU's detach resumes even a VM that was not running: with `target.qmp`
 * the run state is read before attaching (`query-status`) and, when the VM was not running, QMP `stop`
 * follows the detach at once, on the session held open across it (the VM runs for one QMP round trip:
 * the GdbClient has no way to close without detaching).
 *
 * Everything the stub answers is hostile: thread count, ids, register blocks and memory are
 * bounded and checked. No System.map (or one that does not match the running kernel): raw addresses,
 * and the summary says `unsymbolized`.
 */

export interface GdbStacksOptions {
  qmpConnector?: QmpConnector;
  clock?: Clock;
  /** Opens the gdbstub (tests: a fake on TCP). Default GdbClient.connect({ path }). */
  connectGdb?: (path: string, options: GdbClientOptions) => Promise<GdbClient>;
  /** Default loadSystemMap (cached per path, size and mtime). */
  loadSymbols?: (path: string) => Promise<SymbolTable>;
  /** vCPUs read at most. Default 64. */
  maxCpus?: number;
  /** Stack bytes read per vCPU. Default 16 KiB. */
  stackBytes?: number;
  /** Frames per vCPU, RIP included. Default 48. */
  maxFrames?: number;
}

/** The x86-64 kernel image's virtual range (KASLR moves it inside): the guess of "text" with no System.map. */
const KERNEL_IMAGE_START = 0xffffffff80000000n;
const KERNEL_IMAGE_END = 0xffffffffc0000000n;
const THREAD_ID = /^[0-9a-fA-Fp.-]{1,32}$/;

const hex = (v: bigint): string => v.toString(16).padStart(16, '0');

interface VcpuRead {
  index: number;
  thread: string;
  info?: string;
  regs?: X86Registers;
  window?: StackWindow;
  error?: string;
}

export interface GdbStacksReport {
  /** Connect to detach done, ms (the VM is stopped meanwhile). */
  pauseMs: number;
  /** Where the pause went (ms from connect): connected, vCPUs read, KASLR offset found, detached. */
  phasesMs?: Record<string, number>;
  symbols: { systemMap?: string; textSymbols?: number; error?: string; kaslr?: Omit<KaslrResult, 'offset' | 'bannerAddress'> & { offset: string; bannerAddress: string }; symbolized: boolean };
  runState?: { before?: string; after?: string; restored?: boolean; error?: string };
  vcpus: {
    index: number;
    thread: string;
    info?: string;
    error?: string;
    mode?: 'kernel' | 'user';
    interrupts?: 'on' | 'off';
    registers?: Record<string, string>;
    rip?: { addr: string; symbol?: string };
    stack?: { start: string; end: string; bytes: number; stoppedBy?: string; framePointerFrames: number; truncated: boolean };
    frames?: { addr: string; sp?: string; kind: string; symbol?: string }[];
  }[];
  error?: string;
  /** After a session that ended without detaching: what attaching again to detach did. */
  resume?: string;
}

export class GdbStacksCollector implements Collector {
  readonly kind = 'gdb-stacks';
  readonly #connectQmp: QmpConnector;
  readonly #clock: Clock;
  readonly #connectGdb: (path: string, options: GdbClientOptions) => Promise<GdbClient>;
  readonly #loadSymbols: ((path: string) => Promise<SymbolTable>) | undefined;
  readonly #maxCpus: number;
  readonly #stackBytes: number;
  readonly #maxFrames: number;
  readonly #tables = new Map<string, { key: string; table: SymbolTable }>();
  /** KASLR offsets found, per gdbstub socket and System.map: confirmed by one read next time. */
  readonly #offsets = new Map<string, bigint>();

  constructor(options: GdbStacksOptions = {}) {
    this.#connectQmp = options.qmpConnector ?? connectQmp;
    this.#clock = options.clock ?? realClock;
    this.#connectGdb = options.connectGdb ?? ((path, o) => GdbClient.connect({ path }, o));
    this.#loadSymbols = options.loadSymbols;
    this.#maxCpus = Math.max(1, Math.min(options.maxCpus ?? 64, 1024));
    this.#stackBytes = Math.max(0, Math.min(options.stackBytes ?? 16 * 1024, 64 * 1024));
    this.#maxFrames = Math.max(1, Math.min(options.maxFrames ?? 48, 512));
  }

  async #symbols(path: string): Promise<SymbolTable> {
    if (this.#loadSymbols !== undefined) return this.#loadSymbols(path);
    const st = await stat(path);
    const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
    const hit = this.#tables.get(path);
    if (hit !== undefined && hit.key === key) return hit.table;
    const table = await loadSystemMap(path);
    this.#tables.set(path, { key, table });
    return table;
  }

  async #reattachToResume(path: string): Promise<string> {
    let c: GdbClient | undefined;
    try {
      c = await this.#connectGdb(path, { timeoutMs: 1000, connectTimeoutMs: 1000, settleMs: 10, maxPacketBytes: 64 * 1024 });
      await c.detach();
      return 'the VM was resumed by attaching again and detaching';
    } catch (e) {
      return `could not attach again to resume the VM (it may stay stopped): ${describeError(e)}`;
    } finally {
      await c?.close();
    }
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.gdb === undefined) return failed('gdb-stacks: the app has no gdbstub socket (qemu-args --gdb)');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    const report: GdbStacksReport = { pauseMs: 0, symbols: { symbolized: false }, vcpus: [] };

    // The System.map first: parsing it must not lengthen the pause.
    let table: SymbolTable | undefined;
    if (target.systemMap !== undefined) {
      report.symbols.systemMap = target.systemMap;
      try {
        table = await this.#symbols(target.systemMap);
        report.symbols.textSymbols = table.stats.textSymbols;
      } catch (e) {
        report.symbols.error = describeError(e);
      }
    } else {
      report.symbols.error = 'no System.map for this app (systemMap)';
    }
    if (opts.signal.aborted) return failed('gdb-stacks: aborted');

    let lease: QmpLease | undefined;
    let before: QmpStatus | undefined;
    if (target.qmp !== undefined) {
      report.runState = {};
      try {
        lease = await this.#connectQmp(target.qmp, { timeoutMs: deadline.cap(3000), signal: opts.signal });
        before = await lease.qmp.queryStatus({ timeoutMs: deadline.cap(3000), signal: opts.signal });
        report.runState.before = sanitizeLine(before.status, 40);
      } catch (e) {
        report.runState.error = `query-status before attaching: ${describeError(e)}`;
      }
    }

    const reads: VcpuRead[] = [];
    let kaslr: KaslrResult | undefined;
    let client: GdbClient | undefined;
    // An abort closes the session; a request in flight still ends by its own timeout (at most 2 s).
    const onAbort = () => {
      client?.close().catch(() => undefined);
    };
    opts.signal.addEventListener('abort', onAbort, { once: true });
    const t0 = this.#clock.now();
    const phases: Record<string, number> = {};
    const phase = (name: string) => (phases[name] = Math.round((this.#clock.now() - t0) * 10) / 10);
    report.phasesMs = phases;
    let detached = false;
    let neverConnected = false;
    try {
      const requestMs = deadline.cap(2000);
      client = await this.#connectGdb(target.gdb, { timeoutMs: requestMs, connectTimeoutMs: requestMs, settleMs: 10, maxPacketBytes: 64 * 1024 });
      phase('connected');
      const gdb = client;
      const threads = await gdb.threads(this.#maxCpus);
      for (const [index, thread] of threads.entries()) {
        if (deadline.expired || opts.signal.aborted) {
          report.error = `stopped at vCPU ${index}: ${opts.signal.aborted ? 'aborted' : 'deadline'}`;
          break;
        }
        const r: VcpuRead = { index, thread: sanitizeLine(thread, 40) };
        reads.push(r);
        if (!THREAD_ID.test(thread)) {
          r.error = 'a thread id that is not one';
          continue;
        }
        try {
          await gdb.selectThread(thread);
          r.regs = decodeRegisters(await gdb.readRegisters());
          r.info = sanitizeLine(await gdb.threadInfo(thread), 80);
          if (cpl(r.regs) === 0) {
            const w = await readStackWindow(gdb, r.regs.rsp, { maxBytes: this.#stackBytes });
            if (w !== undefined) r.window = w;
          }
        } catch (e) {
          r.error = describeError(e);
        }
        if (gdb.closed) throw new GdbError(`the gdbstub connection ended at vCPU ${index}: ${r.error ?? r.window?.stoppedBy ?? 'closed'}`);
      }
      phase('vcpus');
      // Only a vCPU in kernel mode has anything to symbolize (user stacks are not walked), and its RIP
      // narrows the search to a few candidates: the blind scan costs 1 to 4 ms a candidate on QEMU
      // 7.2 TCG (measured: 434 reads in 400 ms on Debian's 6.1, 109 in 418 ms on 6.12), so it runs
      // only when the RIP is outside core kernel text (a module) and no offset is known.
      const kernelCpus = reads.filter((r) => r.regs !== undefined && cpl(r.regs) === 0);
      if (table !== undefined && kernelCpus.length === 0) report.symbols.error = 'no vCPU in kernel mode: nothing to symbolize';
      if (table !== undefined && kernelCpus.length > 0 && !deadline.expired) {
        // Through a vCPU in kernel mode (KPTI: user page tables hardly map the kernel).
        const last = reads.at(-1);
        const via = kernelCpus.at(-1);
        if (via !== undefined && via !== last) await gdb.selectThread(via.thread);
        const cacheKey = `${target.gdb}\n${target.systemMap ?? ''}`;
        const known = this.#offsets.get(cacheKey);
        try {
          kaslr = await findKaslrOffset(gdb, table, {
            hints: kernelCpus.map((r) => (r.regs as X86Registers).rip),
            ...(known !== undefined ? { known } : {}),
            isUnmapped: (e) => e instanceof GdbReplyError,
            signal: opts.signal,
          });
        } catch (e) {
          report.symbols.error = `KASLR offset: ${describeError(e)}`;
        }
        if (kaslr !== undefined) this.#offsets.set(cacheKey, kaslr.offset);
        else if (report.symbols.error === undefined) report.symbols.error = 'KASLR offset: linux_banner found at no candidate (a System.map of another kernel?)';
        phase('kaslr');
      }
      await gdb.detach();
      detached = true;
      phase('detached');
    } catch (e) {
      report.error = describeError(e);
      // Nothing listening (or no connection at all): nothing was stopped.
      if (client === undefined && e instanceof GdbError && /^(cannot connect to the gdbstub|no gdbstub connection within)/.test(e.message)) neverConnected = true;
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
      // A session that died (a timeout, a protocol error) closed without `D`: the VM stays stopped.
      // Attach again and detach, once, briefly. (A live one detaches in close().)
      const dead = !detached && !neverConnected && (client === undefined || client.closed);
      await client?.close();
      if (dead) report.resume = await this.#reattachToResume(target.gdb);
      report.pauseMs = Math.round((this.#clock.now() - t0) * 10) / 10;
      // Detach (or close's best-effort detach) resumed the VM: put a VM that was not running back
      // (even past the deadline: leaving it running is worse).
      if (lease !== undefined && report.runState !== undefined) {
        try {
          if (before !== undefined && !before.running) {
            await lease.qmp.execute('stop', undefined, { timeoutMs: 2000 });
            report.runState.restored = true;
          }
          report.runState.after = sanitizeLine((await lease.qmp.queryStatus({ timeoutMs: 2000 })).status, 40);
        } catch (e) {
          report.runState.error = `${report.runState.error ?? ''}${report.runState.error === undefined ? '' : '; '}after detaching: ${describeError(e)}`;
        }
      }
      await lease?.release();
    }

    if (table !== undefined && kaslr === undefined && report.symbols.error === undefined) report.symbols.error = 'KASLR offset not looked for (the gdbstub session ended first)';
    const symbols = kaslr !== undefined && table !== undefined ? table.relocated(kaslr.offset) : undefined;
    report.symbols.symbolized = symbols !== undefined;
    if (kaslr !== undefined) {
      report.symbols.kaslr = { ...kaslr, offset: `0x${kaslr.offset.toString(16)}`, bannerAddress: `0x${kaslr.bannerAddress.toString(16)}` };
    }
    const isText = symbols !== undefined ? (a: bigint) => symbols.isKernelText(a) : (a: bigint) => a >= KERNEL_IMAGE_START && a < KERNEL_IMAGE_END;
    const sym = (a: bigint): string | undefined => symbols?.format(a);

    for (const r of reads) {
      const v: GdbStacksReport['vcpus'][number] = { index: r.index, thread: r.thread };
      if (r.info !== undefined) v.info = r.info;
      if (r.error !== undefined) v.error = r.error;
      if (r.regs !== undefined) {
        const regs = r.regs;
        v.mode = cpl(regs) === 0 ? 'kernel' : 'user';
        v.interrupts = interruptsOn(regs) ? 'on' : 'off';
        v.registers = Object.fromEntries(
          (['rip', 'rsp', 'rbp', 'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'cr2', 'cr3', 'gs_base'] as const).map((k) => [k, `0x${hex(regs[k])}`]),
        );
        v.registers['eflags'] = `0x${regs.eflags.toString(16)}`;
        v.registers['cs'] = `0x${regs.cs.toString(16)}`;
        const ripSym = v.mode === 'kernel' ? sym(regs.rip) : undefined;
        v.rip = { addr: `0x${hex(regs.rip)}`, ...(ripSym !== undefined ? { symbol: ripSym } : {}) };
        if (r.window !== undefined) {
          const walk = walkStackWindow(r.window, regs, { isText, maxFrames: this.#maxFrames });
          v.stack = {
            start: `0x${hex(r.window.base)}`,
            end: `0x${hex(r.window.stackEnd)}`,
            bytes: r.window.data.length,
            ...(r.window.stoppedBy !== undefined ? { stoppedBy: sanitizeLine(r.window.stoppedBy, 200) } : {}),
            framePointerFrames: walk.framePointerFrames,
            truncated: walk.truncated,
          };
          v.frames = walk.frames.slice(1).map((f) => {
            const s = sym(f.pc);
            return { addr: `0x${hex(f.pc)}`, ...(f.sp !== undefined ? { sp: `0x${hex(f.sp)}` } : {}), kind: f.kind, ...(s !== undefined ? { symbol: s } : {}) };
          });
        }
      }
      report.vcpus.push(v);
    }

    const withRegs = report.vcpus.filter((v) => v.registers !== undefined).length;
    const half = Math.max(1024, Math.floor(opts.maxBytes / 2));
    const artifacts = [textArtifact('gdb-stacks.txt', renderText(report), half), jsonArtifact('gdb-stacks.json', report, half)];
    const where = report.vcpus
      .slice(0, 8)
      .map((v) => `vCPU ${v.index} ${v.rip === undefined ? (v.error ?? 'unread') : v.mode === 'user' ? 'user mode' : (v.rip.symbol ?? v.rip.addr)}${v.interrupts === 'off' && v.mode === 'kernel' ? ' (irqs off)' : ''}`)
      .join(', ');
    const symNote = report.symbols.symbolized ? `KASLR offset ${report.symbols.kaslr?.offset ?? '?'}` : `unsymbolized (${report.symbols.error ?? 'no System.map'})`;
    const state = report.runState?.before !== undefined ? `; run state ${report.runState.before} -> ${report.runState.after ?? '?'}` : '';
    const summary = `gdb-stacks: ${withRegs}/${report.vcpus.length} vCPUs, VM paused ${report.pauseMs} ms${detached ? '' : ' (no clean detach)'}: ${where}; ${symNote}${state}${report.error !== undefined ? `; ${report.error}` : ''}${report.resume !== undefined ? `; ${report.resume}` : ''}`;
    if (withRegs === 0) return failed(summary, artifacts);
    return { ok: true, summary: sanitizeLine(summary, 600), artifacts };
  }
}

/** The human-readable artifact: a header, then one block per vCPU. */
export function renderText(report: GdbStacksReport): string {
  const lines: string[] = [];
  const s = report.symbols;
  const phases = Object.entries(report.phasesMs ?? {}).map(([k, v]) => `${k} ${v}`);
  lines.push(`VM paused ${report.pauseMs} ms by the gdbstub (connect to detach${phases.length > 0 ? `; ms from connect: ${phases.join(', ')}` : ''})`);
  if (report.runState !== undefined) {
    const rs = report.runState;
    lines.push(`Run state: before ${rs.before ?? '?'}, after ${rs.after ?? '?'}${rs.restored === true ? ' (QMP stop after the detach resumed it)' : ''}${rs.error !== undefined ? `; ${rs.error}` : ''}`);
  }
  lines.push(
    s.symbolized
      ? `Symbols: ${s.systemMap ?? '?'} (${s.textSymbols ?? '?'} text symbols), KASLR offset ${s.kaslr?.offset ?? '?'} (${s.kaslr?.method ?? '?'} at ${s.kaslr?.bannerAddress ?? '?'}, ${s.kaslr?.probes ?? '?'} reads: ${s.kaslr?.banner ?? ''})`
      : `Unsymbolized: ${s.error ?? 'no System.map'}`,
  );
  if (report.error !== undefined) lines.push(`Error: ${report.error}`);
  if (report.resume !== undefined) lines.push(`Resume: ${report.resume}`);
  for (const v of report.vcpus) {
    lines.push('');
    lines.push(`vCPU ${v.index} (thread ${v.thread}${v.info !== undefined ? `, ${v.info}` : ''})${v.mode !== undefined ? `: ${v.mode} mode, interrupts ${v.interrupts ?? '?'}` : ''}`);
    if (v.error !== undefined) lines.push(`  error: ${v.error}`);
    if (v.registers === undefined || v.rip === undefined) continue;
    const r = v.registers;
    lines.push(`  RIP: ${r['cs']}:${v.rip.addr}${v.rip.symbol !== undefined ? ` ${v.rip.symbol}` : ''}`);
    lines.push(`  RSP: ${r['rsp']} RBP: ${r['rbp']} EFLAGS: ${r['eflags']}`);
    lines.push(`  RAX: ${r['rax']} RBX: ${r['rbx']} RCX: ${r['rcx']}`);
    lines.push(`  RDX: ${r['rdx']} RSI: ${r['rsi']} RDI: ${r['rdi']}`);
    lines.push(`  R8:  ${r['r8']} R9:  ${r['r9']} R10: ${r['r10']}`);
    lines.push(`  R11: ${r['r11']} R12: ${r['r12']} R13: ${r['r13']}`);
    lines.push(`  R14: ${r['r14']} R15: ${r['r15']}`);
    lines.push(`  CR2: ${r['cr2']} CR3: ${r['cr3']} GS: ${r['gs_base']}`);
    if (v.stack === undefined) {
      lines.push(v.mode === 'user' ? '  (user mode: no kernel stack walked)' : '  (no stack read: RSP is not a kernel address)');
      continue;
    }
    const st = v.stack;
    lines.push(
      `  Call Trace (${st.bytes} bytes of the stack from ${st.start} to ${st.end}${st.stoppedBy !== undefined ? `, stopped: ${st.stoppedBy}` : ''}; ${st.framePointerFrames > 0 ? `${st.framePointerFrames} frame-pointer frames` : 'no frame-pointer chain'}, "?" = found by scanning):`,
    );
    for (const f of v.frames ?? []) lines.push(`   ${f.kind === 'scanned' ? '? ' : ''}${f.symbol ?? f.addr}${f.sp !== undefined ? `  [${f.sp}]` : ''}`);
    if (st.truncated) lines.push('   ... (more frames)');
  }
  return `${lines.join('\n')}\n`;
}
