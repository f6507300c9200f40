// Reads (never verifies) a JWT's claims: the client needs `exp` to refresh the
// token in time and `sub` to know its own `user:{id}` channel.

/**
 * @typedef {{ sub?: string, name?: string, scopes?: string[], exp?: number, [claim: string]: unknown }} TokenClaims
 */

/**
 * The claims of a JWT, or null when it is not one.
 * @param {string | null | undefined} token
 * @returns {TokenClaims | null}
 */
export function tokenClaims(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * When the token expires (ms since the epoch), or null when it does not say.
 * @param {string | null | undefined} token
 */
export function tokenExpiry(token) {
  const exp = tokenClaims(token)?.exp;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
}
