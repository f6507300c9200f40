// The shared, reference-counted stores behind the hooks, one set per
// PulseClient.
//
// Contract:
// - `acquire(client, key, create)` returns the store for `key` (e.g.
//   "stats:evt_1"), creating it with `create(changed)` on first use; every
//   acquire is paired with one `release`. Components that use the same key
//   share one store, so one view (StatsView, FeedView, …) and one
//   subscription on the client (which has one on the hub per channel).
// - The last `release` closes the store after the current task
//   (queueMicrotask), not at once: React StrictMode unmounts and mounts
//   effects again synchronously, and that must neither unsubscribe nor
//   subscribe twice; a component that takes over the key in the same task
//   keeps the store and its state.
// - A store's `snapshot` is immutable and replaced only when it is
//   published, which is what useSyncExternalStore needs. Changes are
//   published in batches: at most one render per animation frame (16 ms
//   without requestAnimationFrame) for all stores of a client together, so a
//   burst of frames is one render, not one per frame.
// - Nothing is left scheduled once the stores are closed: the batch timer is
//   cancelled when nothing is waiting.

/**
 * What a store is made of: `read()` gives a new snapshot of the view's state
 * (called only when something changed); `close()` unsubscribes.
 * @template S
 * @typedef {{ read: () => S, close: () => void }} Source
 */

/**
 * @template S
 * @typedef {(changed: () => void) => Source<S>} SourceFactory
 */

const FRAME_MS = 16;

/** @typedef {{ cancel: () => void }} Scheduled */

/**
 * Runs `fn` at the next animation frame (a browser renders once per frame
 * anyway), or after FRAME_MS where there is none (Node, jsdom).
 * @param {() => void} fn
 * @returns {Scheduled}
 */
function nextFrame(fn) {
  const g = /** @type {{ requestAnimationFrame?: (cb: () => void) => number, cancelAnimationFrame?: (id: number) => void }} */ (globalThis);
  if (typeof g.requestAnimationFrame === 'function' && typeof g.cancelAnimationFrame === 'function') {
    const cancelFrame = g.cancelAnimationFrame;
    const id = g.requestAnimationFrame(fn);
    return { cancel: () => cancelFrame(id) };
  }
  const timer = setTimeout(fn, FRAME_MS);
  return { cancel: () => clearTimeout(timer) };
}

/**
 * One shared store.
 * @template S
 */
export class Store {
  /**
   * @param {Registry} registry
   * @param {string} key
   * @param {SourceFactory<S>} create
   * @param {S} initial
   */
  constructor(registry, key, create, initial) {
    this.registry = registry;
    this.key = key;
    this.refs = 0;
    this.closed = false;
    /** @type {S} */
    this.snapshot = initial;
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    /** @type {Source<S>} */
    this.source = create(() => {
      if (!this.closed) registry.dirty(this);
    });
  }

  /** @param {() => void} listener */
  listen(listener) {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Publishes the view's current state to the components. */
  publish() {
    if (this.closed) return;
    this.snapshot = this.source.read();
    for (const listener of [...this.listeners]) listener();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    this.source.close();
  }
}

/** The stores of one client. */
export class Registry {
  constructor() {
    /** @type {Map<string, Store<any>>} */
    this.stores = new Map();
    /** @type {Set<Store<any>>} */
    this.pending = new Set();
    /** @type {Scheduled | null} */
    this.scheduled = null;
  }

  /**
   * @template S
   * @param {string} key
   * @returns {Store<S> | undefined}
   */
  peek(key) {
    return this.stores.get(key);
  }

  /**
   * @template S
   * @param {string} key
   * @param {SourceFactory<S>} create
   * @param {S} initial
   * @returns {Store<S>}
   */
  acquire(key, create, initial) {
    let store = this.stores.get(key);
    if (!store) {
      store = new Store(this, key, create, initial);
      this.stores.set(key, store);
    }
    store.refs += 1;
    return store;
  }

  /** @param {Store<any>} store */
  release(store) {
    store.refs -= 1;
    if (store.refs > 0) return;
    queueMicrotask(() => {
      if (store.refs > 0 || this.stores.get(store.key) !== store) return;
      this.stores.delete(store.key);
      this.pending.delete(store);
      store.close();
      if (this.pending.size === 0) this.cancel();
    });
  }

  /** @param {Store<any>} store */
  dirty(store) {
    this.pending.add(store);
    if (!this.scheduled) this.scheduled = nextFrame(() => this.flush());
  }

  /** Publishes every changed store in one go (React batches the renders). */
  flush() {
    this.scheduled = null;
    const stores = [...this.pending];
    this.pending.clear();
    for (const store of stores) store.publish();
  }

  cancel() {
    this.scheduled?.cancel();
    this.scheduled = null;
  }
}

/** @type {WeakMap<object, Registry>} */
const registries = new WeakMap();

/**
 * The stores of a client (created on first use, gone with the client).
 * @param {object} client
 * @returns {Registry}
 */
export function registryOf(client) {
  let registry = registries.get(client);
  if (!registry) {
    registry = new Registry();
    registries.set(client, registry);
  }
  return registry;
}
