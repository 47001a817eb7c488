import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A scriptable QMP server on a unix socket in a fresh temporary directory, behaving like QEMU 7.2's
 * monitor by default (greeting, `qmp_capabilities` required first, `CommandNotFound` for the rest), so
 * that the client is tested without QEMU (the node-serialport `MockBinding` idea). Scripts:
 *
 *     const server = await FakeQmpServer.start();
 *     server.handle('query-status', { return: { running: true, status: 'running' } });
 *     server.handle('stop', { return: {}, delayMs: 50 });
 *     server.handle('hang', { noReply: true });
 *     server.handle('x', (cmd) => ({ error: { class: 'GenericError', desc: `no ${cmd.execute}` } }));
 *     server.emitEvent('STOP');  server.sendRaw('garbage\n');  server.dropClient();
 *     await server.close();
 */

/** The greeting QEMU 7.2 sends (captured from `qemu-system-x86_64 -M none -qmp unix:...`). */
export const QEMU_7_2_GREETING = {
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
    capabilities: ['oob'],
  },
} as const;

export interface FakeQmpServerOptions {
  /** `true` (default): QEMU 7.2's greeting; `false`: none; an object: that greeting; a string: that raw line. */
  greeting?: boolean | Record<string, unknown> | string;
  /** Like QEMU, refuse commands before `qmp_capabilities` with CommandNotFound. Default true. */
  enforceNegotiation?: boolean;
  /** Listen on a unix socket in a temporary directory (default) or on 127.0.0.1, port 0. */
  transport?: 'unix' | 'tcp';
}

export type FakeReply =
  | { return: unknown; delayMs?: number }
  | { error: { class: string; desc: string }; delayMs?: number }
  /** Say nothing: the command stays pending (answer later with `reply()`). */
  | { noReply: true }
  /** Send this raw text instead of a reply (no newline added). */
  | { raw: string; delayMs?: number };

export type FakeHandler =
  | FakeReply
  | ((command: ReceivedCommand, server: FakeQmpServer) => FakeReply | Promise<FakeReply>);

export interface ReceivedCommand {
  readonly execute: string;
  readonly arguments: Record<string, unknown> | undefined;
  readonly id: unknown;
  /** The line as received. */
  readonly raw: string;
  /** Which connection sent it (1 for the first client). */
  readonly connection: number;
}

type Connection = { readonly socket: Socket; readonly number: number; negotiated: boolean };

export class FakeQmpServer {
  /** The unix socket path (for `tcp`, a path that does not exist). */
  readonly path: string;
  /** The TCP port (0 for a unix socket). */
  readonly port: number;
  readonly dir: string;
  /** Every command received, in order, `qmp_capabilities` included. */
  readonly received: ReceivedCommand[] = [];
  /** Lines that were not JSON commands. */
  readonly garbage: string[] = [];
  readonly #server: Server;
  readonly #options: FakeQmpServerOptions;
  readonly #handlers = new Map<string, FakeHandler>();
  readonly #connections = new Set<Connection>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #commandWaiters = new Set<() => void>();
  readonly #connectionWaiters = new Set<() => void>();
  #connectionCount = 0;
  #closed = false;

  private constructor(server: Server, dir: string, path: string, port: number, options: FakeQmpServerOptions) {
    this.#server = server;
    this.dir = dir;
    this.path = path;
    this.port = port;
    this.#options = options;
    server.on('connection', (socket) => this.#accept(socket));
  }

  static async start(options: FakeQmpServerOptions = {}): Promise<FakeQmpServer> {
    const dir = await mkdtemp(join(tmpdir(), 'fake-qmp-'));
    const path = join(dir, 'qmp.sock');
    const server = createServer();
    const tcp = options.transport === 'tcp';
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const listening = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (tcp) server.listen(0, '127.0.0.1', listening);
      else server.listen(path, listening);
    });
    const address = server.address();
    const port = tcp && typeof address === 'object' && address !== null ? address.port : 0;
    return new FakeQmpServer(server, dir, path, port, options);
  }

  /** What to pass to `QmpClient.connect`. */
  get target(): { path: string } | { host: string; port: number } {
    return this.port === 0 ? { path: this.path } : { host: '127.0.0.1', port: this.port };
  }

  /** Clients connected now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Clients that ever connected. */
  get acceptedCount(): number {
    return this.#connectionCount;
  }

  /** Sets how `command` is answered (replaces the previous handler). */
  handle(command: string, handler: FakeHandler): this {
    this.#handlers.set(command, handler);
    return this;
  }

  /** Resolves with the first command named `name` received at index >= `from`, now or later. */
  waitForCommand(name: string, from = 0): Promise<ReceivedCommand> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const found = this.received.slice(from).find((c) => c.execute === name);
        if (found === undefined) return false;
        this.#commandWaiters.delete(check);
        resolve(found);
        return true;
      };
      if (!check()) this.#commandWaiters.add(check);
    });
  }

  /** Resolves once at least `count` clients have ever connected. */
  waitForConnection(count = 1): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.#connectionCount >= count) {
          this.#connectionWaiters.delete(check);
          resolve();
        }
      };
      this.#connectionWaiters.add(check);
      check();
    });
  }

  /** Answers a command by id (for commands held with `{ noReply: true }`), on every connection. */
  reply(id: unknown, reply: { return: unknown } | { error: { class: string; desc: string } }): void {
    this.#broadcast(`${JSON.stringify({ ...reply, id })}\r\n`);
  }

  /** Sends an event to every client, shaped like QEMU's (`timestamp` first, `data` only if given). */
  emitEvent(name: string, data?: Record<string, unknown>): void {
    const now = Date.now();
    const timestamp = { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 };
    const event = data === undefined ? { timestamp, event: name } : { timestamp, event: name, data };
    this.#broadcast(`${JSON.stringify(event)}\r\n`);
  }

  /** Writes `data` as is (no newline added) to every client; resolves when it is handed to the kernel. */
  async sendRaw(data: string | Buffer): Promise<void> {
    await Promise.all(
      [...this.#connections].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.socket.destroyed) resolve();
            else c.socket.write(data, () => resolve());
          }),
      ),
    );
  }

  /**
   * Writes `byte` without ever a newline to the first client, chunk by chunk and honouring
   * backpressure, until the client goes away or `maxBytes` were written. Returns the bytes written.
   */
  async flood(options: { maxBytes: number; chunkBytes?: number; byte?: string }): Promise<number> {
    const connection = [...this.#connections][0];
    if (connection === undefined) throw new Error('FakeQmpServer.flood: no client connected');
    const { socket } = connection;
    const chunk = Buffer.alloc(options.chunkBytes ?? 64 * 1024, options.byte ?? 'A');
    let written = 0;
    while (written < options.maxBytes && !socket.destroyed && socket.writable) {
      const more = socket.write(chunk);
      written += chunk.length;
      if (!more) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            socket.off('drain', done);
            socket.off('close', done);
            resolve();
          };
          socket.on('drain', done);
          socket.on('close', done);
        });
      }
    }
    return written;
  }

  /** Destroys every client connection (the server keeps listening). */
  dropClient(): void {
    for (const c of this.#connections) c.socket.destroy();
  }

  /** Stops listening, drops clients, cancels delayed replies, removes the temporary directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.dropClient();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  #accept(socket: Socket): void {
    this.#connectionCount += 1;
    const connection: Connection = { socket, number: this.#connectionCount, negotiated: false };
    this.#connections.add(connection);
    socket.on('error', () => undefined); // The client may vanish at any time; that is the point.
    socket.on('close', () => this.#connections.delete(connection));
    let partial = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      partial += chunk;
      let newline: number;
      while ((newline = partial.indexOf('\n')) !== -1) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        this.#onLine(connection, line);
      }
    });
    const greeting = this.#options.greeting ?? true;
    if (greeting === true) socket.write(`${JSON.stringify(QEMU_7_2_GREETING)}\r\n`);
    else if (typeof greeting === 'string') socket.write(greeting);
    else if (greeting !== false) socket.write(`${JSON.stringify(greeting)}\r\n`);
    for (const waiter of [...this.#connectionWaiters]) waiter();
  }

  #onLine(connection: Connection, line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.garbage.push(line);
      return;
    }
    if (typeof message !== 'object' || message === null || typeof (message as { execute?: unknown }).execute !== 'string') {
      this.garbage.push(line);
      return;
    }
    const { execute, arguments: args, id } = message as { execute: string; arguments?: Record<string, unknown>; id?: unknown };
    const command: ReceivedCommand = { execute, arguments: args, id, raw: line, connection: connection.number };
    this.received.push(command);
    for (const waiter of [...this.#commandWaiters]) waiter();

    if (execute === 'qmp_capabilities' && !this.#handlers.has(execute)) {
      connection.negotiated = true;
      this.#send(connection, { return: {} }, id);
      return;
    }
    if (!connection.negotiated && execute !== 'qmp_capabilities' && (this.#options.enforceNegotiation ?? true)) {
      this.#send(
        connection,
        { error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" } },
        id,
      );
      return;
    }
    if (execute === 'qmp_capabilities') connection.negotiated = true;
    const handler = this.#handlers.get(execute) ?? {
      error: { class: 'CommandNotFound', desc: `The command ${execute} has not been found` },
    };
    // A handler that throws is a test bug: answer it as QEMU would answer a failed command.
    Promise.resolve(typeof handler === 'function' ? handler(command, this) : handler).then(
      (reply) => this.#send(connection, reply, id),
      (e: unknown) => this.#send(connection, { error: { class: 'GenericError', desc: `fake handler threw: ${String(e)}` } }, id),
    );
  }

  #send(connection: Connection, reply: FakeReply, id: unknown): void {
    if ('noReply' in reply) return;
    const write = (): void => {
      if (connection.socket.destroyed) return;
      if ('raw' in reply) connection.socket.write(reply.raw);
      else connection.socket.write(`${JSON.stringify({ ...reply, delayMs: undefined, id })}\r\n`);
    };
    const delayMs = reply.delayMs ?? 0;
    if (delayMs <= 0) {
      write();
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      write();
    }, delayMs);
    this.#timers.add(timer);
  }

  #broadcast(text: string): void {
    for (const c of this.#connections) if (!c.socket.destroyed) c.socket.write(text);
  }
}

/**
 * Answers `pmemsave` like QEMU over a guest RAM that is zero except for `table()` at guest address
 * `at`: the file gets the overlap of [val, val + size) with the table. `table` is read at each command,
 * so a test may beat it in between.
 */
export function servePmemsave(server: FakeQmpServer, at: number, table: () => Uint8Array): FakeQmpServer {
  return server.handle('pmemsave', async (c) => {
    const { val, size, filename } = c.arguments as { val: number; size: number; filename: string };
    const t = table();
    const out = new Uint8Array(size);
    const from = Math.max(val, at);
    const to = Math.min(val + size, at + t.length);
    if (from < to) out.set(t.subarray(from - at, to - at), from - val);
    await writeFile(filename, out);
    return { return: {} };
  });
}
