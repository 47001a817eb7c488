import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { compileRegex, deadline, deadlineResult, errnoCode, errorText, failure, success, unknown } from './common.js';

/**
 * `http` (transport 3): GET a URL and check the status (default: 200..399, the kubelet's httpGet
 * rule) and optionally a regex over the first `maxBodyBytes` of the body. The URL is `params.url`, or
 * built from the app's `address` with `scheme`, `port` and `path`. `insecure` accepts any TLS
 * certificate (self-signed appliances). Redirects are not followed (a 3xx is a success by default).
 */

export interface HttpParams {
  url?: string;
  scheme?: 'http' | 'https';
  host?: string;
  port?: number;
  path?: string;
  /** Accepted statuses. Default: 200..399. */
  expectStatus?: readonly number[];
  /** Regex the body must match. */
  bodyRegex?: string;
  insecure?: boolean;
  headers?: Record<string, string>;
  /** Most body bytes read for `bodyRegex` and evidence. Default 65536. */
  maxBodyBytes?: number;
}

const EVIDENCE_BODY = 500;

export class HttpProbe implements Probe {
  readonly kind = 'http';
  readonly #body: RegExp | undefined;
  readonly #maxBody: number;

  constructor(private readonly params: HttpParams = {}) {
    this.#body = params.bodyRegex !== undefined ? compileRegex('bodyRegex', params.bodyRegex) : undefined;
    this.#maxBody = params.maxBodyBytes ?? 65536;
    if (params.url !== undefined) new URL(params.url); // throws TypeError for a bad URL: a config bug
    if (!Number.isSafeInteger(this.#maxBody) || this.#maxBody < 1) throw new RangeError(`maxBodyBytes: a positive integer (got ${this.#maxBody})`);
  }

  #url(target: AppTarget): URL | undefined {
    const p = this.params;
    if (p.url !== undefined) return new URL(p.url);
    const host = p.host ?? target.address;
    if (host === undefined) return undefined;
    const scheme = p.scheme ?? 'http';
    const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    return new URL(`${scheme}://${h}${p.port !== undefined ? `:${p.port}` : ''}${p.path ?? '/'}`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    const url = this.#url(target);
    if (url === undefined) return unknown('no address configured');
    const d = deadline(opts.signal, opts.timeoutMs);
    const t0 = performance.now();
    const ev: Record<string, unknown> = { url: url.href };
    try {
      const res = await get(url, {
        signal: d.signal,
        insecure: this.params.insecure === true,
        headers: { 'user-agent': 'eve-diag-monitor', ...this.params.headers },
      });
      ev.status = res.statusCode;
      const body = await readBody(res, this.#maxBody, d.signal);
      ev.ms = Math.round(performance.now() - t0);
      const status = res.statusCode ?? 0;
      const ok = this.params.expectStatus !== undefined ? this.params.expectStatus.includes(status) : status >= 200 && status < 400;
      if (!ok) return failure(`GET ${url.href}: status ${status}`, { ...ev, body: body.text.slice(0, EVIDENCE_BODY) });
      if (this.#body !== undefined && !this.#body.test(body.text)) {
        return failure(`GET ${url.href}: body does not match /${this.#body.source}/`, { ...ev, body: body.text.slice(0, EVIDENCE_BODY), bodyTruncated: body.truncated });
      }
      return success(`GET ${url.href}: ${status} in ${String(ev.ms)} ms`, ev);
    } catch (e) {
      if (d.signal.aborted) return deadlineResult(d, opts.timeoutMs, `GET ${url.href}`, ev);
      const code = errnoCode(e);
      return failure(`GET ${url.href}: ${errorText(e)}`, { ...ev, error: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
    }
  }
}

function get(url: URL, o: { signal: AbortSignal; insecure: boolean; headers: Record<string, string> }): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const options = { method: 'GET', headers: o.headers, signal: o.signal, agent: false as const };
    const req =
      url.protocol === 'https:'
        ? httpsRequest(url, { ...options, rejectUnauthorized: !o.insecure })
        : url.protocol === 'http:'
          ? httpRequest(url, options)
          : undefined;
    if (req === undefined) return reject(new Error(`unsupported scheme ${url.protocol}`));
    req.once('response', resolve);
    req.once('error', reject);
    req.end();
  });
}

function readBody(res: IncomingMessage, max: number, signal: AbortSignal): Promise<{ text: string; truncated: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const finish = (truncated: boolean) => {
      cleanup();
      res.destroy();
      resolve({ text: Buffer.concat(chunks).toString('utf8'), truncated });
    };
    const onData = (b: Buffer) => {
      const room = max - n;
      chunks.push(b.length > room ? b.subarray(0, room) : b);
      n += Math.min(b.length, room);
      if (n >= max) finish(true);
    };
    const onEnd = () => finish(false);
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const onAbort = () => {
      cleanup();
      res.destroy();
      reject(signal.reason);
    };
    const cleanup = () => {
      res.off('data', onData);
      res.off('end', onEnd);
      res.off('error', onError);
      signal.removeEventListener('abort', onAbort);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    res.on('data', onData);
    res.once('end', onEnd);
    res.once('error', onError);
  });
}
