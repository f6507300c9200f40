// One channel of a client, whatever carries it (WebSocket or polling), and
// the application's handles on it.
//
// A `Channel` exists once per channel name and client, however many
// `Subscription`s the application holds on it (the hub has one subscription
// per channel and connection). It owns what the application sees:
//
// - Recoverable channels (`feed:`, `user:`, `system`): every frame has an
//   offset that grows by exactly 1. The channel remembers the last offset it
//   delivered and drops anything at or before it (no duplicate). A
//   re-subscription sends `since` = that offset; the hub replays what was
//   missed (`recovered: true`). When it cannot (`recovered: false`: history
//   pruned below `since`, or a channel whose offsets went back, e.g. a new
//   database), the frames that follow are held while the history endpoint is
//   asked for the same range; what it cannot give is announced by one
//   `reset` (with the missed range) before the channel's latest items (a
//   fresh start). A live frame past `last + 1` is a gap, filled the same way.
//   So the application sees offsets in order, each once, and a hole only as
//   an explicit `reset`.
// - `stats:`: full snapshots; a version at or below the last delivered one is
//   dropped (the first snapshot after a re-subscription is taken unless it is
//   the same version). `changed` is recomputed against the snapshot the
//   application last saw whenever versions are not consecutive (after a
//   reconnect, when polled).
// - `presence:`: `sync`, then diffs; the channel keeps the member list, and
//   turns polled member lists into `join`/`leave`/`update` diffs.
// - A subscription added to an established channel first gets what the
//   channel already has: the latest stats snapshot, a presence `sync` of the
//   current members, the last few items of a recoverable channel.

import { changedPointers, sameJson } from './diff.js';
import { Emitter } from './emitter.js';
import { PulseError } from './errors.js';

/** @typedef {import('./types.js').ChannelFrame} ChannelFrame */
/** @typedef {import('./types.js').StatsFrame} StatsFrame */
/** @typedef {import('./types.js').PresenceFrame} PresenceFrame */
/** @typedef {import('./types.js').PresenceUser} PresenceUser */
/** @typedef {import('./types.js').EventFrame | import('./types.js').NotificationFrame} ItemFrame */
/** @typedef {import('./types.js').HistoryPage} HistoryPage */

/**
 * Told when a channel is (re)subscribed.
 * @typedef {object} SubscribedInfo
 * @property {string} channel
 * @property {"ws" | "poll"} transport what carries the channel now
 * @property {boolean} resumed a re-subscription (after a reconnect or a change of transport), not the first
 * @property {number} [offset] recoverable channels: the channel's latest offset when subscribed
 * @property {boolean} [recovered] recoverable channels: true when the subscription resumed from the
 *   application's position with nothing missed (`since` honoured, or the gap filled from history);
 *   false on a first subscription without `since`, or when a `reset` follows
 */

/**
 * Told when a recoverable channel cannot continue from the application's
 * position: discard what you hold for it; the channel's latest items follow.
 * @typedef {object} ResetInfo
 * @property {string} channel
 * @property {"pruned" | "rewound" | "failed"} reason `pruned`: history no longer reaches back;
 *   `rewound`: the channel's offsets went back (a new database); `failed`: the history could not be read
 * @property {number} since the offset the application was at
 * @property {number | null} offset the channel's latest offset, when known
 * @property {{ from: number, to: number } | null} missed offsets that will never be delivered, when known
 */

/** @param {string} name */
export const isRecoverable = (name) => name === 'system' || name.startsWith('feed:') || name.startsWith('user:');

/**
 * @param {string} name
 * @returns {"stats" | "presence" | "recoverable"}
 */
export function familyOf(name) {
  if (name.startsWith('stats:')) return 'stats';
  if (name.startsWith('presence:')) return 'presence';
  return 'recoverable';
}

/** Errors after which a subscription is retried rather than given up. */
const RETRYABLE = new Set(['rate_limited', 'internal', 'timeout', 'network']);

/**
 * What a Channel needs from its client.
 * @typedef {object} ChannelHost
 * @property {{ historyPageSize: number, maxHeldFrames: number, replayItems: number }} _opts
 * @property {(channel: string, since: number | null, limit: number, signal: import('./types.js').Signal) => Promise<HistoryPage>} _history
 * @property {(channel: Channel) => void} _channelIdle
 * @property {(error: unknown) => void} _report
 */

export class Channel {
  /**
   * @param {ChannelHost} host
   * @param {string} name
   * @param {number | null} since the application's position, for a first subscription
   */
  constructor(host, name, since) {
    this.host = host;
    this.name = name;
    this.family = familyOf(name);
    /** @type {Set<Subscription<any>>} */
    this.subs = new Set();
    /** @type {"pending" | "subscribing" | "active" | "recovering" | "failed"} */
    this.status = 'pending';
    /** The `ref` of the subscribe in flight. @type {number | null} */
    this.ref = null;
    /** `since` of the subscribe in flight. @type {number | null} */
    this.sentSince = null;
    this.everSubscribed = false;
    /** @type {SubscribedInfo | null} */
    this.info = null;
    /** @type {PulseError | null} */
    this.error = null;
    /** Consecutive retryable failures of subscribing. */
    this.failures = 0;
    // Recoverable channels.
    /** Offset of the last frame delivered. @type {number | null} */
    this.last = typeof since === 'number' ? since : null;
    /** The channel's latest offset when last (re)subscribed. @type {number | null} */
    this.base = null;
    /** @type {ItemFrame[]} */
    this.held = [];
    this.heldOverflow = false;
    this.fillGeneration = 0;
    /** @type {import('./types.js').Aborter | null} */
    this.fillAbort = null;
    /** The last few frames, for subscriptions added later. @type {ItemFrame[]} */
    this.ring = [];
    // Stats.
    /** @type {number | null} */
    this.version = null;
    /** @type {StatsFrame | null} */
    this.lastStats = null;
    /** Nothing received since (re)subscribing. */
    this.fresh = true;
    // Presence.
    /** @type {Map<string, PresenceUser> | null} */
    this.members = null;
    this.count = 0;
  }

  /** The `since` for (re)subscribing: the application's position. */
  since() {
    return this.family === 'recoverable' ? (this.last ?? this.base) : null;
  }

  // ---- transport side -------------------------------------------------------

  /**
   * A subscribe was sent.
   * @param {number | null} ref
   * @param {number | null} since
   */
  subscribing(ref, since) {
    this.abortFill();
    this.status = 'subscribing';
    this.ref = ref;
    this.sentSince = since;
    this.fresh = true;
  }

  /** The transport is gone or changing: the channel will be subscribed again. */
  detach() {
    this.abortFill();
    if (this.status !== 'failed') this.status = 'pending';
    this.ref = null;
    this.held = [];
    this.heldOverflow = false;
    this.fresh = true;
  }

  abortFill() {
    this.fillGeneration += 1;
    this.fillAbort?.abort();
    this.fillAbort = null;
  }

  /**
   * The hub's `subscribed` reply.
   * @param {import('./types.js').SubscribedFrame} frame
   */
  onSubscribed(frame) {
    if (this.status === 'failed') return;
    this.ref = null;
    this.failures = 0;
    const resumed = this.everSubscribed;
    this.everSubscribed = true;
    if (this.family !== 'recoverable') {
      this.status = 'active';
      this.fresh = true;
      this.announce({ channel: this.name, transport: 'ws', resumed });
      return;
    }
    if (typeof frame.offset === 'number') this.base = frame.offset;
    const since = this.sentSince;
    if (since === null || frame.recovered) {
      this.status = 'active';
      this.announce({ channel: this.name, transport: 'ws', resumed, offset: frame.offset, recovered: since !== null && Boolean(frame.recovered) });
      return;
    }
    // The hub cannot replay from `since`. What it sends next (its recent
    // items, then live frames) is held while history fills what it can.
    this.status = 'recovering';
    this.held = [];
    this.fill(since, { channel: this.name, transport: 'ws', resumed, offset: frame.offset });
  }

  /**
   * A channel frame from the WebSocket, or a synthesised one from polling.
   * @param {ChannelFrame} frame
   */
  onFrame(frame) {
    if (this.status === 'recovering') {
      if (this.family === 'recoverable') this.hold(/** @type {ItemFrame} */ (frame));
      return;
    }
    // Before `subscribed`: frames of an earlier subscription, replayed anyway.
    if (this.status !== 'active') return;
    if (frame.type === 'stats') this.applyStats(frame);
    else if (frame.type === 'presence') this.applyPresence(frame);
    else if (frame.type === 'event' || frame.type === 'notification') this.applyItem(frame);
  }

  /**
   * The subscribe was refused. Returns whether it should be retried.
   * @param {PulseError} error
   */
  onSubscribeError(error) {
    this.ref = null;
    if (RETRYABLE.has(error.code)) {
      this.failures += 1;
      this.status = 'pending';
      return true;
    }
    this.fail(error);
    return false;
  }

  /**
   * The channel is over for good (refused, or ended by the hub).
   * @param {PulseError} error
   */
  fail(error) {
    this.abortFill();
    this.status = 'failed';
    this.error = error;
    for (const sub of [...this.subs]) sub._fail(error);
    this.subs.clear();
  }

  // ---- polling side ---------------------------------------------------------

  /** Polling took over: like a `subscribed` for stats and presence. */
  pollStarted() {
    if (this.status === 'failed') return;
    const resumed = this.everSubscribed;
    this.everSubscribed = true;
    this.status = 'active';
    this.failures = 0;
    this.fresh = true;
    this.announce({ channel: this.name, transport: 'poll', resumed });
  }

  /**
   * A history page read by the polling loop from `since` (the channel's own
   * position when asked). The first one stands for `subscribed`.
   * @param {HistoryPage} body
   * @param {number | null} since
   * @param {boolean} first
   */
  pollPage(body, since, first) {
    if (this.status === 'failed') return;
    const items = body.items || [];
    const lost = since !== null && !body.recovered;
    if (first) {
      const resumed = this.everSubscribed;
      this.everSubscribed = true;
      this.failures = 0;
      this.status = 'active';
      const info = { channel: this.name, transport: /** @type {const} */ ('poll'), resumed, offset: body.offset };
      if (lost) this.reset(since, body, info);
      else this.announce({ ...info, recovered: since !== null });
    } else if (lost) {
      this.reset(since, body, null);
    }
    for (const frame of items) this.acceptPaged(frame);
    if (this.last === null) this.base = body.offset;
  }

  /**
   * A polled presence list, turned into `sync` then diffs.
   * @param {{ count: number, users: PresenceUser[] }} body
   */
  pollPresence(body) {
    if (this.status !== 'active') return;
    const users = body.users || [];
    const channel = this.name;
    if (this.fresh || this.members === null) {
      this.applyPresence({ type: 'presence', channel, op: 'sync', count: body.count, users, polled: true });
      return;
    }
    const next = new Map(users.map((u) => [u.id, u]));
    for (const [id, old] of [...this.members]) {
      if (next.has(id)) continue;
      const user = old.name === undefined ? { id } : { id, name: old.name };
      this.applyPresence({ type: 'presence', channel, op: 'leave', count: this.members.size - 1, user, polled: true });
    }
    for (const user of users) {
      const old = this.members.get(user.id);
      if (!old) this.applyPresence({ type: 'presence', channel, op: 'join', count: this.members.size + 1, user, polled: true });
      else if (!sameJson(old, user)) this.applyPresence({ type: 'presence', channel, op: 'update', count: this.members.size, user, polled: true });
    }
  }

  // ---- recoverable channels -------------------------------------------------

  /** @param {ItemFrame} frame */
  hold(frame) {
    if (this.held.length >= this.host._opts.maxHeldFrames) {
      // Bounded: what is dropped is still in history and is read again.
      this.heldOverflow = true;
      return;
    }
    this.held.push(frame);
  }

  /** @param {ItemFrame} frame a live frame */
  applyItem(frame) {
    const offset = frame.offset;
    if (typeof offset !== 'number') return;
    if (this.last !== null && offset <= this.last) return; // duplicate
    if (this.last === null || offset === this.last + 1) {
      this.last = offset;
      this.deliver(frame);
      return;
    }
    // A gap: the hub fills gaps itself, so this is a defence; fill from history.
    this.status = 'recovering';
    this.held = [frame];
    this.fill(this.last, null);
  }

  /** @param {ItemFrame} frame a frame of a history page: contiguous by contract */
  acceptPaged(frame) {
    const offset = frame.offset;
    if (typeof offset !== 'number') return;
    if (this.last !== null && offset <= this.last) return;
    this.last = offset;
    this.deliver(frame);
  }

  /**
   * Reads history from `since` and delivers it, then what was held. Announces
   * `pending` (a `subscribed` being recovered) once the outcome is known.
   * @param {number} since
   * @param {Omit<SubscribedInfo, "recovered"> | null} pending
   */
  async fill(since, pending) {
    this.fillAbort?.abort();
    const generation = ++this.fillGeneration;
    const abort = new AbortController();
    this.fillAbort = abort;
    const limit = this.host._opts.historyPageSize;
    let cursor = since;
    let first = true;
    try {
      for (;;) {
        const body = await this.host._history(this.name, cursor, limit, abort.signal);
        if (generation !== this.fillGeneration) return;
        const items = body.items || [];
        if (first) {
          first = false;
          if (!body.recovered) {
            this.reset(since, body, pending);
            for (const frame of items) this.acceptPaged(frame);
            break;
          }
          if (pending) this.announce({ ...pending, recovered: true });
        }
        for (const frame of items) this.acceptPaged(frame);
        if (items.length < limit) break;
        cursor = this.last ?? cursor;
      }
    } catch (error) {
      if (generation !== this.fillGeneration) return;
      // No history: start afresh from what the hub sent.
      this.host._report(error);
      this.last = null;
      this.ring = [];
      if (pending) this.announce({ ...pending, recovered: false });
      this.emitReset({ channel: this.name, reason: 'failed', since, offset: pending?.offset ?? null, missed: null });
    }
    if (generation !== this.fillGeneration) return;
    this.fillAbort = null;
    this.status = 'active';
    const held = this.held;
    const overflow = this.heldOverflow;
    this.held = [];
    this.heldOverflow = false;
    for (const frame of held) this.onFrame(frame);
    if (overflow && this.status === 'active' && this.last !== null) {
      this.status = 'recovering';
      this.fill(this.last, null);
    }
  }

  /**
   * History does not reach back to `since`: announce the hole, start afresh.
   * @param {number} since
   * @param {HistoryPage} body
   * @param {Omit<SubscribedInfo, "recovered"> | null} pending
   */
  reset(since, body, pending) {
    const items = body.items || [];
    const rewound = body.offset < since;
    const first = items.length > 0 ? items[0].offset : body.offset + 1;
    this.last = null;
    this.ring = [];
    if (pending) this.announce({ ...pending, recovered: false });
    this.emitReset({
      channel: this.name,
      reason: rewound ? 'rewound' : 'pruned',
      since,
      offset: body.offset,
      missed: rewound || first <= since + 1 ? null : { from: since + 1, to: first - 1 },
    });
  }

  // ---- stats and presence ---------------------------------------------------

  /** @param {StatsFrame} frame */
  applyStats(frame) {
    const fresh = this.fresh;
    this.fresh = false;
    if (this.version !== null && (fresh ? frame.version === this.version : frame.version <= this.version)) return;
    let changed = frame.changed;
    if (this.lastStats !== null && (frame.polled || frame.version !== /** @type {number} */ (this.version) + 1 || !Array.isArray(changed))) {
      changed = changedPointers(this.lastStats.stats, frame.stats);
    } else if (!Array.isArray(changed)) {
      changed = [];
    }
    const out = changed === frame.changed ? frame : { ...frame, changed };
    this.version = frame.version;
    this.lastStats = out;
    this.deliver(out);
  }

  /** @param {PresenceFrame} frame */
  applyPresence(frame) {
    this.fresh = false;
    if (frame.op === 'sync') {
      this.members = new Map((frame.users || []).map((u) => [u.id, u]));
    } else {
      const members = this.members ?? (this.members = new Map());
      if (frame.op === 'leave') members.delete(frame.user.id);
      else members.set(frame.user.id, { ...members.get(frame.user.id), ...frame.user });
    }
    this.count = typeof frame.count === 'number' ? frame.count : (this.members?.size ?? 0);
    this.deliver(frame);
  }

  // ---- to the application ---------------------------------------------------

  /** @param {ChannelFrame} frame */
  deliver(frame) {
    if (this.family === 'recoverable') {
      this.ring.push(/** @type {ItemFrame} */ (frame));
      if (this.ring.length > this.host._opts.replayItems) this.ring.shift();
    }
    for (const sub of this.subs) sub._message(frame);
  }

  /** @param {SubscribedInfo} info */
  announce(info) {
    this.info = info;
    for (const sub of this.subs) sub._subscribed(info);
  }

  /** @param {ResetInfo} info */
  emitReset(info) {
    for (const sub of this.subs) sub._reset(info);
  }

  /**
   * What a subscription added now gets first.
   * @returns {ChannelFrame[]}
   */
  snapshot() {
    if (this.family === 'stats') return this.lastStats ? [this.lastStats] : [];
    if (this.family === 'presence') {
      if (!this.members) return [];
      return [{ type: 'presence', channel: this.name, op: 'sync', count: this.count, users: [...this.members.values()] }];
    }
    return [...this.ring];
  }

  /** @param {Subscription<any>} sub */
  add(sub) {
    this.subs.add(sub);
    if (this.status === 'active' && this.info) sub._catchUp(this.info, this.snapshot());
  }

  /** @param {Subscription<any>} sub */
  remove(sub) {
    this.subs.delete(sub);
    if (this.subs.size === 0) this.host._channelIdle(this);
  }
}

/**
 * @template {string} [C=string]
 * @typedef {object} SubscribeOptions
 * @property {(frame: import('./types.js').FrameOf<C>) => void} [onMessage] the channel's frames, in order, de-duplicated
 * @property {(info: SubscribedInfo) => void} [onSubscribed] every (re)subscription, with `recovered`
 * @property {(info: ResetInfo) => void} [onReset] a recoverable channel starts afresh (see ResetInfo)
 * @property {(error: PulseError) => void} [onError] the subscription was refused or ended by the hub
 * @property {number} [since] recoverable channels: resume after this offset (e.g. one the application stored)
 */

/**
 * @template {string} [C=string]
 * @typedef {{
 *   message: (frame: import('./types.js').FrameOf<C>) => void,
 *   subscribed: (info: SubscribedInfo) => void,
 *   reset: (info: ResetInfo) => void,
 *   error: (error: PulseError) => void,
 *   unsubscribed: () => void,
 * }} SubscriptionEvents
 */

/**
 * The application's handle on one channel. Several handles on one channel
 * share one subscription on the hub.
 * @template {string} [C=string]
 * @extends {Emitter<SubscriptionEvents<C>>}
 */
export class Subscription extends Emitter {
  /**
   * @param {Channel} channel
   * @param {SubscribeOptions<C>} options
   */
  constructor(channel, options = {}) {
    super();
    this._channel = channel;
    /** @type {C} */
    this.channel = /** @type {C} */ (channel.name);
    /** @type {"subscribing" | "subscribed" | "unsubscribed" | "failed"} */
    this.state = 'subscribing';
    /** Recoverable channels: whether the latest (re)subscription lost nothing. @type {boolean | undefined} */
    this.recovered = undefined;
    /** @type {PulseError | null} */
    this.error = null;
    /** Frames held back while this handle catches up with an established channel. @type {import('./types.js').ChannelFrame[] | null} */
    this._queue = null;
    if (options.onMessage) this.on('message', options.onMessage);
    if (options.onSubscribed) this.on('subscribed', options.onSubscribed);
    if (options.onReset) this.on('reset', options.onReset);
    if (options.onError) this.on('error', options.onError);
    /** @type {(info: SubscribedInfo) => void} */
    let resolve = () => {};
    /** @type {(error: PulseError) => void} */
    let reject = () => {};
    /**
     * Resolves on the first `subscribed`; rejects with the PulseError that
     * refused it (never an unhandled rejection when not awaited).
     * @type {Promise<SubscribedInfo>}
     */
    this.ready = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.ready.catch(() => {});
    this._resolve = resolve;
    this._reject = reject;
  }

  /** Recoverable channels: the offset the application is at (null before any). */
  get offset() {
    return this._channel.since();
  }

  /** Stops this handle; the hub subscription ends with the last handle. */
  unsubscribe() {
    if (this.state === 'unsubscribed' || this.state === 'failed') return;
    this.state = 'unsubscribed';
    this._queue = null;
    this._reject(new PulseError('closed', `unsubscribed from ${this.channel} before it was subscribed`, { channel: this.channel }));
    this._channel.remove(this);
    this._emit('unsubscribed');
  }

  /** @param {import('./types.js').ChannelFrame} frame */
  _message(frame) {
    if (this.state === 'unsubscribed' || this.state === 'failed') return;
    if (this._queue) {
      this._queue.push(frame);
      return;
    }
    this._emit('message', /** @type {import('./types.js').FrameOf<C>} */ (frame));
  }

  /** @param {SubscribedInfo} info */
  _subscribed(info) {
    if (this.state === 'unsubscribed' || this.state === 'failed') return;
    this.state = 'subscribed';
    this.recovered = info.recovered;
    this._resolve(info);
    this._emit('subscribed', info);
  }

  /** @param {ResetInfo} info */
  _reset(info) {
    if (this.state === 'unsubscribed' || this.state === 'failed') return;
    this.recovered = false;
    this._emit('reset', info);
  }

  /** @param {PulseError} error */
  _fail(error) {
    if (this.state === 'unsubscribed' || this.state === 'failed') return;
    this.state = 'failed';
    this.error = error;
    this._queue = null;
    this._reject(error);
    this._emit('error', error);
  }

  /**
   * The client closed: ends quietly (`ready` rejects with `closed`).
   * @param {PulseError} error
   */
  _close(error) {
    if (this.state === 'unsubscribed' || this.state === 'failed') return;
    this.state = 'unsubscribed';
    this._queue = null;
    this._reject(new PulseError(error.code, error.message, { channel: this.channel }));
    this._emit('unsubscribed');
  }

  /**
   * Added to an established channel: its `subscribed` and current content,
   * after the caller had the chance to add listeners; live frames meanwhile
   * wait behind them.
   * @param {SubscribedInfo} info
   * @param {import('./types.js').ChannelFrame[]} frames
   */
  _catchUp(info, frames) {
    this._queue = frames;
    queueMicrotask(() => {
      const queue = this._queue;
      this._queue = null;
      if (!queue) return;
      this._subscribed({ ...info, resumed: false });
      for (const frame of queue) this._message(frame);
    });
  }
}
