import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { hashToken, tokenOf } from '../auth.js';
import { RateLimiter } from '../limits.js';
import type { Store, TokenInfo } from '../store/store.js';

/** An answer other than 2xx: the status, a message naming what is wrong, and optional details. */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const SESSION_COOKIE = 'eve_diag_admin';

/** The value of cookie `name` in a Cookie header; a value that does not percent-decode is no value. */
export function cookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined; // URIError: a malformed escape (only a client's own mangling makes one)
      }
    }
  }
  return undefined;
}

export interface CallerOptions {
  roles: readonly TokenInfo['role'][];
  /** The session cookie is accepted in place of the header (the read API's GETs). */
  cookie?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    who?: TokenInfo;
  }
}

/**
 * The caller, by bearer token (or, for the dashboard's own GETs, the admin session cookie), rate
 * limited per token. Throws 401 without a valid token, 403 without the role, 429 over the rate.
 */
export async function caller(store: Store, limiter: RateLimiter, req: FastifyRequest, opts: CallerOptions): Promise<TokenInfo> {
  const token = tokenOf(req.headers.authorization) ?? (opts.cookie === true ? cookie(req.headers.cookie, SESSION_COOKIE) : undefined);
  // One hash per request: the token's row is looked up by it, and its rate bucket is keyed by it.
  const hash = token === undefined || token.length > 128 ? undefined : hashToken(token);
  const who = hash === undefined ? undefined : await store.token(hash);
  if (who === undefined || hash === undefined) throw new HttpError(401, 'a valid bearer token is required (eve-diag controller token create)', {}, { 'www-authenticate': 'Bearer' });
  if (!opts.roles.includes(who.role)) throw new HttpError(403, `this needs a ${opts.roles.join(' or ')} token`);
  // One bucket per token (by its hash, as it is stored): two tokens of one node are two callers.
  const wait = limiter.take(hash);
  if (wait > 0) throw new HttpError(429, 'too many requests for this token: slow down', { retryAfterSeconds: wait }, { 'retry-after': String(wait) });
  req.who = who;
  return who;
}

/**
 * A route's `onRequest` hook that runs `caller`: the token, its role and the rate limit are checked
 * before the body is read, so a request without a valid token is answered at once and its body is
 * never buffered. The handler takes the caller with `whoOf`.
 */
export function authorize(store: Store, limiter: RateLimiter, opts: CallerOptions): onRequestAsyncHookHandler {
  return async (req) => {
    await caller(store, limiter, req, opts);
  };
}

/** The caller the route's `authorize` hook found. */
export function whoOf(req: FastifyRequest): TokenInfo {
  if (req.who === undefined) throw new Error(`${req.method} ${req.routeOptions.url ?? req.url}: the route has no authorize hook`);
  return req.who;
}

export function sendError(reply: FastifyReply, e: HttpError): FastifyReply {
  for (const [k, v] of Object.entries(e.headers)) reply.header(k, v);
  return reply.code(e.status).send({ error: e.message, ...e.details });
}
