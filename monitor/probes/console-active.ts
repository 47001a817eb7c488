import { connect, type Socket } from 'node:net';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { compileRegex, deadline, errnoCode, errorText, failure, success, tail, unknown, Waiters } from './common.js';

/**
 * `console-active`: type a command on the VM's console and expect its answer, the seed's "periodically
 * run `uptime`". The console is a chardev socket server that takes ONE client at a time (EVE's
 * `eve app console` is the other one), so the probe connects, sends, reads, and disconnects at once.
 * While connected it reads everything QEMU sends: a client that stops reading can hold up the guest's
 * console output (DESIGN fact 8). The logfile keeps the full console; the probe keeps only a tail.
 *
 * Optional login steps run first, in order: wait for `expect` (if any) in what arrived since the
 * previous step, then send `send` (if any). Then the command line is sent and `expect` must match
 * what arrives after it (the echo of the command line itself is removed first, so `echo OK` with
 * expect `OK` cannot match its own echo). A connect refused or a missing socket means no QEMU serves
 * the console: a failure. A timeout with nothing at all received, or EAGAIN on connect (the listen
 * backlog full), is unknown: the console is held by another client (QEMU leaves us in its backlog) or
 * nothing in the guest reads it, and neither says the guest's user space is stuck. Nothing sent on a mux console contains Ctrl-A (the mux escape).
 */

export interface ConsoleLoginStep {
  /** Regex to wait for before sending. */
  expect?: string;
  /** Text to send (no newline is added). */
  send?: string;
}

export interface ConsoleActiveParams {
  /** Command line to type. Default `uptime`. */
  command?: string;
  /** Regex its answer must match (multiline: `^`/`$` match at line ends). Default `load average` (what `uptime` prints). */
  expect?: string;
  login?: readonly ConsoleLoginStep[];
  /** Line ending sent after the command. Default `\n` (a tty in ICRNL mode takes `\r` too). */
  newline?: string;
  /** Most characters of console output kept for matching and evidence. Default 65536. */
  maxBytes?: number;
}

const EVIDENCE_TAIL = 2000;

export class ConsoleActiveProbe implements Probe {
  readonly kind = 'console-active';
  readonly #command: string;
  readonly #expect: RegExp;
  readonly #login: { expect?: RegExp; send?: string }[];
  readonly #newline: string;
  readonly #maxBytes: number;

  constructor(params: ConsoleActiveParams = {}) {
    this.#command = params.command ?? 'uptime';
    this.#expect = compileRegex('expect', params.expect ?? 'load average', 'm');
    this.#login = (params.login ?? []).map((s, i) => ({
      ...(s.expect !== undefined ? { expect: compileRegex(`login[${i}].expect`, s.expect, 'm') } : {}),
      ...(s.send !== undefined ? { send: s.send } : {}),
    }));
    this.#newline = params.newline ?? '\n';
    this.#maxBytes = params.maxBytes ?? 65536;
    for (const [k, v] of [['command', this.#command], ['newline', this.#newline], ...this.#login.map((s, i) => [`login[${i}].send`, s.send ?? ''])]) {
      if ((v as string).includes('\x01')) throw new RangeError(`${k}: contains Ctrl-A, the mux console escape`);
    }
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes < 256) throw new RangeError(`maxBytes: an integer >= 256 (got ${this.#maxBytes})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    if (target.console === undefined) return unknown('no console socket configured');
    const d = deadline(opts.signal, opts.timeoutMs);
    const conv = new Conversation(this.#maxBytes);
    let socket: Socket | undefined;
    let step = 'connect';
    const evidence = () => ({ console: target.console, step, received: tail(conv.text, EVIDENCE_TAIL), bytes: conv.bytes });
    try {
      socket = await openSocket(target.console, d.signal);
      conv.attach(socket);
      for (const [i, s] of this.#login.entries()) {
        step = `login[${i}]`;
        if (s.expect !== undefined) await conv.waitFor(s.expect, d.signal);
        if (s.send !== undefined) socket.write(s.send);
      }
      step = 'command';
      conv.mark(this.#command);
      socket.write(`${this.#command}${this.#newline}`);
      const m = await conv.waitFor(this.#expect, d.signal);
      return success(`${JSON.stringify(this.#command)} answered: ${JSON.stringify(m.trim().slice(0, 200))}`, { ...evidence(), matched: m });
    } catch (e) {
      if (d.signal.aborted) {
        if (!d.expired) return unknown(`console ${step}: aborted`, { ...evidence(), aborted: true });
        // Not a byte back, not even the echo of what was typed (a guest's tty echoes in the kernel,
        // whatever its user space does): QEMU never took us off its listen backlog because another
        // client holds the console (`eve app console`), or nothing in the guest reads the port. That
        // says nothing of the guest's user space: unknown, never a failure (a false userspace hang).
        if (step === 'connect' || conv.bytes === 0) {
          const why = step === 'connect' ? 'no connection' : 'nothing received, not even the echo';
          return unknown(`console ${step}: timed out after ${opts.timeoutMs} ms: ${why} (the console is held by another client, or nothing in the guest reads it)`, { ...evidence(), timedOut: true, held: true });
        }
        const re = (step === 'command' ? this.#expect : this.#login[Number(step.slice(6, -1))]?.expect)?.source ?? '';
        return failure(`console ${step}: timed out after ${opts.timeoutMs} ms: no match for /${re}/`, { ...evidence(), timedOut: true });
      }
      const code = errnoCode(e);
      // EAGAIN on connect: the listen backlog is full. Seen with QEMU 7.2 in the console-held fault
      // scenario (test/faults): while another client holds the console, a probe's connect either
      // waits in the backlog (then times out, above) or fails with EAGAIN.
      if (code === 'EAGAIN' && step === 'connect') {
        return unknown(`console ${target.console}: ${errorText(e)} (the listen backlog is full: the console is held by another client)`, { ...evidence(), errno: code, held: true });
      }
      return failure(`console ${target.console}: ${errorText(e)}`, { ...evidence(), error: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
      conv.detach();
      // Disconnect promptly: the console serves one client at a time.
      socket?.destroy();
    }
  }
}

function openSocket(path: string, signal: AbortSignal): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const s = connect(path);
    const onAbort = () => {
      s.destroy();
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    s.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      s.removeAllListeners('error');
      s.on('error', () => undefined); // reported through the waits (the socket closes)
      resolve(s);
    });
    s.once('error', (e) => {
      signal.removeEventListener('abort', onAbort);
      s.destroy();
      reject(e);
    });
  });
}

/** What arrived on the socket, bounded, with waits for a regex over the part after a mark. */
class Conversation {
  text = '';
  bytes = 0;
  #from = 0;
  /** The command line whose echo is ignored by the next wait. */
  #echo: string | undefined;
  #closed: Error | undefined;
  readonly #waiters = new Waiters(() => this.#closed);
  #socket: Socket | undefined;
  #onData = (b: Buffer) => {
    this.bytes += b.length;
    // latin1: every byte is one character, so offsets stay byte offsets; console text is ASCII anyway.
    this.text += b.toString('latin1');
    if (this.text.length > this.maxChars) {
      const cut = this.text.length - this.maxChars;
      this.text = this.text.slice(cut);
      this.#from = Math.max(0, this.#from - cut);
    }
    this.#waiters.wake();
  };
  #onClose = () => {
    this.#closed = new Error('the console closed the connection');
    this.#waiters.wake();
  };

  constructor(private readonly maxChars: number) {}

  attach(s: Socket): void {
    this.#socket = s;
    s.on('data', this.#onData);
    s.on('close', this.#onClose);
  }

  detach(): void {
    this.#socket?.off('data', this.#onData);
    this.#socket?.off('close', this.#onClose);
  }

  /** Later matches start after this point; `echo` is the command line whose echo is to be ignored. */
  mark(echo: string): void {
    this.#from = this.text.length;
    this.#echo = echo;
  }

  waitFor(re: RegExp, signal: AbortSignal): Promise<string> {
    const once = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
    return this.#waiters.until(signal, () => {
      let seen = this.text.slice(this.#from);
      if (this.#echo !== undefined) {
        const at = seen.indexOf(this.#echo);
        if (at >= 0) seen = seen.slice(0, at) + seen.slice(at + this.#echo.length);
      }
      const m = once.exec(seen);
      if (m === null) return undefined;
      // The next wait starts after this match.
      this.#from = this.text.length;
      this.#echo = undefined;
      return m[0];
    });
  }
}
