import { createConnection } from 'node:net';
import { realClock } from '../../util/clock.js';
import { ConsoleAbortError, ConsoleConnectError, ConsoleError, ConsoleTimeoutError } from './errors.js';

/**
 * Sends bytes to the console chardev socket. The socket is for sending only: the console is read from its
 * logfile (DESIGN fact 8). Three rules follow from how QEMU serves it:
 * - it takes one client at a time, and a connected client holds off everyone else (`eve app console`):
 *   connect, send, disconnect promptly;
 * - once connected, QEMU writes every console byte to the client, and a client that does not read holds
 *   up large output (a SysRq `t` dump): the socket is read (and the bytes discarded) the whole time;
 * - everything is bounded: the connection lasts at most `timeoutMs`, and only `keepBytes` received
 *   bytes are kept.
 */

/** One step of what is sent: bytes, or a pause. */
export type ConsoleWrite = string | Uint8Array | { readonly pauseMs: number };

export interface SendOptions {
  /** The whole session (connect, writes, pauses, linger) must end within this. Default 5000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** After the last write, keep reading this long before disconnecting. Default 100 ms. */
  lingerMs?: number;
  /** Received bytes kept in the result (the rest is read and dropped). Default 0. */
  keepBytes?: number;
}

export interface SendResult {
  bytesWritten: number;
  /** Bytes QEMU sent while connected (all read, `keepBytes` kept). */
  bytesReceived: number;
  /** The first `keepBytes` received bytes. */
  received: Buffer;
  durationMs: number;
}

/**
 * Connects to the console socket at `path`, writes `writes` in order (each one flushed to the kernel
 * before the next step), lingers, and disconnects. Rejects with `ConsoleConnectError`,
 * `ConsoleTimeoutError`, `ConsoleAbortError` or `ConsoleError` (the peer closed); the socket is destroyed
 * on every path.
 *
 * Note that QEMU serves one client at a time and a second client's connect still succeeds (it waits in
 * the listen backlog, and QEMU 7.2 never reads what it sent, checked here): when another client may be
 * connected, ask QMP first (`findConsoleChardev` in sysrq.ts).
 */
export async function sendToConsole(path: string, writes: readonly ConsoleWrite[], options: SendOptions = {}): Promise<SendResult> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new TypeError(`sendToConsole: path must be a non-empty string, got ${JSON.stringify(path)}`);
  }
  const timeoutMs = options.timeoutMs ?? 5000;
  const lingerMs = options.lingerMs ?? 100;
  const keepBytes = options.keepBytes ?? 0;
  if (!(timeoutMs >= 0)) throw new RangeError(`sendToConsole: timeoutMs must be >= 0, got ${String(timeoutMs)}`);
  if (!(lingerMs >= 0)) throw new RangeError(`sendToConsole: lingerMs must be >= 0, got ${String(lingerMs)}`);
  if (!Number.isSafeInteger(keepBytes) || keepBytes < 0) {
    throw new RangeError(`sendToConsole: keepBytes must be an integer >= 0, got ${String(keepBytes)}`);
  }
  for (const w of writes) {
    if (typeof w === 'string' || w instanceof Uint8Array) continue;
    if (typeof w !== 'object' || w === null || !(w.pauseMs >= 0)) {
      throw new TypeError(`sendToConsole: a write must be a string, bytes or { pauseMs >= 0 }, got ${String(w)}`);
    }
  }
  const clock = realClock; // real time: the other end is a real socket
  const started = clock.now();

  // One controller ends the session: the deadline, the caller's signal, or the peer going away.
  const session = new AbortController();
  const onCallerAbort = (): void => session.abort(new ConsoleAbortError('console send', options.signal?.reason));
  if (options.signal?.aborted) onCallerAbort();
  else options.signal?.addEventListener('abort', onCallerAbort, { once: true });
  const deadline = setTimeout(() => session.abort(new ConsoleTimeoutError(`console send to ${path}`, timeoutMs)), timeoutMs);

  const socket = createConnection({ path });
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let bytesReceived = 0;
  let bytesWritten = 0;
  socket.on('data', (chunk: Buffer) => {
    bytesReceived += chunk.length;
    if (keptBytes < keepBytes) {
      const part = chunk.subarray(0, keepBytes - keptBytes);
      kept.push(part);
      keptBytes += part.length;
    }
  });
  let connectedOnce = false;
  socket.on('error', (error) => {
    session.abort(connectedOnce ? new ConsoleError(`console socket ${path}: ${error.message}`, { cause: error }) : new ConsoleConnectError(path, error));
  });
  const peerClosed = new ConsoleError(`console socket ${path} closed by QEMU`);
  socket.on('close', () => {
    if (connectedOnce) session.abort(peerClosed);
  });
  const onSessionEnd = (): void => {
    socket.destroy();
  };
  session.signal.addEventListener('abort', onSessionEnd, { once: true });

  try {
    await untilEnd(
      new Promise<void>((resolve) => socket.once('connect', () => resolve())),
      session.signal,
    );
    connectedOnce = true;
    for (const w of writes) {
      if (typeof w === 'string' || w instanceof Uint8Array) {
        const bytes = typeof w === 'string' ? Buffer.from(w, 'utf8') : w;
        await untilEnd(
          new Promise<void>((resolve, reject) => socket.write(bytes, (error) => (error ? reject(error) : resolve()))),
          session.signal,
        );
        bytesWritten += bytes.length;
      } else if (w.pauseMs > 0) {
        await clock.sleep(w.pauseMs, session.signal).catch(() => undefined);
        if (session.signal.aborted) throw session.signal.reason;
      }
    }
    if (lingerMs > 0) {
      await clock.sleep(lingerMs, session.signal).catch(() => undefined);
      // The peer closing during the linger is fine: everything was written.
      if (session.signal.aborted && session.signal.reason !== peerClosed) throw session.signal.reason;
    } else if (session.signal.aborted) {
      throw session.signal.reason;
    }
    return {
      bytesWritten,
      bytesReceived,
      received: Buffer.concat(kept, keptBytes),
      durationMs: clock.now() - started,
    };
  } catch (error) {
    if (error instanceof ConsoleError) throw error;
    throw new ConsoleError(`console send to ${path} failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
  } finally {
    clearTimeout(deadline);
    options.signal?.removeEventListener('abort', onCallerAbort);
    session.signal.removeEventListener('abort', onSessionEnd);
    socket.destroy();
  }
}

/** `promise`, or a rejection with the session's end reason as soon as it ends. */
function untilEnd<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
