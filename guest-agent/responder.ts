import { close as closeFdCb, constants, createReadStream, createWriteStream, fstatSync, open as openFd, read as readFd, write as writeFd, writev as writevFd } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { errText, type Log } from './log.js';
import { LineSplitter, reply } from '../protocol/agent-ping.js';
import type { ProcStats } from './procstat.js';

/**
 * The optional responder on a serial or virtio-serial port (`/dev/ttyS1`, `/dev/virtio-ports/NAME`):
 * it answers the host's `PING <n>` with `PONG <n> uptime=... load=...` (protocol/agent-ping.ts).
 * Nothing is queued: a reply that cannot be written at once (the port is full) is dropped.
 */
/**
 * Serves the protocol over a pair of streams until `input` ends or errors. Returns a function that
 * stops serving (it removes the listeners; the caller owns the streams).
 */
export function serveLines(
  input: Readable,
  output: Writable,
  readStats: () => Promise<Pick<ProcStats, 'uptime' | 'load'>>,
  onEnd: (why: string) => void = () => undefined,
): () => void {
  const splitter = new LineSplitter();
  let pending = 0; // replies being prepared (stats reads); bounded below
  let blocked = false; // the output asked us to wait for 'drain'
  const onDrain = () => (blocked = false);
  const onData = (chunk: Buffer | string) => {
    const lines = splitter.push(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk);
    for (const line of lines) {
      if (reply(line, { uptime: '', load: '' }) === undefined || pending >= 4) continue;
      pending++;
      void readStats()
        .then((stats) => {
          const text = reply(line, stats);
          if (text !== undefined && !blocked && output.writable) blocked = !output.write(`${text}\n`);
        })
        .catch(() => undefined)
        .finally(() => pending--);
    }
  };
  let ended = false;
  const end = (why: string) => {
    if (ended) return;
    ended = true;
    onEnd(why);
  };
  const onClose = () => end('closed');
  const onError = (e: Error) => end(errText(e));
  input.on('data', onData);
  input.once('end', onClose);
  input.once('error', onError);
  output.on('drain', onDrain);
  output.on('error', onError);
  return () => {
    input.off('data', onData);
    input.off('end', onClose);
    input.off('error', onError);
    output.off('drain', onDrain);
    output.off('error', onError);
  };
}

export interface Port {
  input: Readable;
  output: Writable;
  /**
   * `chardev`: a plain character device (a virtio-serial port), where end of file only means the host
   * end is not connected right now (Linux's virtio_console returns 0 then); `stream`: a tty, FIFO or
   * socket, where it means the port went away.
   */
  kind: 'stream' | 'chardev';
  close(): void;
}

/**
 * Opens a port path for the line protocol. A tty (`/dev/ttyS1`, a pty) goes to raw mode, so that
 * the line discipline neither echoes the host's PING back nor eats control characters. A FIFO or
 * socket is a non-blocking stream; a virtio-serial port (a plain character device) is read and
 * written through file streams (the read holds one libuv pool thread while it waits).
 */
export async function openPort(path: string): Promise<Port> {
  // A plain fd, not a FileHandle: the streams below own it (a FileHandle would close it when collected).
  const fd = await new Promise<number>((resolve, reject) =>
    openFd(path, constants.O_RDWR | constants.O_NOCTTY, (err, n) => (err ? reject(err) : resolve(n))),
  );
  const closeFd = () => closeFdCb(fd, () => undefined);
  try {
    // node:tty on demand: only a responder on a tty needs it.
    const { isatty, ReadStream: TtyReadStream } = await import('node:tty');
    if (isatty(fd)) {
      const tty = new TtyReadStream(fd);
      tty.setRawMode(true);
      // A tty stream is a net.Socket over the tty handle: it writes too, and closes the fd.
      const sock = tty as unknown as Socket;
      return { input: tty, output: sock, kind: 'stream', close: () => sock.destroy() };
    }
    const st = fstatSync(fd);
    if (st.isFIFO() || st.isSocket()) {
      const sock = new Socket({ fd, readable: true, writable: true });
      return { input: sock, output: sock, kind: 'stream', close: () => sock.destroy() };
    }
  } catch (e) {
    closeFd();
    throw e;
  }
  // The fd is closed once, by close() below. A file stream closes its fd when destroyed, autoClose or
  // not, and a read stream with a read in flight does it when that read returns: two streams on one fd
  // would close it twice more, the later closes hitting whatever file got the number meanwhile (the
  // agent's config file, read with EBADF on SIGHUP). So the streams get a close that does nothing.
  const keepFd = (_fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => cb(null);
  const input = createReadStream('', { fd, autoClose: false, highWaterMark: 256, fs: { open: openFd, read: readFd, close: keepFd } });
  const output = createWriteStream('', { fd, autoClose: false, highWaterMark: 256, fs: { open: openFd, write: writeFd, writev: writevFd, close: keepFd } });
  return {
    input,
    output,
    kind: 'chardev',
    close: () => {
      // A read or write still in flight fails with EBADF once the fd is closed: nobody listens any more,
      // and an 'error' with no listener would be an uncaught exception.
      input.on('error', () => undefined);
      output.on('error', () => undefined);
      input.destroy();
      output.destroy();
      closeFd();
    },
  };
}

/** How soon a virtio-serial port is read again after its host end went away. */
export const HOST_GONE_RETRY_MS = 1000;

export interface ResponderDeps {
  openPort(path: string): Promise<Port>;
  readStats(): Promise<ProcStats>;
  log: Log;
  /** Schedules the reopen after a failure (injected time). */
  later(fn: () => void, ms: number): () => void;
}

/**
 * Keeps the port open and served: a missing port or a port that closes is logged once and opened
 * again every `retryMs`.
 */
export class Responder {
  #port: Port | undefined;
  #stopServing: (() => void) | undefined;
  #cancelRetry: (() => void) | undefined;
  #stopped = false;

  constructor(
    readonly path: string,
    readonly retryMs: number,
    private readonly deps: ResponderDeps,
  ) {}

  get open(): boolean {
    return this.#port !== undefined;
  }

  async start(): Promise<void> {
    this.#stopped = false;
    await this.#open();
  }

  async #open(quiet = false): Promise<void> {
    const { log } = this.deps;
    if (this.#stopped) return;
    let port: Port;
    try {
      port = await this.deps.openPort(this.path);
    } catch (e) {
      log.problem('responder', `responder: cannot open ${this.path} (${errText(e)}); trying again every ${Math.round(this.retryMs / 1000)} s`);
      this.#retry();
      return;
    }
    if (this.#stopped) {
      port.close();
      return;
    }
    this.#port = port;
    if (log.has('responder')) log.resolved('responder', `responder: serving ${this.path}`);
    else if (!quiet) log.info(`responder: serving ${this.path}`);
    this.#stopServing = serveLines(port.input, port.output, this.deps.readStats, (why) => {
      this.#closePort();
      if (port.kind === 'chardev' && why === 'closed') {
        // virtio-serial: the host end disconnected (a probe connects per PING). Not a problem: read
        // again soon, without a word, so the next PING is answered.
        this.#retry(HOST_GONE_RETRY_MS, true);
        return;
      }
      log.problem('responder', `responder: ${this.path} ${why}; opening it again every ${Math.round(this.retryMs / 1000)} s`);
      this.#retry();
    });
  }

  #retry(ms = this.retryMs, quiet = false): void {
    if (this.#stopped || this.#cancelRetry !== undefined) return;
    this.#cancelRetry = this.deps.later(() => {
      this.#cancelRetry = undefined;
      this.#open(quiet).catch((e: unknown) => this.deps.log.problem('responder:bug', `responder: ${errText(e)}`));
    }, ms);
  }

  #closePort(): void {
    this.#stopServing?.();
    this.#stopServing = undefined;
    this.#port?.close();
    this.#port = undefined;
  }

  stop(): void {
    this.#stopped = true;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    this.#closePort();
  }
}
