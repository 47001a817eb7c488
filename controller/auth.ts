import { createHash, randomBytes } from 'node:crypto';
import type { Store, TokenInfo } from './store/store.js';

/**
 * Bearer tokens: 32 random bytes, shown once (`eve-diag controller token create`), stored only as
 * their SHA-256. A request's token is hashed and looked up by that hash: no stored secret is ever
 * compared with what a client sent, so how long a lookup takes says nothing about any token (finding
 * a match would take a SHA-256 preimage).
 */
export const TOKEN_PREFIX = 'edt_';

export function newToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** The token in an `Authorization: Bearer ...` header, if it has our shape. */
export function tokenOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  // The scheme is case-insensitive and followed by 1*SP (RFC 9110 sections 11.1 and 11.4).
  const m = /^bearer +([A-Za-z0-9_-]{20,128})$/i.exec(header.trim());
  return m?.[1];
}

export async function authenticate(store: Store, token: string | undefined): Promise<TokenInfo | undefined> {
  if (token === undefined || token.length > 128) return undefined;
  return store.token(hashToken(token));
}
