import type { FastifyReply, FastifyRequest } from 'fastify';
import { authenticate, tokenOf } from '../auth.js';
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

/** The value of cookie `name` in a Cookie header. */
export function cookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
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
export async function caller(store: Store, limiter: RateLimiter, req: FastifyRequest, opts: { roles: readonly TokenInfo['role'][]; cookie?: boolean }): Promise<TokenInfo> {
  const token = tokenOf(req.headers.authorization) ?? (opts.cookie === true ? cookie(req.headers.cookie, SESSION_COOKIE) : undefined);
  const who = await authenticate(store, token);
  if (who === undefined) throw new HttpError(401, 'a valid bearer token is required (eve-diag controller token create)', {}, { 'www-authenticate': 'Bearer' });
  if (!opts.roles.includes(who.role)) throw new HttpError(403, `this needs a ${opts.roles.join(' or ')} token`);
  const wait = limiter.take(`${who.role}:${who.nodeId ?? 'admin'}:${who.label}`);
  if (wait > 0) throw new HttpError(429, 'too many requests for this token: slow down', { retryAfterSeconds: wait }, { 'retry-after': String(wait) });
  req.who = who;
  return who;
}

export function sendError(reply: FastifyReply, e: HttpError): FastifyReply {
  for (const [k, v] of Object.entries(e.headers)) reply.header(k, v);
  return reply.code(e.status).send({ error: e.message, ...e.details });
}
