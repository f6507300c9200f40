// A small typed event emitter. A listener that throws does not break the
// client: the error is reported asynchronously (like a DOM event listener's).

/** @param {unknown} error */
function report(error) {
  const g = /** @type {{ reportError?: (e: unknown) => void }} */ (globalThis);
  if (typeof g.reportError === 'function') g.reportError(error);
  else
    setTimeout(() => {
      throw error;
    }, 0);
}

/**
 * @template {Record<string, (...args: any[]) => void>} Events
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener; returns a function that removes it.
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} listener
   * @returns {() => void}
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * Like `on`, for one call.
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} listener
   * @returns {() => void}
   */
  once(event, listener) {
    const off = this.on(event, /** @type {Events[K]} */ ((...args) => {
      off();
      listener(...args);
    }));
    return off;
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} listener
   */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Parameters<Events[K]>} args
   */
  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (e) {
        report(e);
      }
    }
  }

  /** @param {keyof Events} event */
  _hasListeners(event) {
    return (this._listeners.get(event)?.size ?? 0) > 0;
  }
}
