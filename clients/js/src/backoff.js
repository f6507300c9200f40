// Reconnect delays: exponential with jitter, capped (the dashboard's
// transport.js rule): attempt n waits a random time in [d/2, d] with
// d = min(max, base * 2^n), so many clients dropped at once do not return at
// once, and none waits longer than `max`.

/**
 * @param {number} attempt 0 for the first retry
 * @param {number} [baseMs]
 * @param {number} [maxMs]
 * @param {() => number} [random]
 */
export function backoff(attempt, baseMs = 500, maxMs = 30_000, random = Math.random) {
  const d = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.round(d / 2 + random() * (d / 2));
}

/**
 * A random time in [lo, hi].
 * @param {number} lo
 * @param {number} hi
 */
export function between(lo, hi) {
  return lo + Math.random() * Math.max(0, hi - lo);
}
