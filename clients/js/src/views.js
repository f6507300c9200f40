// Typed helpers per channel family, built on `client.subscribe` (so they
// inherit its recovery and de-duplication) and keeping the state an
// application renders:
//   stats(scope)        → the latest snapshot and what changed
//   presence(scope)     → the live member list (sync + diffs applied)
//   feed(scope)         → the latest events, newest first, bounded
//   notifications()     → `system` and `user:{id}`, newest first, read state
// Each has `ready`, `unsubscribe()` and `on("change", …)`.

import { Emitter } from './emitter.js';

/** @typedef {import('./types.js').Stats} Stats */
/** @typedef {import('./types.js').StatsFrame} StatsFrame */
/** @typedef {import('./types.js').PresenceUser} PresenceUser */
/** @typedef {import('./types.js').PresenceFrame} PresenceFrame */
/** @typedef {import('./types.js').FeedEvent} FeedEvent */
/** @typedef {import('./types.js').EventFrame} EventFrame */
/** @typedef {import('./types.js').Notification} Notification */
/** @typedef {import('./types.js').NotificationFrame} NotificationFrame */
/** @typedef {import('./channel.js').ResetInfo} ResetInfo */
/** @typedef {import('./channel.js').SubscribedInfo} SubscribedInfo */
/** @typedef {import('./errors.js').PulseError} PulseError */

/**
 * The part of PulseClient the views use.
 * @typedef {{
 *   subscribe: import('./client.js').PulseClient["subscribe"],
 *   on: import('./client.js').PulseClient["on"],
 *   _userId(): string | null,
 * }} ViewHost
 */

/**
 * @typedef {object} StatsOptions
 * @property {(stats: Stats, changed: string[], frame: StatsFrame) => void} [onChange]
 */

/**
 * @typedef {{
 *   change: (stats: Stats, changed: string[], frame: StatsFrame) => void,
 *   error: (error: PulseError) => void,
 * }} StatsEvents
 */

/** @extends {Emitter<StatsEvents>} */
export class StatsView extends Emitter {
  /**
   * @param {ViewHost} client
   * @param {string} scope
   * @param {StatsOptions} [options]
   */
  constructor(client, scope, options = {}) {
    super();
    this.scope = scope;
    /** The latest snapshot. @type {Stats | null} */
    this.stats = null;
    /** @type {number | null} */
    this.version = null;
    /** JSON Pointers into `stats` of what the latest snapshot changed. @type {string[]} */
    this.changed = [];
    if (options.onChange) this.on('change', options.onChange);
    this.subscription = client.subscribe(`stats:${scope}`, {
      onMessage: (frame) => {
        this.stats = frame.stats;
        this.version = frame.version;
        this.changed = frame.changed;
        this._emit('change', frame.stats, frame.changed, frame);
      },
      onError: (error) => this._emit('error', error),
    });
    this.ready = this.subscription.ready;
  }

  unsubscribe() {
    this.subscription.unsubscribe();
  }
}

/**
 * @typedef {object} PresenceOptions
 * @property {(members: PresenceUser[], frame: PresenceFrame) => void} [onChange]
 */

/**
 * @typedef {{
 *   change: (members: PresenceUser[], frame: PresenceFrame) => void,
 *   join: (user: PresenceUser) => void,
 *   leave: (user: import('./types.js').UserRef) => void,
 *   update: (user: PresenceUser) => void,
 *   error: (error: PulseError) => void,
 * }} PresenceEvents
 */

/** @extends {Emitter<PresenceEvents>} */
export class PresenceView extends Emitter {
  /**
   * @param {ViewHost} client
   * @param {string} scope
   * @param {PresenceOptions} [options]
   */
  constructor(client, scope, options = {}) {
    super();
    this.scope = scope;
    /** @type {Map<string, PresenceUser>} */
    this.byId = new Map();
    /** Distinct users present (the hub's count). */
    this.count = 0;
    if (options.onChange) this.on('change', options.onChange);
    this.subscription = client.subscribe(`presence:${scope}`, {
      onMessage: (frame) => this._apply(frame),
      onError: (error) => this._emit('error', error),
    });
    this.ready = this.subscription.ready;
  }

  /** The members, by name (then id). @returns {PresenceUser[]} */
  get members() {
    return [...this.byId.values()].sort((a, b) => (a.name ?? a.id).localeCompare(b.name ?? b.id) || a.id.localeCompare(b.id));
  }

  /** @param {string} id */
  get(id) {
    return this.byId.get(id);
  }

  /** @param {PresenceFrame} frame */
  _apply(frame) {
    if (frame.op === 'sync') {
      this.byId = new Map(frame.users.map((u) => [u.id, u]));
    } else if (frame.op === 'leave') {
      this.byId.delete(frame.user.id);
      this._emit('leave', frame.user);
    } else {
      const user = { ...this.byId.get(frame.user.id), ...frame.user };
      this.byId.set(user.id, user);
      this._emit(frame.op, user);
    }
    this.count = typeof frame.count === 'number' ? frame.count : this.byId.size;
    this._emit('change', this.members, frame);
  }

  unsubscribe() {
    this.subscription.unsubscribe();
  }
}

/**
 * A feed event with its offset in the channel.
 * @typedef {FeedEvent & { offset: number }} FeedEntry
 */

/**
 * @typedef {object} FeedOptions
 * @property {number} [limit] events kept (default 100)
 * @property {number} [since] resume after this offset
 * @property {(entry: FeedEntry, frame: EventFrame) => void} [onEvent]
 * @property {(events: FeedEntry[]) => void} [onChange]
 * @property {(info: ResetInfo) => void} [onReset]
 */

/**
 * @typedef {{
 *   event: (entry: FeedEntry, frame: EventFrame) => void,
 *   change: (events: FeedEntry[]) => void,
 *   reset: (info: ResetInfo) => void,
 *   error: (error: PulseError) => void,
 * }} FeedEvents
 */

/** @extends {Emitter<FeedEvents>} */
export class FeedView extends Emitter {
  /**
   * @param {ViewHost} client
   * @param {string} scope
   * @param {FeedOptions} [options]
   */
  constructor(client, scope, options = {}) {
    super();
    this.scope = scope;
    this.limit = Math.max(1, options.limit ?? 100);
    /** Newest first. @type {FeedEntry[]} */
    this.events = [];
    if (options.onEvent) this.on('event', options.onEvent);
    if (options.onChange) this.on('change', options.onChange);
    if (options.onReset) this.on('reset', options.onReset);
    this.subscription = client.subscribe(`feed:${scope}`, {
      since: options.since,
      onMessage: (frame) => {
        const entry = { ...frame.event, offset: frame.offset };
        this.events = [entry, ...this.events].slice(0, this.limit);
        this._emit('event', entry, frame);
        this._emit('change', this.events);
      },
      onReset: (info) => {
        this.events = [];
        this._emit('reset', info);
        this._emit('change', this.events);
      },
      onError: (error) => this._emit('error', error),
    });
    this.ready = this.subscription.ready;
  }

  /** The offset the feed is at (null before any event). */
  get offset() {
    return this.subscription.offset;
  }

  unsubscribe() {
    this.subscription.unsubscribe();
  }
}

/**
 * A notification with where it came from and whether it was read.
 * @typedef {Notification & { channel: string, offset: number, read: boolean }} NotificationEntry
 */

/**
 * @typedef {object} NotificationsOptions
 * @property {boolean | string} [user] the user's own channel: true (default) for the token's user, an id, or false
 * @property {boolean} [system] the `system` channel (default true)
 * @property {number} [limit] notifications kept (default 50)
 * @property {(entry: NotificationEntry) => void} [onNotification]
 * @property {(items: NotificationEntry[]) => void} [onChange]
 * @property {(info: SubscribedInfo) => void} [onSubscribed] each channel's every (re)subscription: its latest
 *   `offset` tells which notifications were there already (history) and which are new
 * @property {(info: ResetInfo) => void} [onReset] a channel cannot continue from where it was (see ResetInfo);
 *   its latest notifications follow
 */

/**
 * @typedef {{
 *   notification: (entry: NotificationEntry) => void,
 *   change: (items: NotificationEntry[]) => void,
 *   subscribed: (info: SubscribedInfo) => void,
 *   reset: (info: ResetInfo) => void,
 *   error: (error: PulseError) => void,
 * }} NotificationsEvents
 */

/** @extends {Emitter<NotificationsEvents>} */
export class NotificationsView extends Emitter {
  /**
   * @param {ViewHost} client
   * @param {NotificationsOptions} [options]
   */
  constructor(client, options = {}) {
    super();
    this.limit = Math.max(1, options.limit ?? 50);
    /** Newest first. @type {NotificationEntry[]} */
    this.items = [];
    /** @type {import('./channel.js').Subscription<string>[]} */
    this.subscriptions = [];
    this._closed = false;
    if (options.onNotification) this.on('notification', options.onNotification);
    if (options.onChange) this.on('change', options.onChange);
    if (options.onSubscribed) this.on('subscribed', options.onSubscribed);
    if (options.onReset) this.on('reset', options.onReset);
    /** @type {Promise<void>[]} */
    const ready = [];
    if (options.system !== false) ready.push(this._add(client, 'system'));
    const user = options.user ?? true;
    if (typeof user === 'string') ready.push(this._add(client, `user:${user}`));
    else if (user) {
      const id = client._userId();
      if (id) ready.push(this._add(client, `user:${id}`));
      else {
        // No token yet (getToken): subscribe once the client knows who we are.
        ready.push(
          new Promise((resolve) => {
            const off = client.on('status', () => {
              if (this._closed) {
                off();
                resolve(undefined);
                return;
              }
              const known = client._userId();
              if (!known) return;
              off();
              resolve(this._add(client, `user:${known}`));
            });
          }),
        );
      }
    }
    /** Resolves when every channel is subscribed. @type {Promise<void>} */
    this.ready = Promise.all(ready).then(() => undefined);
    this.ready.catch(() => {});
  }

  /**
   * @param {ViewHost} client
   * @param {string} channel
   */
  _add(client, channel) {
    const sub = client.subscribe(channel, {
      onMessage: (frame) => this._add1(/** @type {NotificationFrame} */ (frame)),
      onSubscribed: (info) => this._emit('subscribed', info),
      onReset: (info) => this._emit('reset', info),
      onError: (error) => this._emit('error', error),
    });
    this.subscriptions.push(sub);
    return sub.ready.then(() => undefined);
  }

  /** @param {NotificationFrame} frame */
  _add1(frame) {
    const n = frame.notification;
    if (this.items.some((i) => i.id === n.id)) return;
    const entry = { ...n, channel: frame.channel, offset: frame.offset, read: false };
    this.items = [entry, ...this.items].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0)).slice(0, this.limit);
    this._emit('notification', entry);
    this._emit('change', this.items);
  }

  /** Notifications not marked read. */
  get unread() {
    return this.items.reduce((n, i) => n + (i.read ? 0 : 1), 0);
  }

  /** @param {string} id */
  markRead(id) {
    this._update((items) => items.map((i) => (i.id === id && !i.read ? { ...i, read: true } : i)));
  }

  markAllRead() {
    this._update((items) => items.map((i) => (i.read ? i : { ...i, read: true })));
  }

  /** Removes one from the list. @param {string} id */
  dismiss(id) {
    this._update((items) => items.filter((i) => i.id !== id));
  }

  /** @param {(items: NotificationEntry[]) => NotificationEntry[]} fn */
  _update(fn) {
    const next = fn(this.items);
    if (next.length === this.items.length && next.every((item, i) => item === this.items[i])) return;
    this.items = next;
    this._emit('change', this.items);
  }

  unsubscribe() {
    this._closed = true;
    for (const sub of this.subscriptions) sub.unsubscribe();
  }
}
