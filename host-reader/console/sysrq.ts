import { QmpError, type QmpClient } from '../qmp/index.js';
import { ConsoleBusyError, ConsoleError, SysrqError } from './errors.js';
import { sendToConsole, type SendOptions, type SendResult } from './sender.js';

/**
 * Magic SysRq without a shell in the guest (DESIGN fact 8), two ways:
 *
 * - **BREAK on the serial console, then the key.** Linux's serial core treats a character received within
 *   5 s of a BREAK as a SysRq key (`uart_handle_break`, `uart_handle_sysrq_char`). On a `mux=on` chardev
 *   (EVE's console) the bytes Ctrl-A b make QEMU's mux send a BREAK to the serial port; on a plain chardev
 *   bytes never make a BREAK, so QMP `chardev-send-break {id}` (QEMU >= 2.10) sends it and the key follows
 *   on the socket.
 * - **QMP `send-key` alt + sysrq + KEY** reaches the guest's PS/2 keyboard, even with a serial-only
 *   console and a `-display none` VM. Checked with QEMU 7.2 and Linux 6.1 (q35, `-nodefaults`): with the
 *   qcode `sysrq` and with `print` alike, alt + it + `w` printed `sysrq: Show Blocked State`; `sysrq` is used.
 *
 * Also checked with QEMU 7.2: `chardev-send-break` works on the mux chardev's id and on its `ID-base`
 * socket backend; and a second client that connects while another holds the console socket waits in the
 * listen backlog, and what it sent is never read, even after the first client leaves.
 *
 * The guest must allow the keys: Debian's default `kernel.sysrq=438` refuses the dump keys (the kernel
 * prints `This sysrq operation is disabled.`); images need `kernel.sysrq=1`.
 */

/**
 * Keys that only print state: h help, d locks held, l backtrace of active CPUs, m memory, p registers,
 * q timers, t tasks, w blocked tasks. Every other key changes the guest (b reboot, c crash, e/i kill all,
 * f OOM kill, j thaw, k SAK, o power off, s sync, u remount read-only, 0-9 the console log level, z dumps
 * and stops ftrace...) and needs `allowUnsafe`.
 */
export const SAFE_SYSRQ_KEYS: readonly string[] = ['d', 'h', 'l', 'm', 'p', 'q', 't', 'w'];

/** What the kernel prints for each safe key (Linux 6.1 `drivers/tty/sysrq.c`, `action_msg`). */
export const SYSRQ_ACTION_MESSAGES: Readonly<Record<string, string>> = {
  d: 'Show Locks Held',
  h: 'HELP',
  l: 'Show backtrace of all active CPUs',
  m: 'Show Memory',
  p: 'Show Regs',
  q: 'Show clockevent devices & pending hrtimers (no others)',
  t: 'Show State',
  w: 'Show Blocked State',
};

/** The kernel's header for a handled key: `sysrq: Show State` (Linux >= 5.x), `SysRq : Show State` (older). */
export const SYSRQ_HEADER = /\b(?:sysrq: |SysRq : )/i;
/** Printed instead of running a key that `kernel.sysrq` forbids. */
export const SYSRQ_DISABLED = /This sysrq operation is disabled/;

/** Ctrl-A, the default escape character of a QEMU mux chardev (`-echr` changes it). */
export const MUX_ESCAPE = 0x01;

export type SysrqMethod = 'break' | 'send-key';

/** Throws (a programmer error) unless `key` is one SysRq key, and a safe one unless `allowUnsafe`. */
export function checkSysrqKey(key: string, allowUnsafe = false): void {
  if (typeof key !== 'string' || !/^[0-9a-z]$/.test(key)) {
    throw new RangeError(`SysRq key must be one of 0-9 a-z, got ${JSON.stringify(key)}`);
  }
  if (!allowUnsafe && !SAFE_SYSRQ_KEYS.includes(key)) {
    throw new RangeError(
      `SysRq key ${JSON.stringify(key)} changes the guest (only ${SAFE_SYSRQ_KEYS.join(' ')} just print); pass allowUnsafe to send it`,
    );
  }
}

/** The QMP `send-key` keys for alt + sysrq + `key`. */
export function sysrqSendKeyArgs(key: string, holdTimeMs?: number): Record<string, unknown> {
  checkSysrqKey(key, true);
  const args: Record<string, unknown> = {
    keys: [
      { type: 'qcode', data: 'alt' },
      { type: 'qcode', data: 'sysrq' },
      { type: 'qcode', data: key },
    ],
  };
  if (holdTimeMs !== undefined) args['hold-time'] = holdTimeMs;
  return args;
}

export interface SendKeyOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** How long QEMU holds the keys down (QMP `hold-time`; QEMU's default 100 ms). */
  holdTimeMs?: number;
  allowUnsafe?: boolean;
}

/** SysRq `key` through QMP `send-key` alt + sysrq + key. Rejects with `SysrqError` (`cause`: the QMP error). */
export async function sysrqBySendKey(qmp: QmpClient, key: string, options: SendKeyOptions = {}): Promise<void> {
  checkSysrqKey(key, options.allowUnsafe ?? false);
  try {
    await qmp.execute('send-key', sysrqSendKeyArgs(key, options.holdTimeMs), qmpOptions(options));
  } catch (error) {
    if (error instanceof QmpError) throw new SysrqError(`QMP send-key alt+sysrq+${key} failed: ${error.message}`, { cause: error });
    throw error;
  }
}

export interface BreakOptions extends Omit<SendOptions, 'keepBytes'> {
  /** Console socket path (a chardev `socket,server=on`). */
  consolePath: string;
  /** The chardev is `mux=on`: the BREAK is Ctrl-A b on the socket. Otherwise QMP `chardev-send-break`. */
  mux: boolean;
  /** Needed when `mux` is false (and used to check that the socket is free, when given). */
  qmp?: QmpClient;
  /** The chardev id for `chardev-send-break`; found with `query-chardev` by the socket path when absent. */
  chardevId?: string;
  /** Pause between the BREAK and the key. Default 50 ms (the kernel waits up to 5 s for the key). */
  gapMs?: number;
  allowUnsafe?: boolean;
  /** The mux escape character. Default Ctrl-A. */
  muxEscape?: number;
}

/**
 * SysRq `key` as a BREAK followed by the key on the serial console. When `qmp` is given, first checks with
 * `query-chardev` that no other client holds the console socket (then rejects with `ConsoleBusyError`:
 * the bytes would wait unread). Rejects with `SysrqError`, `ConsoleBusyError` or a `ConsoleError`.
 */
export async function sysrqByBreak(key: string, options: BreakOptions): Promise<SendResult> {
  checkSysrqKey(key, options.allowUnsafe ?? false);
  const escape = options.muxEscape ?? MUX_ESCAPE;
  if (!Number.isInteger(escape) || escape < 0 || escape > 0x1f) {
    throw new RangeError(`muxEscape must be a control character 0x00-0x1f, got ${String(escape)}`);
  }
  if (!options.mux && options.qmp === undefined) {
    throw new TypeError('sysrqByBreak: a plain (non-mux) console needs qmp for chardev-send-break');
  }
  const { qmp } = options;
  let chardevId = options.chardevId;
  if (qmp !== undefined) {
    const chardev = await findConsoleChardev(qmp, options.consolePath, qmpOptions(options));
    if (chardev?.connected === true) throw new ConsoleBusyError(options.consolePath);
    if (chardevId === undefined && !options.mux) {
      if (chardev === undefined) {
        throw new SysrqError(`no chardev in query-chardev listens on ${options.consolePath}: pass chardevId`);
      }
      chardevId = chardev.id;
    }
  }
  const sendOptions: SendOptions = { ...qmpOptions(options) };
  if (options.lingerMs !== undefined) sendOptions.lingerMs = options.lingerMs;
  const gap = { pauseMs: options.gapMs ?? 50 };
  if (options.mux) {
    return sendToConsole(options.consolePath, [String.fromCharCode(escape, 0x62 /* b */), gap, key], sendOptions);
  }
  try {
    await (qmp as QmpClient).execute('chardev-send-break', { id: chardevId }, qmpOptions(options));
  } catch (error) {
    if (error instanceof QmpError) {
      throw new SysrqError(`QMP chardev-send-break ${String(chardevId)} failed: ${error.message}`, { cause: error });
    }
    throw error;
  }
  return sendToConsole(options.consolePath, [key], sendOptions);
}

export interface ConsoleChardev {
  /** The id to pass to `chardev-send-break` (the socket backend's label: `ID-base` for a mux chardev). */
  id: string;
  /** The mux chardev's label, when the socket is the backend of one. */
  muxId?: string;
  /** A client is connected to the socket now. */
  connected: boolean;
  /** QEMU's description, e.g. `disconnected:unix:/run/.../cons,server=on`. */
  filename: string;
}

/**
 * Finds the chardev serving the unix socket `path` with QMP `query-chardev`. QEMU names a listening
 * socket `unix:PATH,server=on` while a client is connected and `disconnected:unix:PATH,server=on` while
 * none is (QEMU 7.2 `char-socket.c`); a mux chardev `ID` has its socket backend as `ID-base`.
 * Resolves `undefined` when no chardev serves `path`. Rejects with the QMP error.
 */
export async function findConsoleChardev(
  qmp: QmpClient,
  path: string,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<ConsoleChardev | undefined> {
  const reply = await qmp.execute('query-chardev', undefined, qmpOptions(options));
  if (!Array.isArray(reply)) throw new ConsoleError(`query-chardev returned ${typeof reply}, not a list`);
  const labels = new Set<string>();
  let found: ConsoleChardev | undefined;
  for (const item of reply as unknown[]) {
    if (typeof item !== 'object' || item === null) continue;
    const { label, filename } = item as { label?: unknown; filename?: unknown };
    if (typeof label !== 'string' || typeof filename !== 'string') continue;
    labels.add(label);
    const disconnected = filename.startsWith('disconnected:');
    const rest = disconnected ? filename.slice('disconnected:'.length) : filename;
    if (found === undefined && socketFilenamePath(rest) === path) {
      found = { id: label, connected: !disconnected, filename };
    }
  }
  if (found?.id.endsWith('-base') === true) {
    const muxId = found.id.slice(0, -'-base'.length);
    if (labels.has(muxId)) found.muxId = muxId;
  }
  return found;
}

/** The path of `unix:PATH[,server=on][,...]`, or undefined. QEMU prints the path as is (commas not doubled). */
function socketFilenamePath(filename: string): string | undefined {
  if (!filename.startsWith('unix:')) return undefined;
  const body = filename.slice('unix:'.length);
  return body.replace(/,server=on$/, '').replace(/,server$/, '');
}

function qmpOptions(options: { timeoutMs?: number; signal?: AbortSignal }): { timeoutMs?: number; signal?: AbortSignal } {
  const out: { timeoutMs?: number; signal?: AbortSignal } = {};
  if (options.timeoutMs !== undefined) out.timeoutMs = options.timeoutMs;
  if (options.signal !== undefined) out.signal = options.signal;
  return out;
}
