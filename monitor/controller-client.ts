import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { ByteBuffer } from '../util/byte-buffer.js';

/**
 * The node's HTTP client of the controller (node:http / node:https): a bearer token, an optional CA
 * for the controller's certificate, a timeout on every request (silence while sending, the whole
 * answer once sent), bounded answers. Errors say whether trying again may help (`retryable`): the
 * network, 5xx, 429 (with its Retry-After) and 401/403 (a token may be fixed) are; a 4xx that judges
 * the request itself (400, 404, 409, 413) is not.
 */

export interface ControllerClientOptions {
  url: string;
  token: string;
  /** PEM of the CA that signed the controller's certificate. */
  ca?: string | Buffer;
  timeoutMs?: number;
  /** Most bytes of an answer kept. Default 1 MiB. */
  maxResponseBytes?: number;
}

export class ControllerError extends Error {
  override name = 'ControllerError';
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ControllerResponse {
  status: number;
  body: unknown;
}

export class ControllerClient {
  readonly base: URL;
  readonly #o: ControllerClientOptions;

  constructor(o: ControllerClientOptions) {
    this.base = new URL(o.url);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new RangeError(`controller url: http or https (got ${o.url})`);
    this.#o = o;
  }

  /** Sends one request; resolves with a 2xx answer (JSON parsed), rejects with a ControllerError. */
  request(method: string, path: string, body?: { data: Buffer; type: string; gzip?: boolean }, signal?: AbortSignal): Promise<ControllerResponse> {
    const url = new URL(path, this.base);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const timeoutMs = this.#o.timeoutMs ?? 30_000;
    const maxBytes = this.#o.maxResponseBytes ?? 1024 * 1024;
    return new Promise((resolveOnce, rejectOnce) => {
      let answerTimer: NodeJS.Timeout | undefined;
      let settled = false;
      const resolve = (r: ControllerResponse) => {
        settled = true;
        clearTimeout(answerTimer);
        resolveOnce(r);
      };
      const reject = (e: ControllerError) => {
        settled = true;
        clearTimeout(answerTimer);
        rejectOnce(e);
      };
      const headers: Record<string, string | number> = { authorization: `Bearer ${this.#o.token}`, accept: 'application/json' };
      if (body !== undefined) {
        headers['content-type'] = body.type;
        headers['content-length'] = body.data.length;
        if (body.gzip === true) headers['content-encoding'] = 'gzip';
      }
      const req = send(url, { method, headers, timeout: timeoutMs, ...(this.#o.ca !== undefined ? { ca: this.#o.ca } : {}), ...(signal ? { signal } : {}) }, (res: IncomingMessage) => {
        const buf = new ByteBuffer(maxBytes);
        let over = false;
        res.on('data', (c: Buffer) => {
          if (!over && !buf.push(c)) over = true;
        });
        res.on('error', (e) => reject(new ControllerError(`${method} ${url.pathname}: ${e.message}`, undefined, true, undefined, { cause: e })));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = buf.length === 0 || over ? undefined : JSON.parse(buf.bytes().toString('utf8'));
          } catch {
            parsed = undefined;
          }
          if (status >= 200 && status < 300) return resolve({ status, body: parsed });
          const msg = (parsed as { error?: unknown } | undefined)?.error;
          const text = `${method} ${url.pathname}: ${status}${typeof msg === 'string' ? ` ${msg.slice(0, 500)}` : ''}`;
          const ra = Number(res.headers['retry-after']);
          const retryable = status >= 500 || status === 429 || status === 401 || status === 403 || status === 408;
          reject(new ControllerError(text, status, retryable, Number.isFinite(ra) && ra > 0 ? ra * 1000 : undefined));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      // The socket's timeout only notices silence: an answer trickling in a few bytes at a time
      // would hold the shipper for as long as the peer likes. Once the request is sent (an upload
      // on a slow link may take its time), the whole answer must come within timeoutMs.
      req.on('finish', () => {
        // (An answer that came before the body was all sent leaves nothing to time.)
        if (settled) return;
        answerTimer = setTimeout(() => {
          const e = new ControllerError(`${method} ${url.pathname}: no answer within ${timeoutMs} ms`, undefined, true);
          reject(e);
          req.destroy(e);
        }, timeoutMs);
      });
      req.on('close', () => clearTimeout(answerTimer));
      req.on('error', (e) => reject(e instanceof ControllerError ? e : new ControllerError(`${method} ${url.pathname}: ${e.message}`, undefined, true, undefined, { cause: e })));
      req.end(body?.data);
    });
  }
}
