/**
 * A QMP socket for a libvirt domain: eve-diag's QMP client (and everything built on it: the run
 * state, procmem's gpa2hva, the collectors) connects to a unix socket in a private directory, and
 * the bridge passes each command to the domain's QEMU through libvirt (`LibvirtLink.qmp`, i.e. virsh
 * qemu-monitor-command) and each QEMU event back (qemu-monitor-event). libvirt owns QEMU's monitor;
 * this never opens it.
 *
 * It speaks QMP as QEMU does (qmp-spec.rst): a greeting with QEMU's version (query-version through
 * libvirt), `qmp_capabilities` first, replies in order with the client's `id`, events to every
 * negotiated client. And it is there only while QEMU is: the socket is bound while the domain runs and
 * removed when libvirt says it stopped (its lifecycle event, or a command refused with "domain is not
 * running"), its connections closed, so a client sees what it sees when QEMU exits (ENOENT: the VM is
 * not running); it is bound again when libvirt says the domain started. Events that QEMU sends while
 * virsh's event stream is being restarted (libvirtd restarting) are lost; the bridge then asks libvirt
 * whether the domain runs, and the client re-reads the run state with query-status, as after any
 * reconnect.
 */
import { mkdir, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { LineStream } from '../qmp/line-stream.js';
import { addBridgedSocket, removeBridgedSocket } from './bridged-sockets.js';
import { isObject, jsonNestsDeeper } from '../qmp/messages.js';
import { LibvirtError, type LibvirtLink, type QmpReplyBody } from './virsh.js';

/** Longest line a client may send (our own client sends commands of a few hundred bytes). */
const MAX_CLIENT_LINE_BYTES = 1024 * 1024;
const MAX_PENDING_COMMANDS = 64;
const WATCH_RESTART_MS = 1000;

export interface QmpBridgeOptions {
  link: LibvirtLink;
  /** A directory of ours (created 0700 if missing); the socket is `<dir>/qmp`. */
  dir: string;
  /** Bound on each command through libvirt. Default 30 s. */
  commandTimeoutMs?: number;
  /** Wait before following the events again after virsh's stream ended. Default 1 s. */
  watchRestartMs?: number;
  log?: (level: 'info' | 'warn', msg: string) => void;
}

interface Conn {
  socket: Socket;
  negotiated: boolean;
  pending: number;
  chain: Promise<void>;
}

export class LibvirtQmpBridge {
  readonly path: string;
  readonly #o: QmpBridgeOptions;
  #server: Server | undefined;
  /** Serializes binding and unbinding the socket. */
  #binding: Promise<void> = Promise.resolve();
  readonly #conns = new Set<Conn>();
  #watch: { stop(): void } | undefined;
  #restart: NodeJS.Timeout | undefined;
  #closed = false;
  #unreachable: string | undefined;
  /** Events passed to clients, stream restarts, connections: for logs and tests. */
  readonly stats = { events: 0, watchRestarts: 0, connections: 0 };

  private constructor(o: QmpBridgeOptions) {
    this.#o = o;
    this.path = join(o.dir, 'qmp');
  }

  /** Starts following the domain's events; the socket `<dir>/qmp` is bound if the domain runs. */
  static async open(o: QmpBridgeOptions): Promise<LibvirtQmpBridge> {
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const bridge = new LibvirtQmpBridge(o);
    await rm(bridge.path, { force: true });
    addBridgedSocket(bridge.path);
    bridge.#startWatch();
    await bridge.#sync();
    return bridge;
  }

  /** libvirt's reason the domain's QEMU was not reached at the last check (open, a stream restart); undefined if it was. */
  get unreachable(): string | undefined {
    return this.#unreachable;
  }

  /** Whether the socket is bound now (the domain ran when last seen). */
  get listening(): boolean {
    return this.#server !== undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#restart);
    this.#watch?.stop();
    await this.#setListening(false);
    removeBridgedSocket(this.path);
  }

  /** Whether libvirt reaches the domain's QEMU now: undefined if so, else libvirt's reason. */
  async check(): Promise<string | undefined> {
    try {
      const v = await this.#o.link.qmp({ execute: 'query-version' }, this.#timeout());
      return 'return' in v ? undefined : `query-version: ${v.error.desc}`;
    } catch (e) {
      return (e as Error).message;
    }
  }

  /** Binds or unbinds the socket by whether the domain runs now. */
  async #sync(): Promise<void> {
    this.#unreachable = await this.check();
    await this.#setListening(this.#unreachable === undefined);
  }

  #setListening(on: boolean): Promise<void> {
    this.#binding = this.#binding.catch(() => undefined).then(async () => {
      if (on && !this.#closed && this.#server === undefined) {
        const server = createServer((socket) => this.#accept(socket));
        await rm(this.path, { force: true });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(this.path, () => {
            server.off('error', reject);
            resolve();
          });
        });
        this.#server = server;
      } else if ((!on || this.#closed) && this.#server !== undefined) {
        const server = this.#server;
        this.#server = undefined;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const c of this.#conns) c.socket.destroy();
        await closed;
        await rm(this.path, { force: true });
      }
    });
    return this.#binding;
  }

  #startWatch(): void {
    if (this.#closed) return;
    this.#watch = this.#o.link.watch({
      onEvent: (e) => {
        this.stats.events += 1;
        const line = `${JSON.stringify({ event: e.event, data: e.data, timestamp: e.timestamp ?? { seconds: 0, microseconds: 0 } })}\r\n`;
        for (const c of this.#conns) if (c.negotiated) c.socket.write(line);
      },
      onLifecycle: (e) => {
        if (e.kind === 'Stopped') this.#dropAll(`libvirt: domain stopped (${e.detail})`);
        else if (e.kind === 'Started') void this.#setListening(true).catch((err: unknown) => this.#o.log?.('warn', `${this.#o.link.ref.domain}: cannot bind ${this.path}: ${(err as Error).message}`));
      },
      onExit: (stream, detail) => {
        if (this.#closed) return;
        const wait = this.#o.watchRestartMs ?? WATCH_RESTART_MS;
        this.#o.log?.('warn', `${this.#o.link.ref.domain}: ${stream} stream: ${detail}; restarting in ${wait} ms`);
        this.#watch?.stop();
        this.#watch = undefined;
        clearTimeout(this.#restart);
        this.#restart = setTimeout(() => {
          this.stats.watchRestarts += 1;
          this.#startWatch();
          // What happened while nobody was watching: the domain may have stopped or started.
          void this.#sync().catch(() => undefined);
        }, wait);
        this.#restart.unref();
      },
    });
  }

  /** The domain stopped: its socket goes, as QEMU's would. */
  #dropAll(why: string): void {
    this.#o.log?.('info', `${this.#o.link.ref.domain}: ${why}: removing the QMP socket${this.#conns.size > 0 ? `, closing ${this.#conns.size} connection(s)` : ''}`);
    void this.#setListening(false).catch(() => undefined);
  }

  #accept(socket: Socket): void {
    if (this.#closed) return void socket.destroy();
    this.stats.connections += 1;
    const conn: Conn = { socket, negotiated: false, pending: 0, chain: Promise.resolve() };
    this.#conns.add(conn);
    socket.on('close', () => this.#conns.delete(conn));
    socket.on('error', () => undefined);
    const lines = new LineStream(socket, { maxLineBytes: MAX_CLIENT_LINE_BYTES });
    (async () => {
      let version: QmpReplyBody;
      try {
        version = await this.#o.link.qmp({ execute: 'query-version' }, this.#timeout());
      } catch {
        // Not running, or libvirt unreachable: no QEMU to greet for.
        return socket.destroy();
      }
      if (!('return' in version) || !isObject(version.return)) return socket.destroy();
      socket.write(`${JSON.stringify({ QMP: { version: version.return, capabilities: [] } })}\r\n`);
      for (;;) {
        const line = await lines.readLine();
        if (line === null) break;
        if (conn.pending >= MAX_PENDING_COMMANDS) {
          this.#reply(conn, undefined, { error: { class: 'GenericError', desc: `more than ${MAX_PENDING_COMMANDS} commands pending` } });
          continue;
        }
        conn.pending += 1;
        conn.chain = conn.chain
          .then(() => this.#handle(conn, line))
          .catch(() => void socket.destroy())
          .finally(() => (conn.pending -= 1));
      }
    })().catch(() => socket.destroy());
  }

  #timeout(): { timeoutMs: number } {
    return { timeoutMs: this.#o.commandTimeoutMs ?? 30_000 };
  }

  #reply(conn: Conn, id: unknown, body: QmpReplyBody): void {
    conn.socket.write(`${JSON.stringify(id === undefined ? body : { ...body, id })}\r\n`);
  }

  async #handle(conn: Conn, line: string): Promise<void> {
    if (line.trim() === '') return;
    let msg: unknown;
    try {
      if (jsonNestsDeeper(line)) throw new Error('nested too deep');
      msg = JSON.parse(line);
    } catch {
      return this.#reply(conn, undefined, { error: { class: 'GenericError', desc: 'JSON parse error' } });
    }
    if (!isObject(msg) || typeof msg.execute !== 'string') return this.#reply(conn, undefined, { error: { class: 'GenericError', desc: 'QMP input must be a JSON object with execute' } });
    const id = msg.id;
    const args = msg.arguments;
    if (args !== undefined && !isObject(args)) return this.#reply(conn, id, { error: { class: 'GenericError', desc: "QMP input member 'arguments' must be an object" } });
    if (msg.execute === 'qmp_capabilities') {
      if (conn.negotiated) return this.#reply(conn, id, { error: { class: 'CommandNotFound', desc: 'Capabilities negotiation is already complete, command ignored' } });
      conn.negotiated = true;
      return this.#reply(conn, id, { return: {} });
    }
    if (!conn.negotiated) return this.#reply(conn, id, { error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" } });
    try {
      const body = await this.#o.link.qmp({ execute: msg.execute, ...(args !== undefined ? { arguments: args } : {}) }, this.#timeout());
      this.#reply(conn, id, body);
    } catch (e) {
      if (e instanceof LibvirtError && e.notRunning) {
        this.#dropAll('libvirt: domain is not running');
        return;
      }
      this.#reply(conn, id, { error: { class: 'GenericError', desc: (e as Error).message } });
    }
  }
}
