// What changed between two stats snapshots, as RFC 6901 JSON Pointers, the
// way the hub's `changed` names it. Used when the client cannot trust the
// hub's `changed` (it is relative to the hub's previous version, not to the
// one the app last saw): after a reconnect and for polled snapshots.

/** @param {string} key */
const escape = (key) => key.replace(/~/g, '~0').replace(/\//g, '~1');

/** @param {unknown} v @returns {v is Record<string, unknown>} */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Pointers to every leaf that differs (added, removed or changed).
 * @param {unknown} before
 * @param {unknown} after
 * @param {string} [at]
 * @param {string[]} [out]
 * @returns {string[]}
 */
export function changedPointers(before, after, at = '', out = []) {
  // A subtree that appeared or went away: its leaves.
  if (isObject(before) && after === undefined) after = {};
  if (isObject(after) && before === undefined) before = {};
  if (isObject(before) && isObject(after)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    for (const key of [...keys].sort()) changedPointers(before[key], after[key], `${at}/${escape(key)}`, out);
    return out;
  }
  if (!sameJson(before, after)) out.push(at);
  return out;
}

/**
 * Structural equality of JSON values.
 * @param {unknown} a
 * @param {unknown} b
 * @returns {boolean}
 */
export function sameJson(a, b) {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => sameJson(v, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameJson(a[k], b[k]));
  }
  return false;
}
