import type { Socket } from 'node:net';
import { formatPing, LineSplitter, parsePong, type Pong } from '../../protocol/agent-ping.js';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { connectSocket, deadline, deadlineResult, errnoCode, errorText, failure, success, unknown, Waiters } from './common.js';

/**
 * `agent-ping`: a userspace round trip to the guest agent's responder (protocol/agent-ping.ts) over the
 * host end of its port: the QEMU chardev socket behind a virtio-serial port (`eve-diag qemu-args
 * --agent-port`) or a serial port. `transports.agentPort` is a unix socket path, or `tcp:HOST:PORT` for a
 * TCP chardev. Each run connects (the chardev serves one client at a time), sends `PING <n>` with a new
 * n, and succeeds on the `PONG <n>` with the same n; PONGs of earlier runs and every other line are
 * skipped. At most `maxBytes` are read from the guest per run. Silence until the timeout is a failure:
 * the agent is not running, or the guest's userspace is stuck.
 */

export interface AgentPingParams {
  /** Most bytes read from the guest in one run. Default 16384. */
  maxBytes?: number;
}

export class AgentPingProbe implements Probe {
  readonly kind = 'agent-ping';
  #n = Math.floor(Math.random() * 1e9);
  readonly #maxBytes: number;

  constructor(params: AgentPingParams = {}) {
    this.#maxBytes = params.maxBytes ?? 16384;
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes < 256) throw new RangeError(`maxBytes: an integer >= 256 (got ${this.#maxBytes})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    if (target.agentPort === undefined) return unknown('no agent port configured');
    const where = target.agentPort;
    const d = deadline(opts.signal, opts.timeoutMs);
    const n = String(this.#n++);
    let step = 'connect';
    let channel: PongChannel | undefined;
    const t0 = performance.now();
    try {
      channel = await PongChannel.open(where, this.#maxBytes, d.signal);
      step = 'PING';
      channel.write(`${formatPing(n)}\n`);
      const pong = await channel.pong(n, d.signal);
      const ms = Math.round(performance.now() - t0);
      return success(`the agent answered PING ${n} in ${ms} ms`, {
        agentPort: where,
        ms,
        ...(pong.uptimeS !== undefined ? { guestUptimeS: pong.uptimeS } : {}),
        ...(pong.load !== undefined ? { guestLoad: pong.load } : {}),
        skippedLines: channel.skipped,
      });
    } catch (e) {
      if (d.signal.aborted) {
        const r = deadlineResult(d, opts.timeoutMs, `agent ${step}`, { agentPort: where, step, skippedLines: channel?.skipped ?? 0 });
        return r.outcome === 'failure' && step !== 'connect' ? { ...r, detail: `${r.detail} (no PONG)` } : r;
      }
      const code = errnoCode(e);
      return failure(`agent port ${where}: ${errorText(e)}`, { agentPort: where, step, error: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
      channel?.close();
    }
  }
}

/** `tcp:HOST:PORT` or a unix socket path. */
export function agentPortAddress(port: string): { path: string } | { host: string; port: number } {
  const m = /^tcp:(.+):(\d{1,5})$/.exec(port);
  if (m === null) return { path: port };
  const p = Number(m[2]);
  if (p < 1 || p > 65535) throw new RangeError(`agent port ${port}: the TCP port must be 1..65535`);
  return { host: (m[1] as string).replace(/^\[(.*)\]$/, '$1'), port: p };
}

class PongChannel {
  readonly #lines = new LineSplitter();
  readonly #pongs: Pong[] = [];
  #received = 0;
  #end: Error | undefined;
  readonly #waiters = new Waiters(() => this.#end);
  /** Lines that were not the PONG we wait for (noise, an older run's PONG). */
  skipped = 0;

  private constructor(
    private readonly socket: Socket,
    maxBytes: number,
  ) {
    socket.on('data', (b: Buffer) => {
      if (this.#end !== undefined) return;
      this.#received += b.length;
      if (this.#received > maxBytes) {
        this.#end = new Error(`more than ${maxBytes} bytes from the guest without our PONG`);
        socket.destroy();
      } else {
        for (const line of this.#lines.push(b)) {
          const p = parsePong(line);
          if (p !== undefined) this.#pongs.push(p);
          else if (line.trim() !== '') this.skipped++;
        }
      }
      this.#waiters.wake();
    });
    socket.on('close', () => {
      this.#end ??= new Error('the port closed');
      this.#waiters.wake();
    });
    socket.on('error', () => undefined); // 'close' follows
  }

  static async open(port: string, maxBytes: number, signal: AbortSignal): Promise<PongChannel> {
    return new PongChannel(await connectSocket(agentPortAddress(port), signal), maxBytes);
  }

  write(text: string): void {
    this.socket.write(text);
  }

  close(): void {
    this.socket.destroy();
  }

  /** The PONG answering `n`; PONGs with other numbers are skipped (counted). */
  pong(n: string, signal: AbortSignal): Promise<Pong> {
    return this.#waiters.until(signal, () => {
      while (this.#pongs.length > 0) {
        const p = this.#pongs.shift() as Pong;
        if (p.n === n) return p;
        this.skipped++;
      }
      return undefined;
    });
  }
}
