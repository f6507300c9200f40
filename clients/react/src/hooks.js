// The hooks. Each reads the client of the nearest <PulseProvider>.
//
// - useConnectionState() / useConnectionStatus(): the client's state name
//   ("connecting", "connected", "reconnecting", "polling", "offline",
//   "closed") or its whole status object; re-render on each change.
// - useStats / usePresence / useFeed / useNotifications: the client's views
//   (StatsView, PresenceView, FeedView, NotificationsView) behind shared
//   stores (store.js): one view per key and client, however many components
//   use it; subscribed when the first component mounts, unsubscribed after
//   the last one unmounts; read with useSyncExternalStore (no tearing) and
//   re-rendered at most once per animation frame.
// - useChannel(channel, onMessage): a channel's raw frames to a callback,
//   for what the views do not cover (e.g. feeding a query cache). No state
//   per frame, so no render per frame.
//
// A falsy scope or channel subscribes to nothing (wait for a route param
// without breaking the rules of hooks). Without a client yet (a provider
// that creates its own, on its first render; server rendering) every hook
// returns its initial value.

import { INITIAL_STATUS } from '@pulsehub/client';
import { useCallback, useEffect, useInsertionEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';
import { usePulseContext } from './provider.js';
import { registryOf } from './store.js';

/** @typedef {import('@pulsehub/client').PulseClient} PulseClient */
/** @typedef {import('@pulsehub/client').PulseError} PulseError */
/** @typedef {import('@pulsehub/client').ConnectionState} ConnectionState */
/** @typedef {import('@pulsehub/client').ConnectionStatus} ConnectionStatus */
/** @typedef {import('@pulsehub/client').Stats} Stats */
/** @typedef {import('@pulsehub/client').PresenceUser} PresenceUser */
/** @typedef {import('@pulsehub/client').FeedEntry} FeedEntry */
/** @typedef {import('@pulsehub/client').NotificationEntry} NotificationEntry */
/** @typedef {import('@pulsehub/client').SubscribedInfo} SubscribedInfo */
/** @typedef {import('@pulsehub/client').ResetInfo} ResetInfo */

/**
 * @template S
 * @typedef {import('./store.js').SourceFactory<S>} SourceFactory
 */

const noop = () => {};

/** @type {Readonly<Record<string, number>>} */
const NO_COUNTS = Object.freeze({});

// ---- connection ---------------------------------------------------------------

/**
 * The connection's state name; re-renders when it changes.
 * @returns {ConnectionState}
 */
export function useConnectionState() {
  const { client } = usePulseContext('useConnectionState');
  const subscribe = useCallback((/** @type {() => void} */ onChange) => (client ? client.on('state', onChange) : noop), [client]);
  return useSyncExternalStore(
    subscribe,
    () => (client ? client.state : 'connecting'),
    () => 'connecting',
  );
}

/**
 * Everything about the connection (state, transport, attempt, retryAt, rtt,
 * user, reason, error); re-renders on each change, RTT updates included.
 * @returns {ConnectionStatus}
 */
export function useConnectionStatus() {
  const { client } = usePulseContext('useConnectionStatus');
  const subscribe = useCallback((/** @type {() => void} */ onChange) => (client ? client.on('status', onChange) : noop), [client]);
  return useSyncExternalStore(
    subscribe,
    () => (client ? client.status : INITIAL_STATUS),
    () => INITIAL_STATUS,
  );
}

// ---- shared views ---------------------------------------------------------------

/**
 * Whether a view's subscription is live, and the error that ended it.
 * @param {{ ready: Promise<unknown>, on(event: "error", listener: (error: PulseError) => void): () => void }} view
 * @param {() => void} changed
 */
function track(view, changed) {
  const state = { ready: false, error: /** @type {PulseError | null} */ (null), closed: false };
  view.ready.then(
    () => {
      if (state.closed) return;
      state.ready = true;
      changed();
    },
    (/** @type {PulseError} */ error) => {
      // `closed`: the client was closed (useConnectionState says so), not a refusal.
      if (state.closed || state.error || error.code === 'closed') return;
      state.error = error;
      changed();
    },
  );
  view.on('error', (error) => {
    if (state.closed) return;
    state.ready = false;
    state.error = error;
    changed();
  });
  return state;
}

/**
 * The snapshot of the shared store `key` (null: none), acquired while the
 * component is mounted.
 * @template S
 * @param {string} hook
 * @param {string | null} key
 * @param {(client: PulseClient) => SourceFactory<S>} factory
 * @param {S} initial
 * @returns {{ snapshot: S, client: PulseClient | null }}
 */
function useShared(hook, key, factory, initial) {
  const { client } = usePulseContext(hook);
  // `factory` and `initial` only depend on what `key` names.
  const subscribe = useCallback(
    (/** @type {() => void} */ onChange) => {
      if (!client || key === null) return noop;
      const registry = registryOf(client);
      const store = registry.acquire(key, factory(client), initial);
      const off = store.listen(onChange);
      return () => {
        off();
        registry.release(store);
      };
    },
    [client, key],
  );
  const getSnapshot = useCallback(
    () => (client && key !== null ? (registryOf(client).peek(key)?.snapshot ?? initial) : initial),
    [client, key],
  );
  const snapshot = useSyncExternalStore(subscribe, getSnapshot, () => initial);
  return { snapshot, client };
}

/**
 * @typedef {object} StatsState
 * @property {Stats | null} stats the latest snapshot (PROTOCOL.md "Stats body"), null before the first
 * @property {Readonly<Record<string, number>>} counts events per kind, all time (`stats.counts`, `{}` before the first)
 * @property {string[]} changed JSON Pointers into `stats` of what the latest snapshot changed
 * @property {number | null} version
 * @property {boolean} ready subscribed
 * @property {PulseError | null} error why the subscription was refused or ended (e.g. `forbidden`)
 */

/** @type {StatsState} */
const NO_STATS = Object.freeze({ stats: null, counts: NO_COUNTS, changed: [], version: null, ready: false, error: null });

/**
 * A scope's live statistics (`stats:{scope}`).
 * @param {string | null | undefined} scope
 * @returns {StatsState}
 */
export function useStats(scope) {
  return useShared(
    'useStats',
    scope ? `stats:${scope}` : null,
    (client) => (changed) => {
      const view = client.stats(/** @type {string} */ (scope));
      const status = track(view, changed);
      view.on('change', changed);
      return {
        read: () => ({
          stats: view.stats,
          counts: view.stats?.counts ?? NO_COUNTS,
          changed: view.changed,
          version: view.version,
          ready: status.ready,
          error: status.error,
        }),
        close: () => {
          status.closed = true;
          view.unsubscribe();
        },
      };
    },
    NO_STATS,
  ).snapshot;
}

/**
 * @typedef {object} PresenceState
 * @property {PresenceUser[]} members who is present, by name (then id)
 * @property {number} count distinct users present (the hub's count)
 * @property {boolean} ready
 * @property {PulseError | null} error
 */

/** @type {PresenceState} */
const NO_PRESENCE = Object.freeze({ members: [], count: 0, ready: false, error: null });

/**
 * Who is online in a scope (`presence:{scope}`), as a live member list.
 * Subscribing makes the user present in the scope, too.
 * @param {string | null | undefined} scope
 * @returns {PresenceState}
 */
export function usePresence(scope) {
  return useShared(
    'usePresence',
    scope ? `presence:${scope}` : null,
    (client) => (changed) => {
      const view = client.presence(/** @type {string} */ (scope));
      const status = track(view, changed);
      view.on('change', changed);
      return {
        read: () => ({ members: view.members, count: view.count, ready: status.ready, error: status.error }),
        close: () => {
          status.closed = true;
          view.unsubscribe();
        },
      };
    },
    NO_PRESENCE,
  ).snapshot;
}

/**
 * @typedef {object} FeedOptions
 * @property {number} [limit] events kept, newest first (default 50)
 */

/**
 * @typedef {object} FeedState
 * @property {FeedEntry[]} events newest first, at most `limit`; each with its `offset`
 * @property {number | null} offset the feed's position (the newest offset delivered)
 * @property {boolean} ready
 * @property {PulseError | null} error
 */

/** @type {FeedState} */
const NO_FEED = Object.freeze({ events: [], offset: null, ready: false, error: null });

/**
 * A scope's domain events (`feed:{scope}`), newest first: every offset once,
 * in order, across reconnects; after a hole the hub cannot fill, the list
 * starts again from the channel's latest events.
 * @param {string | null | undefined} scope
 * @param {FeedOptions} [options]
 * @returns {FeedState}
 */
export function useFeed(scope, options = {}) {
  const limit = Math.max(1, Math.floor(options.limit ?? 50));
  return useShared(
    'useFeed',
    scope ? `feed:${scope}:${limit}` : null,
    (client) => (changed) => {
      const view = client.feed(/** @type {string} */ (scope), { limit });
      const status = track(view, changed);
      view.on('change', changed);
      return {
        read: () => ({ events: view.events, offset: view.offset, ready: status.ready, error: status.error }),
        close: () => {
          status.closed = true;
          view.unsubscribe();
        },
      };
    },
    NO_FEED,
  ).snapshot;
}

/**
 * @typedef {object} NotificationsState
 * @property {NotificationEntry[]} items newest first, each with `channel`, `offset` and `read`
 * @property {number} unread
 * @property {boolean} ready every channel subscribed
 * @property {PulseError | null} error
 */

/**
 * @typedef {NotificationsState & {
 *   markRead: (id: string) => void,
 *   markAllRead: () => void,
 *   dismiss: (id: string) => void,
 * }} NotificationsResult
 */

/** @type {NotificationsState} */
const NO_NOTIFICATIONS = Object.freeze({ items: [], unread: 0, ready: false, error: null });

/**
 * `system` and the user's own notifications (`user:{id}`), newest first,
 * with read state shared by every component that shows them.
 * @param {string | false} [userId] whose `user:` channel: default the
 *   token's user; `false` for `system` only
 * @returns {NotificationsResult}
 */
export function useNotifications(userId) {
  const who = userId === false ? 'system' : (userId ?? '@token');
  const key = `notifications:${who}`;
  const { snapshot, client } = useShared(
    'useNotifications',
    key,
    (c) => (changed) => {
      const view = c.notifications({ user: userId === false ? false : (userId ?? true) });
      const status = track(view, changed);
      view.on('change', changed);
      return {
        read: () => ({ items: view.items, unread: view.unread, ready: status.ready, error: status.error }),
        close: () => {
          status.closed = true;
          view.unsubscribe();
        },
        view,
      };
    },
    NO_NOTIFICATIONS,
  );
  const actions = useMemo(() => {
    /** @returns {import('@pulsehub/client').NotificationsView | undefined} */
    const view = () => (client ? /** @type {any} */ (registryOf(client).peek(key)?.source)?.view : undefined);
    return {
      /** @param {string} id */
      markRead: (id) => view()?.markRead(id),
      markAllRead: () => view()?.markAllRead(),
      /** @param {string} id */
      dismiss: (id) => view()?.dismiss(id),
    };
  }, [client, key]);
  return useMemo(() => ({ ...snapshot, ...actions }), [snapshot, actions]);
}

// ---- raw channels ---------------------------------------------------------------

/**
 * @typedef {object} ChannelOptions
 * @property {(info: ResetInfo) => void} [onReset] a recoverable channel starts afresh: drop what you hold for it
 * @property {(info: SubscribedInfo) => void} [onSubscribed] every (re)subscription
 * @property {number} [since] recoverable channels: resume after this offset (read when subscribing)
 */

/**
 * @typedef {object} ChannelState
 * @property {boolean} ready subscribed
 * @property {boolean | undefined} recovered recoverable channels: the latest (re)subscription lost nothing
 * @property {PulseError | null} error why the subscription was refused or ended
 */

/** @type {ChannelState} */
const NO_CHANNEL = Object.freeze({ ready: false, recovered: undefined, error: null });

/**
 * A channel's frames (PROTOCOL.md), in order and de-duplicated, to
 * `onMessage` while the component is mounted. The latest `onMessage` is
 * called (no resubscription when it changes); frames are not state, so they
 * cause no render: set state yourself if you need one.
 * @template {string} C
 * @param {C | null | undefined} channel e.g. "feed:demo", "user:alice", "system"
 * @param {(frame: import('@pulsehub/client').FrameOf<C>) => void} [onMessage]
 * @param {ChannelOptions} [options]
 * @returns {ChannelState}
 */
export function useChannel(channel, onMessage, options = {}) {
  const { client } = usePulseContext('useChannel');
  const latest = useRef({ onMessage, options });
  useInsertionEffect(() => {
    latest.current = { onMessage, options };
  });
  const [state, setState] = useState(() => ({ client: /** @type {PulseClient | null} */ (null), channel: /** @type {string | null} */ (null), value: NO_CHANNEL }));
  useEffect(() => {
    if (!client || !channel) return undefined;
    /** @param {ChannelState} value */
    const set = (value) => setState({ client, channel, value });
    const sub = client.subscribe(channel, {
      since: latest.current.options.since,
      onMessage: (frame) => latest.current.onMessage?.(frame),
      onReset: (info) => latest.current.options.onReset?.(info),
      onSubscribed: (info) => {
        set({ ready: true, recovered: info.recovered, error: null });
        latest.current.options.onSubscribed?.(info);
      },
      onError: (error) => set({ ready: false, recovered: undefined, error }),
    });
    return () => sub.unsubscribe();
  }, [client, channel]);
  return state.client === client && state.channel === channel ? state.value : NO_CHANNEL;
}
