/**
 * A libvirt domain reached through Debian's `virsh` (libvirt-clients): QMP commands with
 * `qemu-monitor-command` (libvirt passes them to the domain's QEMU and returns its reply), the domain
 * XML with `dumpxml`, and two long-running event streams (`qemu-monitor-event --loop` for QEMU's own
 * events, `event --event lifecycle --loop` for the domain starting and stopping). Every run is an
 * argv (never a shell), bounded in time and output, with `LC_ALL=C` so its messages read the same.
 *
 * Why virsh and not libvirt's RPC: the protocol is XDR over libvirt's socket with its own auth and
 * keepalive; virsh is the maintained client every libvirt host has. A command costs one virsh process
 * (about 25 ms wall, 20 ms of CPU here); the monitor sends few (run state, discovery), and the
 * heartbeat reads guest memory through /proc without QMP.
 */
import { execFile, spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import type { QmpEvent } from '../qmp/events.js';
import { LineStream } from '../qmp/line-stream.js';
import { isObject, jsonNestsDeeper } from '../qmp/messages.js';
import { checkDomainRef, type LibvirtDomainRef } from './domain-ref.js';
import { MAX_EVENT_LINE_BYTES, parseLifecycleLine, parseQemuEventLine, type LifecycleEvent } from './event-line.js';

/** A QMP command as QEMU takes it (no `id`: libvirt adds its own and refuses ours). */
export interface QmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
}

/** QEMU's reply, as QMP has it. */
export type QmpReplyBody = { return: unknown } | { error: { class: string; desc: string } };

export interface LibvirtWatchHandlers {
  onEvent(event: QmpEvent): void;
  onLifecycle(event: LifecycleEvent): void;
  /** A stream's virsh ended (libvirtd restarted, the domain was undefined); `detail` says how. */
  onExit(stream: 'events' | 'lifecycle', detail: string): void;
}

/** What the bridge needs of libvirt: the interface `Virsh` implements and `FakeLibvirtLink` fakes. */
export interface LibvirtLink {
  readonly ref: LibvirtDomainRef;
  qmp(command: QmpCommand, o?: { timeoutMs?: number }): Promise<QmpReplyBody>;
  dumpXml(o?: { timeoutMs?: number }): Promise<string>;
  watch(h: LibvirtWatchHandlers): { stop(): void };
}

/** virsh failed; `notRunning` when libvirt said the domain is not running. */
export class LibvirtError extends Error {
  override name = 'LibvirtError';
  constructor(
    readonly operation: string,
    message: string,
    readonly notRunning = false,
    options?: ErrorOptions,
  ) {
    super(`libvirt ${operation}: ${message}`, options);
  }
}

export interface VirshOptions {
  ref: LibvirtDomainRef;
  /** Default `virsh` on PATH. */
  binary?: string;
  /** Per-run bound; default 30 s. */
  timeoutMs?: number;
}

const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
const MAX_STDERR_BYTES = 64 * 1024;

/** The first `error: ...` line virsh printed, without the prefix. */
export function virshErrorOf(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const errors = lines.filter((l) => l.startsWith('error: ')).map((l) => l.slice(7));
  // virsh prints `error: failed to get domain 'x'` then the reason; both are worth keeping.
  return (errors.length > 0 ? errors.slice(0, 2).join(': ') : (lines[0] ?? 'no message')).slice(0, 400);
}

/** Decodes what `qemu-monitor-command` printed: QEMU's reply object, validated. */
export function parseMonitorReply(stdout: string): QmpReplyBody {
  const text = stdout.trim();
  if (jsonNestsDeeper(text)) throw new LibvirtError('qemu-monitor-command', 'reply nested too deep');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new LibvirtError('qemu-monitor-command', `reply is not JSON: ${JSON.stringify(text.slice(0, 120))}`, false, { cause: e });
  }
  if (!isObject(v)) throw new LibvirtError('qemu-monitor-command', 'reply is not a JSON object');
  if ('error' in v) {
    const e = v.error;
    if (!isObject(e) || typeof e.class !== 'string' || typeof e.desc !== 'string') throw new LibvirtError('qemu-monitor-command', 'error reply lacks class/desc');
    return { error: { class: e.class, desc: e.desc } };
  }
  if (!('return' in v)) throw new LibvirtError('qemu-monitor-command', 'reply has neither return nor error');
  return { return: v.return };
}

export class Virsh implements LibvirtLink {
  readonly ref: LibvirtDomainRef;
  readonly #binary: string;
  readonly #timeoutMs: number;

  constructor(o: VirshOptions) {
    this.ref = checkDomainRef(o.ref);
    this.#binary = o.binary ?? 'virsh';
    this.#timeoutMs = o.timeoutMs ?? 30_000;
  }

  #args(rest: string[]): string[] {
    return ['-q', '-c', this.ref.uri, ...rest];
  }

  #run(operation: string, rest: string[], timeoutMs = this.#timeoutMs): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        this.#binary,
        this.#args(rest),
        { env: { ...process.env, LC_ALL: 'C' }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8' },
        (error, stdout, stderr) => {
          if (error === null) return resolve(stdout);
          const e = error as NodeJS.ErrnoException & { killed?: boolean };
          if (e.code === 'ENOENT') return reject(new LibvirtError(operation, `${this.#binary} not found (apt-get install libvirt-clients)`, false, { cause: error }));
          if (e.killed === true) return reject(new LibvirtError(operation, `virsh did not answer within ${timeoutMs} ms`, false, { cause: error }));
          if (e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') return reject(new LibvirtError(operation, `more than ${MAX_OUTPUT_BYTES} bytes of output`, false, { cause: error }));
          const message = virshErrorOf(String(stderr).slice(0, MAX_STDERR_BYTES));
          reject(new LibvirtError(operation, message, /domain is not running/.test(message), { cause: error }));
        },
      );
    });
  }

  async qmp(command: QmpCommand, o: { timeoutMs?: number } = {}): Promise<QmpReplyBody> {
    const json = JSON.stringify(command.arguments === undefined ? { execute: command.execute } : { execute: command.execute, arguments: command.arguments });
    return parseMonitorReply(await this.#run(`qemu-monitor-command ${command.execute}`, ['qemu-monitor-command', '--domain', this.ref.domain, '--cmd', json], o.timeoutMs));
  }

  dumpXml(o: { timeoutMs?: number } = {}): Promise<string> {
    return this.#run('dumpxml', ['dumpxml', '--domain', this.ref.domain], o.timeoutMs);
  }

  watch(h: LibvirtWatchHandlers): { stop(): void } {
    const domain = this.ref.domain;
    const stops = [
      this.#follow('events', ['qemu-monitor-event', '--domain', domain, '--loop'], (line) => {
        const e = parseQemuEventLine(line, domain);
        if (e !== undefined) h.onEvent(e);
      }, h),
      this.#follow('lifecycle', ['event', '--domain', domain, '--event', 'lifecycle', '--loop'], (line) => {
        const e = parseLifecycleLine(line, domain);
        if (e !== undefined) h.onLifecycle(e);
      }, h),
    ];
    return { stop: () => stops.forEach((s) => s()) };
  }

  #follow(stream: 'events' | 'lifecycle', rest: string[], onLine: (line: string) => void, h: LibvirtWatchHandlers): () => void {
    const child = spawn(this.#binary, this.#args(rest), { env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stopped = false;
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < MAX_STDERR_BYTES) stderr += s;
    });
    const lines = new LineStream(Duplex.from({ readable: child.stdout, writable: null }), { maxLineBytes: MAX_EVENT_LINE_BYTES });
    (async () => {
      for (;;) {
        const line = await lines.readLine();
        if (line === null) break;
        onLine(line);
      }
      const end = lines.end;
      if (end?.kind === 'overflow') child.kill('SIGKILL');
    })().catch(() => child.kill('SIGKILL'));
    child.on('error', (e) => {
      if (!stopped) h.onExit(stream, `virsh: ${e.message}`);
      stopped = true;
    });
    child.on('exit', (code, signal) => {
      if (stopped) return;
      stopped = true;
      h.onExit(stream, `virsh ${rest[0]} ended (${signal ?? `exit ${code}`}): ${virshErrorOf(stderr)}`);
    });
    return () => {
      stopped = true;
      child.kill('SIGKILL');
      lines.close().catch(() => undefined);
    };
  }
}
