import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { connectSocket, deadline, deadlineResult, errnoCode, errorText, failure, success, unknown } from './common.js';

/**
 * `tcp` (transport 3, network): connect to host:port and close at once, like the kubelet's
 * tcpSocket probe. The host is `params.host`, else the app's `address`; no host is `unknown`.
 * Refused, unreachable or slow is a failure.
 */

export interface TcpParams {
  host?: string;
  port: number;
}

export class TcpProbe implements Probe {
  readonly kind = 'tcp';
  constructor(private readonly params: TcpParams) {
    if (!Number.isInteger(params.port) || params.port < 1 || params.port > 65535) throw new RangeError(`port: 1..65535 (got ${params.port})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    const host = this.params.host ?? target.address;
    if (host === undefined) return unknown('no address configured');
    const { port } = this.params;
    const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const d = deadline(opts.signal, opts.timeoutMs);
    const t0 = performance.now();
    try {
      (await connectSocket({ host, port }, d.signal)).destroy();
      const connectMs = Math.round(performance.now() - t0);
      return success(`connected to ${where} in ${connectMs} ms`, { host, port, connectMs });
    } catch (e) {
      if (d.signal.aborted) return deadlineResult(d, opts.timeoutMs, `connect ${where}`, { host, port });
      const code = errnoCode(e);
      return failure(`connect ${where}: ${errorText(e)}`, { host, port, error: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
    }
  }
}
