// Every timer of a client by name, so `close()` can clear them all and a
// Node process exits by itself afterwards.

export class Timers {
  constructor() {
    /** Handles are opaque (a number in browsers, an object in Node). @type {Map<string, unknown>} */
    this._timers = new Map();
  }

  /**
   * Runs `fn` after `ms`; replaces a timer of the same name.
   * @param {string} name
   * @param {number} ms
   * @param {() => void} fn
   */
  set(name, ms, fn) {
    this.clear(name);
    const handle = setTimeout(() => {
      if (this._timers.get(name) === handle) this._timers.delete(name);
      fn();
    }, Math.max(0, ms));
    this._timers.set(name, handle);
  }

  /** @param {string} name */
  has(name) {
    return this._timers.has(name);
  }

  /** @param {string} name */
  clear(name) {
    const handle = this._timers.get(name);
    if (handle !== undefined) {
      clearTimeout(/** @type {any} */ (handle));
      this._timers.delete(name);
    }
  }

  clearAll() {
    for (const handle of this._timers.values()) clearTimeout(/** @type {any} */ (handle));
    this._timers.clear();
  }

  get size() {
    return this._timers.size;
  }
}
