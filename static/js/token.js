// Getting a browser token (a JWT the hub verifies; see README "Getting a token").
//
// In order:
//   1. `?token=…` in the page's URL (removed from the address bar once read);
//   2. a token this browser kept from before that is still valid;
//   3. demo mode: `GET /api/dev/token` (exists only when the hub runs with
//      --demo) for this browser's guest identity;
//   4. otherwise the page asks the person to paste one.
// The page reads the token's claims (sub, name, scopes, exp) for display and
// for the scope chooser only; the hub verifies it.

import { tokenClaims } from '/sdk/pulsehub.js';
import { store } from './util.js';

const TOKEN_KEY = 'pulsehub.token';
const IDENTITY_KEY = 'pulsehub.identity';
/** Tokens closer than this to expiry are not reused. */
const MIN_LIFETIME_S = 120;

/** The claims of a JWT with a subject, unverified; null when it is not one. */
export function claimsOf(token) {
  const claims = tokenClaims(token);
  return claims && typeof claims.sub === 'string' ? claims : null;
}

const secondsLeft = (claims) => (claims?.exp ?? 0) - Date.now() / 1000;

const ADJECTIVES = ['Amber', 'Brisk', 'Calm', 'Daring', 'Eager', 'Gentle', 'Jolly', 'Keen', 'Lucky', 'Mellow', 'Nimble', 'Quiet', 'Sunny', 'Witty'];
const ANIMALS = ['Otter', 'Heron', 'Fox', 'Lynx', 'Panda', 'Robin', 'Koala', 'Badger', 'Falcon', 'Marten', 'Puffin', 'Seal', 'Wren', 'Yak'];

/** This browser's demo identity; `?user=` / `?name=` choose one and are remembered. */
export function demoIdentity(params) {
  let identity = store.get(IDENTITY_KEY);
  const user = params.get('user');
  const name = params.get('name');
  if (user || name || !identity?.id) {
    const pick = (list) => list[Math.floor(Math.random() * list.length)];
    const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
    identity = {
      id: user || identity?.id || `guest-${random}`,
      name: name || (user ? user[0].toUpperCase() + user.slice(1) : identity?.name) || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`,
    };
    store.set(IDENTITY_KEY, identity);
  }
  return identity;
}

/** Asks the demo hub for a token; null when the endpoint is not there. */
export async function devToken(identity, scopes) {
  const q = new URLSearchParams({ user: identity.id, name: identity.name });
  if (scopes) q.set('scopes', scopes);
  let res;
  try {
    res = await fetch(`/api/dev/token?${q}`, { cache: 'no-store' });
  } catch {
    return null;
  }
  if (!res.ok) return null;
  const body = await res.json();
  return body.token;
}

/**
 * Finds a token. `ask(message)` shows the token form and resolves with what
 * the person pasted. Returns {token, claims, source} with source one of
 * 'url', 'stored', 'dev', 'prompt'.
 */
export async function obtainToken(ask, { reason = null, params = new URLSearchParams(location.search) } = {}) {
  const fromUrl = params.get('token');
  if (fromUrl && !reason) {
    const url = new URL(location.href);
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
    const claims = claimsOf(fromUrl);
    if (claims && secondsLeft(claims) > 0) {
      store.set(TOKEN_KEY, { token: fromUrl, source: 'url' });
      return { token: fromUrl, claims, source: 'url' };
    }
    reason = 'The token in the link is not valid or has expired.';
  }

  const kept = store.get(TOKEN_KEY);
  const keptClaims = kept?.token && claimsOf(kept.token);
  if (!reason && keptClaims && secondsLeft(keptClaims) > MIN_LIFETIME_S && kept.source !== 'dev') {
    return { token: kept.token, claims: keptClaims, source: 'stored' };
  }

  const dev = await devToken(demoIdentity(params), params.get('scopes'));
  if (dev) {
    store.set(TOKEN_KEY, { token: dev, source: 'dev' });
    return { token: dev, claims: claimsOf(dev), source: 'dev' };
  }

  store.remove(TOKEN_KEY);
  for (;;) {
    const pasted = (await ask(reason)).trim();
    const claims = claimsOf(pasted);
    if (claims && secondsLeft(claims) > 0) {
      store.set(TOKEN_KEY, { token: pasted, source: 'prompt' });
      return { token: pasted, claims, source: 'prompt' };
    }
    reason = claims ? 'That token has expired.' : 'That does not look like a pulsehub token (a JWT).';
  }
}

/** Forgets the kept token (after the hub refused it). */
export function forgetToken() {
  store.remove(TOKEN_KEY);
}
