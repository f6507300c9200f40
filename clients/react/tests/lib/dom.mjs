// A browser-like global scope for the hook tests: a jsdom window whose
// properties become globals (as jest-environment-jsdom or global-jsdom do),
// without replacing what Node has itself (timers, fetch, URL, events).
// WebSocket stays out: the tests pass the `ws` package to the client, as a
// Node application would. Import this module first, before React.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><head></head><body></body></html>', { url: 'http://127.0.0.1/' });
const { window } = dom;
const SKIP = new Set(['WebSocket', 'constructor', 'undefined', 'globalThis', 'self', 'window', 'top', 'parent', 'frames']);

const keys = new Set();
for (let o = window; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
  for (const key of Object.getOwnPropertyNames(o)) keys.add(key);
}
for (const key of keys) {
  if (SKIP.has(key) || key in globalThis) continue;
  const value = window[key];
  // Methods of the window (addEventListener, getComputedStyle…) need it as `this`.
  const bound = typeof value === 'function' && /^[a-z]/.test(key) ? value.bind(window) : value;
  Object.defineProperty(globalThis, key, { value: bound, configurable: true, writable: true });
}
globalThis.window = window;
globalThis.self = window;
// React: updates are expected inside act() (testing-library's waitFor steps out of it).
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

export { dom, window };
