import { createConnection, type Socket } from 'node:net';
import { armGuard, checkTimeoutMs, systemTimers, type Timers } from './deadline.js';
import {
  QmpAbortError,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
  type QmpConnectPhase,
} from './errors.js';
import {
  EventHub,
  type QmpEvent,
  type QmpEventListener,
  type QmpEventListenerOptions,
  type QmpEventNames,
} from './events.js';
import { LineStream, type LineStreamEnd } from './line-stream.js';
import { isObject, parseGreeting, parseMessage, type QmpGreeting, type QmpVersion } from './messages.js';

export type { QmpGreeting, QmpVersion } from './messages.js';

/** Where QEMU listens: `-qmp unix:PATH,server=on` or `-qmp tcp:HOST:PORT,server=on`. */
export type QmpTarget = { readonly path: string } | { readonly host: string; readonly port: number };

/** idle -> connecting -> running -> disconnecting -> closed (a failed connect goes straight to closed). */
export type QmpState = 'idle' | 'connecting' | 'running' | 'disconnecting' | 'closed';

const TRANSITIONS: Readonly<Record<QmpState, readonly QmpState[]>> = {
  idle: ['connecting', 'closed'],
  connecting: ['running', 'closed'],
  running: ['disconnecting'],
  disconnecting: ['closed'],
  closed: [],
};

export interface QmpClientOptions {
  /** Default per-command timeout. Default 10 s; `Infinity` for none. */
  defaultTimeoutMs?: number;
  /** Longest accepted line from QEMU, in bytes. Default 16 MiB. */
  maxLineBytes?: number;
  /** Default queue length of each event listener. Default 256. */
  eventQueueSize?: number;
  /** Clock for timeouts (tests inject one). */
  timers?: Timers;
  /** Called when a listener passed to `on()` throws or rejects. Default: `process.emitWarning`. */
  onListenerError?: (error: unknown, event: QmpEvent) => void;
}

export interface QmpConnectOptions {
  /** Aborting rejects `connect()` with `QmpAbortError` and closes the socket. */
  signal?: AbortSignal;
  /** Deadline for socket + greeting + capabilities negotiation. Default: the client's default timeout. */
  timeoutMs?: number;
}

export interface QmpExecuteOptions {
  /** Default: the client's `defaultTimeoutMs`. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface QmpHmpOptions extends QmpExecuteOptions {
  /** The CPU the HMP command applies to (`info registers`, `x`...), QMP `cpu-index`. */
  cpuIndex?: number;
}

export interface QmpWaitEventOptions {
  /** Default: the client's `defaultTimeoutMs`. */
  timeoutMs?: number;
  signal?: AbortSignal;
  filter?: (event: QmpEvent) => boolean;
}

/** `query-status` (QAPI `StatusInfo`). `status` is a `RunState`: running, paused, shutdown, guest-panicked... */
export interface QmpStatus {
  readonly running: boolean;
  readonly status: string;
  /** Present up to QEMU 8.x; deprecated and later removed. */
  readonly singlestep?: boolean;
}

export interface QmpClientStats {
  /** Commands written, `qmp_capabilities` included. */
  readonly commandsSent: number;
  /** Replies whose id matched no pending command (it had timed out or been aborted). */
  readonly lateReplies: number;
  readonly eventsReceived: number;
}

export const DEFAULT_TIMEOUT_MS = 10_000;

/** QAPI command names: letters, digits, `-`, `_`, and `.` in vendor prefixes (`__com.redhat_...`). */
const COMMAND_NAME = /^[A-Za-z_][A-Za-z0-9._-]*$/;

type Json = Record<string, unknown>;

type PendingCommand = {
  readonly command: string;
  readonly args: Json | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  dispose: () => void;
};

/**
 * A QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst), modelled on QEMU's Python library
 * `python/qemu/qmp`: a line stream at the bottom, the command/reply protocol here, events on top.
 *
 * Session: connect, read the greeting, send `qmp_capabilities`, and only then start the read loop. Every
 * command carries a generated `id` and its reply is routed by it, so replies may come in any order.
 * A command ends exactly once: reply, error reply, timeout, abort, or disconnection; its timer and abort
 * listener are cleared on every path, and a reply that comes after a timeout is discarded.
 *
 * Nothing QEMU sends can make this throw: a line that is not JSON, not a QMP message, or too long is a
 * `QmpProtocolError` that closes the connection (a line protocol cannot resynchronise), and every pending
 * command then rejects with `QmpDisconnectedError` (`cause`: the protocol error).
 */
export class QmpClient {
  readonly #defaultTimeoutMs: number;
  readonly #maxLineBytes: number | undefined;
  readonly #eventQueueSize: number | undefined;
  readonly #timers: Timers;
  readonly #onListenerError: (error: unknown, event: QmpEvent) => void;

  #state: QmpState = 'idle';
  #target = '';
  #greeting: QmpGreeting | undefined;
  #lines: LineStream | undefined;
  /** Aborted by `close()` while connecting. */
  #handshake: AbortController | undefined;
  readonly #pending = new Map<string, PendingCommand>();
  readonly #hub = new EventHub();
  #nextId = 0;
  #commandsSent = 0;
  #lateReplies = 0;
  #eventsReceived = 0;

  readonly #closed: Promise<QmpError | undefined>;
  #resolveClosed!: (reason: QmpError | undefined) => void;

  constructor(options: QmpClientOptions = {}) {
    this.#defaultTimeoutMs = checkTimeoutMs('defaultTimeoutMs', options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS);
    for (const key of ['maxLineBytes', 'eventQueueSize'] as const) {
      const value = options[key];
      if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) {
        throw new RangeError(`${key} must be a positive integer, got ${String(value)}`);
      }
    }
    this.#maxLineBytes = options.maxLineBytes;
    this.#eventQueueSize = options.eventQueueSize;
    this.#timers = options.timers ?? systemTimers;
    this.#onListenerError =
      options.onListenerError ??
      ((error) => {
        process.emitWarning(`QMP event listener failed: ${error instanceof Error ? error.message : String(error)}`);
      });
    this.#closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  /** Creates a client and connects it: `await QmpClient.connect({ path: '/run/.../qmp' })`. */
  static async connect(
    target: QmpTarget,
    options: QmpConnectOptions & QmpClientOptions = {},
  ): Promise<QmpClient> {
    const { signal, timeoutMs, ...clientOptions } = options;
    const client = new QmpClient(clientOptions);
    const connectOptions: QmpConnectOptions = {};
    if (signal !== undefined) connectOptions.signal = signal;
    if (timeoutMs !== undefined) connectOptions.timeoutMs = timeoutMs;
    await client.connect(target, connectOptions);
    return client;
  }

  get state(): QmpState {
    return this.#state;
  }

  /** The greeting, once connected. */
  get greeting(): QmpGreeting | undefined {
    return this.#greeting;
  }

  /** QEMU's version from the greeting, once connected. */
  get version(): QmpVersion | undefined {
    return this.#greeting?.version;
  }

  /** `unix:PATH` or `tcp:HOST:PORT`. */
  get target(): string {
    return this.#target;
  }

  get stats(): QmpClientStats {
    return { commandsSent: this.#commandsSent, lateReplies: this.#lateReplies, eventsReceived: this.#eventsReceived };
  }

  /**
   * Resolves once the client is closed (never rejects): with `undefined` after `close()`, else with why
   * the connection ended (`QmpDisconnectedError` for a peer close or socket error, `QmpProtocolError`,
   * or the connect failure).
   */
  get closed(): Promise<QmpError | undefined> {
    return this.#closed;
  }

  /**
   * Opens the session. Rejects with `QmpConnectError` (with `phase` and `cause`: errno error,
   * `QmpTimeoutError`, `QmpProtocolError`, `QmpCommandError`, `QmpDisconnectedError`) or, if `signal`
   * aborted, with `QmpAbortError`. The client is then closed; use a new one to retry.
   */
  connect(target: QmpTarget, options: QmpConnectOptions = {}): Promise<void> {
    const { connectTo, name } = describeTarget(target);
    const timeoutMs = checkTimeoutMs('timeoutMs', options.timeoutMs ?? this.#defaultTimeoutMs);
    if (this.#state !== 'idle') {
      throw new Error(`QmpClient.connect: client is ${this.#state}, a client connects once`);
    }
    this.#target = name;
    this.#transition('connecting');
    return this.#connect(connectTo, timeoutMs, options.signal);
  }

  /**
   * Runs a QMP command and resolves with its `return` value (not checked: `T` is the caller's claim).
   * Rejects with `QmpCommandError` (QEMU error reply), `QmpTimeoutError`, `QmpAbortError`, or
   * `QmpDisconnectedError` (not connected, or the connection ended before the reply).
   * A timed-out or aborted command may still run in QEMU.
   */
  execute<T = unknown>(command: string, args?: Json, options: QmpExecuteOptions = {}): Promise<T> {
    if (typeof command !== 'string' || !COMMAND_NAME.test(command)) {
      throw new TypeError(`QMP command name must match ${String(COMMAND_NAME)}, got ${JSON.stringify(command)}`);
    }
    if (args !== undefined && (typeof args !== 'object' || args === null || Array.isArray(args))) {
      throw new TypeError(`QMP ${command}: arguments must be an object, got ${JSON.stringify(args)}`);
    }
    const timeoutMs = checkTimeoutMs('timeoutMs', options.timeoutMs ?? this.#defaultTimeoutMs);
    const id = `eve-diag:${++this.#nextId}`;
    let line: string;
    try {
      line = JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
    } catch (error) {
      // BigInt or a cycle in the arguments.
      throw new TypeError(`QMP ${command}: arguments are not JSON-serialisable: ${String(error)}`);
    }
    const lines = this.#lines;
    if (this.#state !== 'running' || lines === undefined) {
      return Promise.reject(new QmpDisconnectedError(`client is ${this.#state}`, { command }));
    }
    return new Promise<T>((resolve, reject) => {
      const entry: PendingCommand = {
        command,
        args,
        resolve: resolve as (value: unknown) => void,
        reject,
        dispose: () => undefined,
      };
      this.#pending.set(id, entry);
      entry.dispose = armGuard({
        timeoutMs,
        signal: options.signal,
        timers: this.#timers,
        onTimeout: () => {
          this.#pending.delete(id);
          reject(new QmpTimeoutError({ operation: command, command, timeoutMs }));
        },
        onAbort: (reason) => {
          this.#pending.delete(id);
          reject(new QmpAbortError(command, reason));
        },
      });
      if (!this.#pending.has(id)) return; // The signal was already aborted.
      this.#commandsSent += 1;
      // If the stream has ended this write is dropped; the read loop sees the end and rejects `entry`.
      lines.writeLine(line);
    });
  }

  /** Runs an HMP command line (`info version`, `xp /16xb 0x1000`) and returns its text output. */
  async hmp(commandLine: string, options: QmpHmpOptions = {}): Promise<string> {
    if (typeof commandLine !== 'string' || commandLine.length === 0) {
      throw new TypeError(`HMP command line must be a non-empty string, got ${JSON.stringify(commandLine)}`);
    }
    const { cpuIndex, ...executeOptions } = options;
    if (cpuIndex !== undefined && (!Number.isSafeInteger(cpuIndex) || cpuIndex < 0)) {
      throw new RangeError(`cpuIndex must be an integer >= 0, got ${String(cpuIndex)}`);
    }
    const args: Json = { 'command-line': commandLine };
    if (cpuIndex !== undefined) args['cpu-index'] = cpuIndex;
    const output = await this.execute('human-monitor-command', args, executeOptions);
    if (typeof output !== 'string') {
      throw new QmpProtocolError('bad-reply', 'human-monitor-command returned a non-string', {
        text: safeStringify(output),
      });
    }
    return output;
  }

  /** Same as `hmp()`. */
  humanMonitor(commandLine: string, options: QmpHmpOptions = {}): Promise<string> {
    return this.hmp(commandLine, options);
  }

  /** `query-status`. */
  async queryStatus(options: QmpExecuteOptions = {}): Promise<QmpStatus> {
    const reply = await this.execute('query-status', undefined, options);
    if (!isObject(reply) || typeof reply.running !== 'boolean' || typeof reply.status !== 'string') {
      throw new QmpProtocolError('bad-reply', 'query-status reply lacks running/status', {
        text: safeStringify(reply),
      });
    }
    const status: { running: boolean; status: string; singlestep?: boolean } = {
      running: reply.running,
      status: reply.status,
    };
    if (typeof reply.singlestep === 'boolean') status.singlestep = reply.singlestep;
    return status;
  }

  /**
   * `pmemsave`: QEMU writes `size` bytes of guest physical memory at `addr` to `filename` (a path on the
   * QEMU host, opened by QEMU itself).
   */
  async pmemsave(addr: number, size: number, filename: string, options: QmpExecuteOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(addr) || addr < 0) {
      throw new RangeError(`pmemsave: addr must be a safe integer >= 0, got ${String(addr)}`);
    }
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`pmemsave: size must be a safe integer >= 0, got ${String(size)}`);
    }
    if (typeof filename !== 'string' || filename.length === 0) {
      throw new TypeError(`pmemsave: filename must be a non-empty string, got ${JSON.stringify(filename)}`);
    }
    await this.execute('pmemsave', { val: addr, size, filename }, options);
  }

  /** `stop`: pause the vCPUs (QEMU emits STOP). */
  async stop(options: QmpExecuteOptions = {}): Promise<void> {
    await this.execute('stop', undefined, options);
  }

  /** `cont`: resume the vCPUs (QEMU emits RESUME). */
  async cont(options: QmpExecuteOptions = {}): Promise<void> {
    await this.execute('cont', undefined, options);
  }

  /** `system_reset`: hard reset (QEMU emits RESET). */
  async systemReset(options: QmpExecuteOptions = {}): Promise<void> {
    await this.execute('system_reset', undefined, options);
  }

  /**
   * `quit`: QEMU exits. Resolves on the reply or when the connection drops after the command was sent
   * (QEMU may close the socket before its reply is read).
   */
  async quit(options: QmpExecuteOptions = {}): Promise<void> {
    const sent = this.#state === 'running';
    try {
      await this.execute('quit', undefined, options);
    } catch (error) {
      if (sent && error instanceof QmpDisconnectedError) return;
      throw error;
    }
  }

  /**
   * Calls `listener` for each event named `names` (`'*'`: all), in order, one call at a time (an async
   * listener is awaited). The listener has its own queue (`eventQueueSize`; oldest dropped when full).
   * Returns the unsubscribe function. A listener that throws is reported to `onListenerError`.
   */
  on(names: QmpEventNames, listener: (event: QmpEvent) => void | Promise<void>): () => void {
    if (typeof listener !== 'function') {
      throw new TypeError(`QmpClient.on: listener must be a function, got ${typeof listener}`);
    }
    const subscription = this.events(names);
    // #pump never rejects: it reports its listener's errors to onListenerError and returns when the subscription ends.
    this.#pump(subscription, listener).catch(() => undefined);
    return () => subscription.close();
  }

  /**
   * A scoped listener, registered before this returns: an event caused by a command issued afterwards
   * cannot be missed. Iterate it with `for await` or call `get()`; `close()` it (or abort `signal`).
   */
  events(names: QmpEventNames, options: QmpEventListenerOptions = {}): QmpEventListener {
    const listenerOptions: QmpEventListenerOptions = { ...options };
    if (listenerOptions.maxQueue === undefined && this.#eventQueueSize !== undefined) {
      listenerOptions.maxQueue = this.#eventQueueSize;
    }
    return this.#hub.listen(names, listenerOptions);
  }

  /**
   * The next event `name` (passing `filter`). The listener is registered before this returns, so
   *
   *     const stopped = client.waitEvent('STOP');
   *     await client.stop();
   *     await stopped;
   *
   * cannot miss the event. Rejects with `QmpTimeoutError` (default timeout: the client's),
   * `QmpAbortError`, or `QmpDisconnectedError`. Handle its rejection even if the command fails.
   */
  waitEvent(name: string, options: QmpWaitEventOptions = {}): Promise<QmpEvent> {
    const timeoutMs = checkTimeoutMs('timeoutMs', options.timeoutMs ?? this.#defaultTimeoutMs);
    const listenerOptions: QmpEventListenerOptions = { maxQueue: 1 };
    if (options.filter !== undefined) listenerOptions.filter = options.filter;
    const listener = this.#hub.listen(name, listenerOptions);
    const getOptions = { timeoutMs, timers: this.#timers, ...(options.signal ? { signal: options.signal } : {}) };
    return listener.get(getOptions).finally(() => listener.close());
  }

  /**
   * Closes the connection: pending commands reject with `QmpDisconnectedError`, listeners end, the socket
   * is destroyed. While connecting, the connect is abandoned. Idempotent; resolves once closed.
   */
  async close(): Promise<void> {
    switch (this.#state) {
      case 'idle':
        this.#transition('closed');
        this.#hub.end(new QmpDisconnectedError('client closed'), true);
        this.#resolveClosed(undefined);
        break;
      case 'connecting':
        this.#handshake?.abort(new QmpDisconnectedError('client closed while connecting'));
        break;
      case 'running':
        await this.#shutdown(undefined);
        break;
      case 'disconnecting':
      case 'closed':
        break;
    }
    await this.#closed;
  }

  async #connect(
    connectTo: { path: string } | { host: string; port: number },
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const handshake = new AbortController();
    this.#handshake = handshake;
    let phase: QmpConnectPhase = 'socket';
    const disposeGuard = armGuard({
      timeoutMs,
      signal,
      timers: this.#timers,
      onTimeout: () => {
        const operation = phase === 'socket' ? 'socket connect' : phase === 'greeting' ? 'greeting' : 'qmp_capabilities';
        handshake.abort(new QmpTimeoutError({ operation, timeoutMs }));
      },
      onAbort: (reason) => handshake.abort(new QmpAbortError('connect', reason)),
    });
    // The line stream goes on the socket at once: it owns the socket's 'error' listener from the start.
    const socket = createConnection(connectTo);
    const lines = new LineStream(socket, this.#maxLineBytes === undefined ? {} : { maxLineBytes: this.#maxLineBytes });
    this.#lines = lines;
    try {
      await untilAborted(connected(socket), handshake.signal);

      phase = 'greeting';
      const first = await untilAborted(lines.readLine(), handshake.signal);
      if (first === null) throw this.#endError(lines.end, 'connection closed before the greeting');
      const greeting = parseGreeting(first);
      if (greeting instanceof QmpProtocolError) throw greeting;
      this.#greeting = greeting;

      phase = 'negotiation';
      // No capabilities requested: `oob` would allow out-of-order execution we do not need.
      const id = `eve-diag:${++this.#nextId}`;
      this.#commandsSent += 1;
      lines.writeLine(JSON.stringify({ execute: 'qmp_capabilities', id }));
      for (;;) {
        const line = await untilAborted(lines.readLine(), handshake.signal);
        if (line === null) throw this.#endError(lines.end, 'connection closed during capabilities negotiation');
        const message = parseMessage(line);
        if (message instanceof QmpProtocolError) throw message;
        if (message.kind === 'event') {
          this.#eventsReceived += 1;
          this.#hub.dispatch(message.event);
          continue;
        }
        if (message.id !== id) {
          throw new QmpProtocolError('bad-message', 'unexpected reply during capabilities negotiation', { text: line });
        }
        if (message.error !== undefined) {
          throw new QmpCommandError({ ...message.error, command: 'qmp_capabilities', args: undefined, id });
        }
        break;
      }
    } catch (error) {
      disposeGuard();
      this.#handshake = undefined;
      const aborted = handshake.signal.aborted;
      const reason: unknown = aborted ? handshake.signal.reason : error;
      // Only close() aborts the handshake with a QmpDisconnectedError.
      const closedByUser = aborted && reason instanceof QmpDisconnectedError;
      const failure = reason instanceof QmpAbortError ? reason : new QmpConnectError(this.#target, phase, reason);
      await lines.close();
      this.#transition('closed');
      this.#hub.end(new QmpDisconnectedError('connect failed', { cause: failure }), closedByUser);
      this.#resolveClosed(closedByUser ? undefined : failure);
      throw failure;
    }
    disposeGuard();
    this.#handshake = undefined;
    this.#transition('running');
    // The loop catches everything itself; a throw from #shutdown would be a bug with nothing left to close.
    this.#readLoop(lines).catch(() => undefined);
  }

  /** The session's read loop: it only ends by shutting the client down. It never rejects. */
  async #readLoop(lines: LineStream): Promise<void> {
    let reason: QmpError | undefined;
    try {
      for (;;) {
        const line = await lines.readLine();
        if (line === null) {
          reason = lines.end?.kind === 'closed' ? undefined : this.#endError(lines.end, 'connection closed by peer');
          break;
        }
        const problem = this.#handleLine(line);
        if (problem !== undefined) {
          reason = problem;
          break;
        }
      }
    } catch (error) {
      // Only a bug here can land in this branch; still end the session cleanly.
      reason = new QmpError(`QMP read loop failed: ${String(error)}`, { cause: error });
    }
    await this.#shutdown(reason);
  }

  /** Routes one line of the running session. Returns a protocol error that must end the session. */
  #handleLine(line: string): QmpProtocolError | undefined {
    const message = parseMessage(line);
    if (message instanceof QmpProtocolError) return message;
    if (message.kind === 'event') {
      this.#eventsReceived += 1;
      this.#hub.dispatch(message.event);
      return undefined;
    }
    const entry = this.#pending.get(message.id);
    if (entry === undefined) {
      // Its command timed out or was aborted: QEMU answered late.
      this.#lateReplies += 1;
      return undefined;
    }
    this.#pending.delete(message.id);
    entry.dispose();
    if (message.error !== undefined) {
      entry.reject(
        new QmpCommandError({ ...message.error, command: entry.command, args: entry.args, id: message.id }),
      );
    } else {
      entry.resolve(message.value);
    }
    return undefined;
  }

  /** running -> disconnecting -> closed. `reason` undefined: closed on purpose by `close()`. */
  async #shutdown(reason: QmpError | undefined): Promise<void> {
    if (this.#state !== 'running') {
      await this.#closed;
      return;
    }
    this.#transition('disconnecting');
    const message = reason === undefined ? 'client closed' : `connection lost: ${reason.message}`;
    for (const [id, entry] of this.#pending) {
      this.#pending.delete(id);
      entry.dispose();
      entry.reject(new QmpDisconnectedError(message, { command: entry.command, cause: reason }));
    }
    this.#hub.end(new QmpDisconnectedError(message, { cause: reason }), reason === undefined);
    await this.#lines?.close();
    this.#transition('closed');
    this.#resolveClosed(reason);
  }

  #endError(end: LineStreamEnd | undefined, message: string): QmpError {
    switch (end?.kind) {
      case 'overflow':
        return new QmpProtocolError(
          'line-too-long',
          `line longer than ${end.limit} bytes`,
          { text: end.head, lineBytes: end.receivedBytes },
        );
      case 'error':
        return new QmpDisconnectedError(`${message}: ${end.error.message}`, { cause: end.error });
      default:
        return new QmpDisconnectedError(message);
    }
  }

  #transition(to: QmpState): void {
    if (!TRANSITIONS[this.#state].includes(to)) {
      throw new Error(`QmpClient: illegal state transition ${this.#state} -> ${to}`);
    }
    this.#state = to;
  }

  async #pump(subscription: QmpEventListener, listener: (event: QmpEvent) => void | Promise<void>): Promise<void> {
    for (;;) {
      let event: QmpEvent;
      try {
        event = await subscription.get();
      } catch {
        return; // Unsubscribed or disconnected.
      }
      try {
        await listener(event);
      } catch (error) {
        try {
          this.#onListenerError(error, event);
        } catch {
          // The error reporter itself failed: nothing sensible is left to do with it.
        }
      }
    }
  }
}

/** For error excerpts of peer data: never throws (a 10^6-deep array overflows the stack of `JSON.stringify`). */
function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? typeof value;
  } catch {
    return `[unprintable ${typeof value}]`;
  }
}

function describeTarget(target: QmpTarget): {
  connectTo: { path: string } | { host: string; port: number };
  name: string;
} {
  if (isObject(target) && 'path' in target) {
    if (typeof target.path !== 'string' || target.path.length === 0) {
      throw new TypeError(`QMP target path must be a non-empty string, got ${JSON.stringify(target.path)}`);
    }
    return { connectTo: { path: target.path }, name: `unix:${target.path}` };
  }
  if (isObject(target) && 'host' in target && 'port' in target) {
    const { host, port } = target;
    if (typeof host !== 'string' || host.length === 0) {
      throw new TypeError(`QMP target host must be a non-empty string, got ${JSON.stringify(host)}`);
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`QMP target port must be 1..65535, got ${String(port)}`);
    }
    return { connectTo: { host, port }, name: `tcp:${host}:${port}` };
  }
  throw new TypeError(`QMP target must be { path } or { host, port }, got ${safeStringify(target)}`);
}

/** Resolves when `socket` connects, rejects with its error if it cannot. */
function connected(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      socket.off('connect', onConnect);
      reject(error);
    };
    const onConnect = (): void => {
      socket.off('error', onError);
      resolve();
    };
    socket.once('error', onError);
    socket.once('connect', onConnect);
  });
}

/** `promise`, or a rejection with `signal.reason` as soon as `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      settled = true;
      reject(signal.reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) reject(error);
      },
    );
  });
}
