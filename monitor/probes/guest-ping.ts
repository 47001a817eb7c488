import type { Socket } from 'node:net';
import { ByteBuffer } from '../../util/byte-buffer.js';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { connectSocket, deadline, deadlineResult, errnoCode, errorText, failure, success, unknown, Waiters } from './common.js';

/**
 * `guest-ping`: qemu-guest-agent over its host chardev socket (KubeVirt's guestAgentPing, Masakari's
 * introspective monitor). QGA speaks QMP-like JSON lines but has no greeting and no negotiation, and
 * its channel keeps whatever a previous client left half-sent. So, per QGA's own documentation of
 * `guest-sync-delimited`: send 0xFF (the agent's parser resets on it), then
 * `guest-sync-delimited {id}`; the agent answers 0xFF followed by `{"return": id}`. Everything
 * before the sentinel and any stale reply with another id is dropped. Then `guest-ping` must return
 * `{}`. The socket takes one client at a time: connect, talk, disconnect.
 */

export interface GuestPingParams {
  /** Most bytes accepted before the replies (a chatty or broken channel). Default 65536. */
  maxBytes?: number;
}

export class GuestPingProbe implements Probe {
  readonly kind = 'guest-ping';
  #nextId = Math.floor(Math.random() * 1e9);
  readonly #maxBytes: number;

  constructor(params: GuestPingParams = {}) {
    this.#maxBytes = params.maxBytes ?? 65536;
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes < 64) throw new RangeError(`maxBytes: an integer >= 64 (got ${this.#maxBytes})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    if (target.qga === undefined) return unknown('no qemu-guest-agent socket configured');
    const d = deadline(opts.signal, opts.timeoutMs);
    const id = this.#nextId++ % 2 ** 31;
    let channel: QgaChannel | undefined;
    let step = 'connect';
    const t0 = performance.now();
    try {
      channel = await QgaChannel.open(target.qga, this.#maxBytes, d.signal);
      step = 'guest-sync-delimited';
      channel.write(Buffer.from([0xff]));
      channel.write(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`);
      await channel.waitSentinel(d.signal);
      for (;;) {
        const m = await channel.nextMessage(d.signal);
        if (m.return === id) break; // an older client's reply otherwise
      }
      step = 'guest-ping';
      channel.write(`${JSON.stringify({ execute: 'guest-ping' })}\n`);
      const pong = await channel.nextMessage(d.signal);
      const ms = Math.round(performance.now() - t0);
      if ('error' in pong) return failure(`guest-ping: ${JSON.stringify(pong.error)}`, { qga: target.qga, error: pong.error });
      return success(`qemu-guest-agent answered in ${ms} ms`, { qga: target.qga, ms });
    } catch (e) {
      if (d.signal.aborted) {
        const r = deadlineResult(d, opts.timeoutMs, `qemu-guest-agent ${step}`, { qga: target.qga, step });
        // Silence on a connected channel: no agent runs in the guest, or the guest is hung.
        return r.outcome === 'failure' && step !== 'connect' ? { ...r, detail: `${r.detail} (no agent answer)` } : r;
      }
      const code = errnoCode(e);
      return failure(`qemu-guest-agent ${target.qga}: ${errorText(e)}`, { qga: target.qga, step, error: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
      channel?.close();
    }
  }
}

type Message = Record<string, unknown>;

class QgaChannel {
  readonly #buf: ByteBuffer;
  #end: Error | undefined;
  readonly #waiters = new Waiters(() => this.#end);

  private constructor(
    private readonly socket: Socket,
    maxBytes: number,
  ) {
    this.#buf = new ByteBuffer(maxBytes);
    socket.on('data', (b: Buffer) => {
      if (this.#end !== undefined) return;
      // At most maxBytes from the guest per conversation (held or already skipped): past it nothing more
      // is held and the channel stops being read.
      if (!this.#buf.push(b) || this.#buf.received > maxBytes) {
        this.#end = new Error(`more than ${maxBytes} bytes without a reply`);
        socket.destroy();
      }
      this.#waiters.wake();
    });
    socket.on('close', () => {
      this.#end ??= new Error('the channel closed');
      this.#waiters.wake();
    });
    socket.on('error', () => undefined); // 'close' follows
  }

  static async open(path: string, maxBytes: number, signal: AbortSignal): Promise<QgaChannel> {
    return new QgaChannel(await connectSocket({ path }, signal), maxBytes);
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Drops everything up to and including the 0xFF sentinel. */
  waitSentinel(signal: AbortSignal): Promise<void> {
    return this.#wait(signal, () => {
      const at = this.#buf.bytes().indexOf(0xff);
      if (at < 0) {
        this.#buf.clear();
        return undefined;
      }
      this.#buf.consume(at + 1);
      return true;
    }).then(() => undefined);
  }

  /** The next JSON object line (non-JSON lines are skipped). */
  nextMessage(signal: AbortSignal): Promise<Message> {
    return this.#wait(signal, () => {
      for (;;) {
        const held = this.#buf.bytes();
        const nl = held.indexOf(0x0a);
        if (nl < 0) return undefined;
        // A sentinel can also precede a later line (a stale 0xFF came first): drop every 0xFF.
        const line = Buffer.from(held.subarray(0, nl).filter((b) => b !== 0xff)).toString('utf8').trim();
        this.#buf.consume(nl + 1);
        if (line === '') continue;
        try {
          const m: unknown = JSON.parse(line);
          if (typeof m === 'object' && m !== null && !Array.isArray(m)) return m as Message;
        } catch {
          // not JSON: noise on the channel
        }
      }
    });
  }

  #wait<T>(signal: AbortSignal, take: () => T | undefined): Promise<T> {
    return this.#waiters.until(signal, take);
  }
}
