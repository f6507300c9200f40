// `PulseClient`: one connection to a hub, whatever carries it, and the
// application's subscriptions and commands on it.
//
// States (`client.state`, event `state`):
//   connecting   → the first attempt, before any `welcome`
//   connected    → a WebSocket said `welcome`; channels are (re)subscribed
//   reconnecting → the link is lost (or HTTP polls fail); the next attempt is
//                  at `status.retryAt` (jittered exponential backoff, capped)
//   polling      → WebSocket does not work here but HTTP does: the HTTP
//                  fallback carries the channels while a WebSocket is probed
//                  in the background; its `welcome` switches back
//   offline      → the device says it is offline; `online` retries at once
//   closed       → terminal: `close()`, or the token was refused or expired
//                  and `getToken` could not replace it (`status.reason`,
//                  `status.error`, and an `error` event)
// While the client waits for `getToken` because it has no token that works
// (none yet, refused, expired), `status.awaitingToken` says why; a lost
// WebSocket shows `reconnecting` (or `connecting`) meanwhile.
//
// WebSocket rules (from the dashboard's transport.js):
// - `/ws?token=…`; `welcome` within `welcomeTimeoutMs` or the attempt fails.
// - An attempt that fails before `welcome` is followed by one HTTP request:
//   401 → the token is refused (getToken, else closed); a network error →
//   the hub is unreachable (retry); success → WebSocket itself fails here
//   (a proxy): after `failuresBeforePolling` such failures, polling.
// - App-level `ping` every `pingIntervalMs`; no `pong` in `pongTimeoutMs`
//   means a dead link (sleep, half-open TCP): the socket is replaced.
// - A connection that was live for 10 s, or closed by a restarting hub
//   (1001), retries from the shortest delay; 1008 "token expired" goes to
//   token handling.
// - After `welcome`, channels are subscribed again (recoverable ones with
//   `since`; see channel.js), at most `subscribeBurst` at once and then
//   `subscribeRate` a second, under the hub's command limit.
//
// Commands are promises: resolved by the reply with the same `ref`,
// rejected with a PulseError carrying the hub's `code`, or `timeout` after
// `commandTimeoutMs`. Commands issued without a connection wait for one (at
// most `maxQueuedCommands`), and commands in flight on a lost connection are
// sent again on the next one: every command of the protocol is idempotent.
//
// Tokens: `exp` is read from the JWT; `getToken` is called before it passes
// (at `refreshMarginMs`, or a fifth of the lifetime, before) and the new
// token is sent as `refresh`. A refused or expired token also goes to
// `getToken`. When there is no `getToken`, or it fails until the token
// expires, the client closes with reason `unauthorized`.
//
// `close()` clears every timer, aborts every request and closes the socket:
// a Node process exits by itself afterwards.

import { backoff, between } from './backoff.js';
import { Channel, Subscription } from './channel.js';
import { Emitter } from './emitter.js';
import { PulseError, codeOfStatus } from './errors.js';
import { tokenClaims, tokenExpiry } from './jwt.js';
import { Poller } from './poller.js';
import { Timers } from './timers.js';
import { FeedView, NotificationsView, PresenceView, StatsView } from './views.js';

/** @typedef {import('./types.js').ServerFrame} ServerFrame */
/** @typedef {import('./types.js').WelcomeFrame} WelcomeFrame */
/** @typedef {import('./types.js').UserRef} UserRef */

/**
 * The connection states.
 * @typedef {"connecting" | "connected" | "reconnecting" | "polling" | "offline" | "closed"} ConnectionState
 */

/**
 * Everything about the connection now (`client.status`, event `status`).
 * @typedef {object} ConnectionStatus
 * @property {ConnectionState} state
 * @property {"ws" | "poll" | null} transport
 * @property {number} attempt reconnect attempts since the last success
 * @property {number | null} retryAt when the next attempt starts (ms since the epoch), while reconnecting
 * @property {number | null} rtt the last app-level ping's round trip, ms
 * @property {string | null} instance the hub instance of the current connection
 * @property {string | null} session the hub's session id of the current connection
 * @property {UserRef | null} user who the hub says we are
 * @property {"initial" | "refused" | "expired" | null} awaitingToken the client waits for `getToken` because it
 *   has no token that works: none yet, the hub refused it, or it expired (null otherwise, also while a token
 *   that still works is refreshed)
 * @property {string | null} reason why the client is closed: "client" (close()), "unauthorized"
 * @property {PulseError | null} error the error that closed the client
 */

/**
 * A WebSocket constructor: the browser's, or e.g. the `ws` package's in Node.
 * @typedef {new (url: string) => any} WebSocketConstructor
 */

/**
 * The `fetch` the HTTP fallback and recovery use.
 * @typedef {(url: string, init?: any) => Promise<any>} FetchFunction
 */

/**
 * Why `getToken` is called: the token expires soon, was refused, expired, or
 * there is none yet.
 * @typedef {{ reason: "expiring" | "refused" | "expired" | "initial" | "manual" }} TokenRequest
 */

/**
 * @typedef {object} PulseClientOptions
 * @property {string} [token] the JWT (PROTOCOL.md "Tokens")
 * @property {(request: TokenRequest) => string | Promise<string>} [getToken] a fresh JWT, before expiry or
 *   when the hub refuses the current one; throw (or reject) when there is none
 * @property {WebSocketConstructor} [WebSocket] default `globalThis.WebSocket`
 * @property {FetchFunction} [fetch] default `globalThis.fetch`
 * @property {string} [httpUrl] the hub's HTTP base URL; default: the WebSocket URL with http(s) and without `/ws`
 * @property {boolean} [polling] fall back to HTTP polling when WebSocket fails but HTTP works (default true)
 * @property {number} [reconnectBaseMs] first reconnect delay (default 500; jittered in [d/2, d])
 * @property {number} [reconnectMaxMs] the cap of the exponential backoff (default 30000)
 * @property {number} [welcomeTimeoutMs] default 10000
 * @property {number} [commandTimeoutMs] default 10000
 * @property {number} [pingIntervalMs] app-level ping, for the RTT and dead links; 0 turns it off (default 15000)
 * @property {number} [pongTimeoutMs] default 10000
 * @property {number} [failuresBeforePolling] WebSocket failures while HTTP works before polling (default 2)
 * @property {number} [pollIntervalMs] stats, presence and notifications polling (default 5000)
 * @property {number} [longPollWaitS] feed long-poll `wait` (default 25)
 * @property {[number, number]} [probeIntervalMs] WebSocket probe while polling, a random time in this range (default [10000, 15000])
 * @property {number} [historyPageSize] items per history request (default 200, at most 1000)
 * @property {number} [maxQueuedCommands] commands waiting for a connection (default 100)
 * @property {number} [maxHeldFrames] frames held per channel while its history is read (default 1000)
 * @property {number} [replayItems] recent items a late subscription to a recoverable channel gets (default 20)
 * @property {number} [refreshMarginMs] refresh the token this long before `exp` at most (default 60000)
 * @property {number} [subscribeBurst] subscribes sent at once after a reconnect (default 40)
 * @property {number} [subscribeRate] then per second (default 15)
 * @property {number} [closeTimeoutMs] how long close() waits for the closing handshake (default 1000)
 */

/**
 * @typedef {{
 *   state: (state: ConnectionState, status: ConnectionStatus) => void,
 *   status: (status: ConnectionStatus) => void,
 *   welcome: (frame: WelcomeFrame) => void,
 *   error: (error: PulseError) => void,
 *   frame: (frame: ServerFrame) => void,
 * }} ClientEvents
 */

const DEFAULTS = {
  polling: true,
  reconnectBaseMs: 500,
  reconnectMaxMs: 30_000,
  welcomeTimeoutMs: 10_000,
  commandTimeoutMs: 10_000,
  pingIntervalMs: 15_000,
  pongTimeoutMs: 10_000,
  failuresBeforePolling: 2,
  pollIntervalMs: 5_000,
  longPollWaitS: 25,
  probeIntervalMs: /** @type {[number, number]} */ ([10_000, 15_000]),
  historyPageSize: 200,
  maxQueuedCommands: 100,
  maxHeldFrames: 1000,
  replayItems: 20,
  refreshMarginMs: 60_000,
  subscribeBurst: 40,
  subscribeRate: 15,
  closeTimeoutMs: 1000,
};

/** A connection that stayed up this long starts the backoff afresh. */
const STABLE_MS = 10_000;
const CHECK_TIMEOUT_MS = 10_000;
const WS_OPEN = 1;
const WS_CLOSED = 3;

/**
 * A command waiting for its reply.
 * @typedef {object} Pending
 * @property {number} ref
 * @property {Record<string, unknown> & { type: string, ref: number }} frame
 * @property {(frame: ServerFrame) => void} onReply
 * @property {(error: PulseError) => void} onError
 * @property {boolean} channel the client's own subscribe/unsubscribe (not re-sent: channels are re-subscribed)
 */

/**
 * @param {string} url
 * @param {string | undefined} httpUrl
 */
function endpoints(url, httpUrl) {
  const here = /** @type {{ location?: { href: string } }} */ (globalThis).location?.href;
  const ws = new URL(url, here);
  if (ws.protocol === 'http:') ws.protocol = 'ws:';
  else if (ws.protocol === 'https:') ws.protocol = 'wss:';
  if (ws.protocol !== 'ws:' && ws.protocol !== 'wss:') throw new TypeError(`not a WebSocket URL: ${url}`);
  let http;
  if (httpUrl) {
    http = new URL(httpUrl, here);
  } else {
    http = new URL(ws.href);
    http.protocol = ws.protocol === 'wss:' ? 'https:' : 'http:';
    http.pathname = http.pathname.replace(/\/ws\/?$/, '');
    http.search = '';
  }
  http.hash = '';
  return { ws: ws.href, http: http.href.replace(/\/+$/, '') };
}

/** @param {unknown} data @returns {any} */
function parseFrame(data) {
  const text = typeof data === 'string' ? data : data && typeof data === 'object' && 'toString' in data && !(data instanceof ArrayBuffer) ? String(data) : null;
  if (text === null) return null;
  try {
    const frame = JSON.parse(text);
    return frame && typeof frame === 'object' && typeof frame.type === 'string' ? frame : null;
  } catch {
    return null;
  }
}

/**
 * The status of a client before its first connection (also what bindings
 * such as the React hooks show before there is a client).
 * @type {Readonly<ConnectionStatus>}
 */
export const INITIAL_STATUS = Object.freeze({
  state: 'connecting',
  transport: null,
  attempt: 0,
  retryAt: null,
  rtt: null,
  instance: null,
  session: null,
  user: null,
  awaitingToken: null,
  reason: null,
  error: null,
});

/** @extends {Emitter<ClientEvents>} */
export class PulseClient extends Emitter {
  /**
   * Connects at once (in a microtask, so listeners added right after the
   * constructor see every state).
   * @param {string} url the hub's WebSocket URL, e.g. "wss://hub.example.com/ws" (relative in a browser page)
   * @param {PulseClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    const WS = options.WebSocket ?? /** @type {{ WebSocket?: WebSocketConstructor }} */ (globalThis).WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('PulseClient: no WebSocket here; pass options.WebSocket (in Node 20: the `ws` package)');
    }
    const fetchFn = options.fetch ?? (typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : null);
    if (!options.token && !options.getToken) throw new TypeError('PulseClient: options.token or options.getToken is required');
    /** @type {WebSocketConstructor} */
    this._WS = WS;
    /** @type {FetchFunction | null} */
    this._fetch = fetchFn;
    const urls = endpoints(url, options.httpUrl);
    this._wsUrl = urls.ws;
    this._httpBase = urls.http;
    /** @type {typeof DEFAULTS} */
    this._opts = { ...DEFAULTS };
    for (const key of /** @type {(keyof typeof DEFAULTS)[]} */ (Object.keys(DEFAULTS))) {
      if (options[key] !== undefined) /** @type {any} */ (this._opts)[key] = options[key];
    }
    this._opts.historyPageSize = Math.max(1, Math.min(1000, this._opts.historyPageSize));
    if (!this._fetch) this._opts.polling = false;
    /** @type {string | null} */
    this._token = options.token ?? null;
    this._getToken = options.getToken ?? null;
    this._timers = new Timers();
    /** @type {Map<string, Channel>} */
    this._channels = new Map();
    /** @type {Set<Channel>} channels waiting for their subscribe to be sent */
    this._toSubscribe = new Set();
    this._subscribeTokens = this._opts.subscribeBurst;
    this._subscribeRefill = Date.now();
    /** @type {Map<number, Pending>} */
    this._pending = new Map();
    /** @type {Pending[]} commands waiting for a connection */
    this._queue = [];
    this._nextRef = 1;
    /** @type {any} the WebSocket of the current attempt or connection */
    this._ws = null;
    this._live = false;
    /** @type {"ws" | "poll" | "closed"} */
    this._mode = 'ws';
    this._attempt = 0;
    this._wsFailures = 0;
    this._authFailures = 0;
    this._everConnected = false;
    this._liveSince = 0;
    /** @type {Poller | null} */
    this._poller = null;
    /** @type {import('./types.js').Aborter | null} */
    this._checkAbort = null;
    /** @type {Promise<void> | null} */
    this._refreshing = null;
    this._authInFlight = false;
    /** @type {Promise<void> | null} */
    this._closing = null;
    /** @type {number | null} */
    this._pingSentAt = null;
    /** @type {ConnectionStatus} */
    this._status = { ...INITIAL_STATUS };
    this._onOnline = () => this._wake();
    this._onOffline = () => this._wentOffline();
    this._onVisibility = () => {
      const doc = /** @type {{ visibilityState?: string }} */ (/** @type {any} */ (globalThis).document);
      if (doc?.visibilityState === 'visible') this._wake();
    };
    this._listen(true);
    queueMicrotask(() => this._start());
  }

  // ---- public ------------------------------------------------------------------

  /** @returns {ConnectionState} */
  get state() {
    return this._status.state;
  }

  /** @returns {ConnectionStatus} */
  get status() {
    return this._status;
  }

  /** The current token. */
  get token() {
    return this._token;
  }

  /**
   * Subscribes to a channel (`stats:{scope}`, `presence:{scope}`,
   * `feed:{scope}`, `user:{id}`, `system`). The subscription lives until
   * `unsubscribe()`, across reconnects and changes of transport.
   * @template {string} C
   * @param {C} channel
   * @param {import('./channel.js').SubscribeOptions<C>} [options]
   * @returns {Subscription<C>}
   */
  subscribe(channel, options = {}) {
    if (typeof channel !== 'string' || channel.length === 0) throw new TypeError('subscribe: a channel name is required');
    let ch = this._channels.get(channel);
    const created = !ch || ch.status === 'failed';
    if (!ch || ch.status === 'failed') {
      ch = new Channel(this, channel, typeof options.since === 'number' ? options.since : null);
      this._channels.set(channel, ch);
    }
    const sub = /** @type {Subscription<C>} */ (new Subscription(ch, options));
    if (this._mode === 'closed') {
      sub._fail(new PulseError('closed', 'the client is closed', { channel }));
      this._channels.delete(channel);
      return sub;
    }
    ch.add(sub);
    if (created) this._startChannel(ch);
    return sub;
  }

  /**
   * A scope's live statistics: the latest snapshot and what changed.
   * @param {string} scope
   * @param {import('./views.js').StatsOptions} [options]
   */
  stats(scope, options) {
    return new StatsView(this, scope, options);
  }

  /**
   * Who is online in a scope, as a live member list.
   * @param {string} scope
   * @param {import('./views.js').PresenceOptions} [options]
   */
  presence(scope, options) {
    return new PresenceView(this, scope, options);
  }

  /**
   * A scope's domain events, newest first, at most `limit`.
   * @param {string} scope
   * @param {import('./views.js').FeedOptions} [options]
   */
  feed(scope, options) {
    return new FeedView(this, scope, options);
  }

  /**
   * System notifications and the user's own (`user:{id}`), newest first.
   * @param {import('./views.js').NotificationsOptions} [options]
   */
  notifications(options) {
    return new NotificationsView(this, options);
  }

  /**
   * Sends a command; resolves with the reply carrying its `ref`.
   * @param {{ type: string, [field: string]: unknown }} command
   * @param {{ timeoutMs?: number }} [options]
   * @returns {Promise<ServerFrame>}
   */
  command(command, options = {}) {
    const promise = new Promise((resolve, reject) => {
      this._command(command, { onReply: resolve, onError: reject, timeoutMs: options.timeoutMs });
    });
    promise.catch(() => {});
    return /** @type {Promise<ServerFrame>} */ (promise);
  }

  /**
   * App-level ping; resolves with the round-trip time in ms.
   * @returns {Promise<number>}
   */
  ping() {
    const t0 = now();
    const promise = this.command({ type: 'ping' }).then(() => {
      const rtt = Math.max(0, Math.round(now() - t0));
      this._patch({ rtt });
      return rtt;
    });
    promise.catch(() => {});
    return promise;
  }

  /**
   * Marks the user active in presence (`activity`).
   * @param {string} [action] default "viewing"
   * @param {string} [target]
   * @returns {Promise<void>}
   */
  activity(action = 'viewing', target) {
    /** @type {{ type: string, action: string, target?: string }} */
    const command = { type: 'activity', action };
    if (target !== undefined) command.target = target;
    const promise = this.command(command).then(() => undefined);
    promise.catch(() => {});
    return promise;
  }

  /**
   * Replaces the token: used by the next requests and connections, and sent
   * as `refresh` on a live connection (resolves on the hub's `ok`).
   * @param {string} token
   * @returns {Promise<void>}
   */
  setToken(token) {
    if (typeof token !== 'string' || token.length === 0) return rejected(new TypeError('setToken: a token is required'));
    this._token = token;
    this._scheduleRefresh();
    if (!this._live) return Promise.resolve();
    const promise = this.command({ type: 'refresh', token }).then(() => undefined);
    promise.catch(() => {});
    return promise;
  }

  /**
   * Asks `getToken` for a token now and uses it (see setToken).
   * @returns {Promise<void>}
   */
  refreshToken() {
    return this._refresh('manual');
  }

  /** Retries now instead of waiting for the next attempt (or probes, while polling). */
  reconnect() {
    this._wake();
  }

  /**
   * Closes the connection, ends every subscription, rejects pending commands
   * (`closed`) and clears every timer. Resolves when the socket is closed.
   * @returns {Promise<void>}
   */
  close() {
    if (!this._closing) this._closing = this._shutdown('client', null);
    return this._closing;
  }

  // ---- lifecycle ---------------------------------------------------------------

  async _start() {
    if (this._mode === 'closed') return;
    if (!this._token) {
      this._patch({ awaitingToken: 'initial' });
      try {
        await this._refresh('initial');
      } catch (e) {
        this._terminate('unauthorized', `getToken gave no token: ${messageOf(e)}`, e);
        return;
      }
      this._patch({ awaitingToken: null });
    }
    this._scheduleRefresh();
    this._connect();
  }

  /** @param {boolean} on */
  _listen(on) {
    const g = /** @type {any} */ (globalThis);
    const method = on ? 'addEventListener' : 'removeEventListener';
    if (typeof g.addEventListener === 'function' && typeof g.removeEventListener === 'function') {
      g[method]('online', this._onOnline);
      g[method]('offline', this._onOffline);
    }
    const doc = g.document;
    if (doc && typeof doc.addEventListener === 'function') doc[method]('visibilitychange', this._onVisibility);
  }

  _offline() {
    const nav = /** @type {{ navigator?: { onLine?: boolean } }} */ (globalThis).navigator;
    return nav?.onLine === false;
  }

  /** `online`, page visible again, or `reconnect()`: do not wait. */
  _wake() {
    if (this._mode === 'closed') return;
    if (this._live) {
      if (this._opts.pingIntervalMs > 0) this._keepalive();
      return;
    }
    if (this._ws) return; // an attempt is under way
    this._timers.clear('reconnect');
    this._timers.clear('probe');
    if (this._mode === 'ws') this._attempt = 0;
    this._connect();
  }

  _wentOffline() {
    if (this._mode !== 'ws' || this._live) return;
    this._timers.clear('reconnect');
    this._set('offline', { retryAt: null });
    // `online` retries at once; this is the fallback for a browser that never says so.
    this._timers.set('reconnect', this._opts.reconnectMaxMs, () => this._connect());
  }

  /**
   * @param {ConnectionState} state
   * @param {Partial<ConnectionStatus>} [patch]
   */
  _set(state, patch = {}) {
    const previous = this._status.state;
    if (previous === 'closed') return;
    this._status = { ...this._status, ...patch, state };
    if (previous !== state) this._emit('state', state, this._status);
    this._emit('status', this._status);
  }

  /** @param {Partial<ConnectionStatus>} patch */
  _patch(patch) {
    this._set(this._status.state, patch);
  }

  // ---- WebSocket -----------------------------------------------------------------

  _socketUrl() {
    const sep = this._wsUrl.includes('?') ? '&' : '?';
    return `${this._wsUrl}${sep}token=${encodeURIComponent(this._token ?? '')}`;
  }

  /** Opens a WebSocket: a (re)connection, or a probe while polling. */
  _connect() {
    if (this._mode === 'closed' || this._ws) return;
    this._timers.clear('reconnect');
    const probing = this._mode === 'poll';
    if (!probing) {
      if (this._offline()) {
        this._wentOffline();
        return;
      }
      this._set(this._everConnected || this._attempt > 0 ? 'reconnecting' : 'connecting', { transport: 'ws', retryAt: null, attempt: this._attempt });
    }
    let ws;
    try {
      ws = new this._WS(this._socketUrl());
    } catch (e) {
      this._report(e);
      this._afterFailure();
      return;
    }
    this._ws = ws;
    this._live = false;
    let welcomed = false;
    let done = false;
    this._timers.set('welcome', this._opts.welcomeTimeoutMs, () => {
      if (this._ws === ws && !welcomed) this._kill(ws, 4000, 'no welcome');
    });
    /** @param {{ data: unknown }} msg */
    ws.onmessage = (msg) => {
      if (this._ws !== ws) return;
      const frame = parseFrame(msg.data);
      if (!frame) return;
      if (!welcomed) {
        if (frame.type !== 'welcome') return;
        welcomed = true;
        this._timers.clear('welcome');
        this._onWelcome(frame);
        return;
      }
      this._onFrame(frame);
    };
    /** @param {{ code?: number, reason?: string } | undefined} ev */
    ws.onclose = (ev) => {
      if (done) return;
      done = true;
      if (this._ws !== ws) return;
      this._lost(welcomed, ev?.code ?? 1006, String(ev?.reason ?? ''));
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  /**
   * Gives up on a socket now (no welcome, no pong): a dead link may take
   * minutes to report its close.
   * @param {any} ws
   * @param {number} code
   * @param {string} reason
   */
  _kill(ws, code, reason) {
    const onclose = ws.onclose;
    try {
      ws.close(code, reason);
    } catch {
      /* already closing */
    }
    if (typeof ws.terminate === 'function') ws.terminate();
    if (typeof onclose === 'function') onclose({ code: 1006, reason });
  }

  /** @param {WelcomeFrame} frame */
  _onWelcome(frame) {
    if (this._poller) {
      this._poller.stop();
      this._poller = null;
    }
    this._mode = 'ws';
    this._live = true;
    this._everConnected = true;
    this._liveSince = Date.now();
    this._wsFailures = 0;
    this._attempt = 0;
    this._authFailures = 0;
    this._timers.clear('reconnect');
    this._timers.clear('probe');
    this._subscribeTokens = this._opts.subscribeBurst;
    this._subscribeRefill = Date.now();
    for (const ch of this._channels.values()) ch.detach();
    this._set('connected', {
      transport: 'ws',
      retryAt: null,
      attempt: 0,
      instance: frame.instance ?? null,
      session: frame.session ?? null,
      user: frame.user ?? null,
    });
    this._emit('welcome', frame);
    if (!this._live) return; // a listener closed the client
    for (const ch of this._channels.values()) this._requestSubscribe(ch);
    const queued = this._queue;
    this._queue = [];
    for (const entry of queued) if (this._pending.has(entry.ref)) this._transmit(entry);
    // A first ping at once, so the round-trip time is known from the start.
    if (this._opts.pingIntervalMs > 0) this._keepalive();
    this._startPing();
    this._scheduleRefresh();
  }

  /**
   * The current socket closed.
   * @param {boolean} welcomed
   * @param {number} code
   * @param {string} reason
   */
  _lost(welcomed, code, reason) {
    const wasLive = this._live;
    this._ws = null;
    this._live = false;
    this._timers.clear('welcome');
    this._stopPing();
    if (this._mode === 'closed') return;
    if (wasLive) {
      this._toSubscribe.clear();
      this._timers.clear('subscribe');
      for (const ch of this._channels.values()) {
        ch.detach();
        this._timers.clear(`resubscribe:${ch.name}`);
      }
      // Commands in flight go out again on the next connection.
      for (const entry of [...this._pending.values()]) {
        if (entry.channel) {
          this._pending.delete(entry.ref);
          this._timers.clear(`command:${entry.ref}`);
        } else if (!this._queue.includes(entry)) {
          this._queue.push(entry);
        }
      }
      this._patch({ session: null, rtt: null });
    }
    if (welcomed) {
      if (code === 1008 && /expired/i.test(reason)) {
        this._authProblem('expired');
        return;
      }
      if (code === 1001 || Date.now() - this._liveSince > STABLE_MS) this._attempt = 0;
      this._scheduleReconnect();
      return;
    }
    this._afterFailure();
  }

  /** An attempt failed before `welcome`: find out why. */
  async _afterFailure() {
    if (this._mode === 'poll') {
      this._scheduleProbe();
      return;
    }
    const http = await this._checkHttp();
    if (this._mode !== 'ws' || this._ws || this._timers.has('reconnect')) return;
    if (http === 401) {
      this._authProblem('refused');
      return;
    }
    if (http === 'ok') {
      this._wsFailures += 1;
      if (this._opts.polling && this._wsFailures >= this._opts.failuresBeforePolling) {
        this._startPolling();
        return;
      }
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._mode !== 'ws') return;
    const delay = backoff(this._attempt, this._opts.reconnectBaseMs, this._opts.reconnectMaxMs);
    this._attempt += 1;
    this._set(this._offline() ? 'offline' : 'reconnecting', { transport: 'ws', retryAt: Date.now() + delay, attempt: this._attempt, rtt: null });
    this._timers.set('reconnect', delay, () => this._connect());
  }

  /**
   * One cheap authenticated request: 401, "ok" (HTTP works), or "down".
   * @returns {Promise<401 | "ok" | "down">}
   */
  async _checkHttp() {
    if (!this._fetch) return 'down';
    const abort = new AbortController();
    this._checkAbort = abort;
    this._timers.set('check', CHECK_TIMEOUT_MS, () => abort.abort());
    try {
      const res = await this._fetch(`${this._httpBase}/api/channels/system/history?limit=1`, {
        headers: { authorization: `Bearer ${this._token}` },
        signal: abort.signal,
      });
      await res.text().catch(() => '');
      if (res.status === 401) return 401;
      return res.ok ? 'ok' : 'down';
    } catch {
      return 'down';
    } finally {
      this._timers.clear('check');
      if (this._checkAbort === abort) this._checkAbort = null;
    }
  }

  /** @param {Pending} entry */
  _transmit(entry) {
    const ws = this._ws;
    if (!ws || !this._live || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(entry.frame));
      return true;
    } catch (e) {
      this._report(e);
      return false;
    }
  }

  /**
   * @param {{ type: string, [field: string]: unknown }} command
   * @param {{ onReply: (frame: ServerFrame) => void, onError: (error: PulseError) => void, timeoutMs?: number, channel?: boolean, queue?: boolean }} handlers
   */
  _command(command, handlers) {
    if (this._mode === 'closed') {
      handlers.onError(new PulseError('closed', 'the client is closed'));
      return null;
    }
    const ref = this._nextRef++;
    /** @type {Pending} */
    const entry = { ref, frame: { ...command, ref }, onReply: handlers.onReply, onError: handlers.onError, channel: Boolean(handlers.channel) };
    if (!this._live) {
      if (handlers.queue === false) {
        handlers.onError(new PulseError('closed', 'not connected', { ref }));
        return null;
      }
      if (this._queue.length >= this._opts.maxQueuedCommands) {
        handlers.onError(new PulseError('queue_full', `more than ${this._opts.maxQueuedCommands} commands wait for a connection`, { ref }));
        return null;
      }
      this._queue.push(entry);
    }
    this._pending.set(ref, entry);
    const timeout = handlers.timeoutMs ?? this._opts.commandTimeoutMs;
    this._timers.set(`command:${ref}`, timeout, () => {
      if (!this._pending.delete(ref)) return;
      const i = this._queue.indexOf(entry);
      if (i >= 0) this._queue.splice(i, 1);
      entry.onError(new PulseError('timeout', `no reply to '${command.type}' (ref ${ref}) in ${timeout} ms`, { ref }));
    });
    if (this._live) this._transmit(entry);
    return ref;
  }

  /** @param {any} frame */
  _onFrame(frame) {
    this._emit('frame', frame);
    if (typeof frame.ref === 'number') {
      const entry = this._pending.get(frame.ref);
      if (entry) {
        this._pending.delete(frame.ref);
        this._timers.clear(`command:${frame.ref}`);
        const channel = typeof entry.frame.channel === 'string' ? entry.frame.channel : undefined;
        if (frame.type === 'error') entry.onError(PulseError.fromFrame(frame, channel));
        else entry.onReply(frame);
        return;
      }
    }
    switch (frame.type) {
      case 'stats':
      case 'presence':
      case 'event':
      case 'notification':
        this._channels.get(frame.channel)?.onFrame(frame);
        return;
      case 'unsubscribed':
        if (frame.ref === undefined) this._ended(frame.channel);
        return;
      case 'error':
        // No ref (or a command we no longer wait for): the hub could not say which.
        this._emit('error', PulseError.fromFrame(frame));
        return;
      default:
    }
  }

  /**
   * The hub ended a subscription by itself (a refreshed token no longer allows it).
   * @param {string} name
   */
  _ended(name) {
    const ch = this._channels.get(name);
    if (!ch) return;
    this._channels.delete(name);
    ch.fail(new PulseError('forbidden', `the hub ended the subscription to ${name}: the token no longer allows it`, { channel: name }));
  }

  _startPing() {
    this._timers.clear('ping');
    if (this._opts.pingIntervalMs <= 0) return;
    this._timers.set('ping', this._opts.pingIntervalMs, () => {
      this._keepalive();
      this._startPing();
    });
  }

  _stopPing() {
    this._timers.clear('ping');
    this._pingSentAt = null;
  }

  /** A ping; no pong in time means the link is dead. */
  _keepalive() {
    const ws = this._ws;
    if (!this._live || this._pingSentAt !== null) return;
    const t0 = now();
    this._pingSentAt = t0;
    this._command(
      { type: 'ping' },
      {
        timeoutMs: this._opts.pongTimeoutMs,
        queue: false,
        onReply: () => {
          if (this._ws !== ws) return;
          this._pingSentAt = null;
          this._patch({ rtt: Math.max(0, Math.round(now() - t0)) });
        },
        onError: (e) => {
          if (this._ws !== ws) return;
          this._pingSentAt = null;
          if (e.code === 'timeout' && this._live) this._kill(ws, 4001, 'ping timeout');
        },
      },
    );
  }

  // ---- channels ---------------------------------------------------------------

  /** @param {Channel} ch */
  _startChannel(ch) {
    if (this._live) this._requestSubscribe(ch);
    else if (this._poller) this._poller.add(ch);
  }

  /** @param {Channel} ch */
  _requestSubscribe(ch) {
    this._toSubscribe.add(ch);
    this._pumpSubscribes();
  }

  /** Sends waiting subscribes within the client's own budget. */
  _pumpSubscribes() {
    if (!this._live) return;
    const t = Date.now();
    const { subscribeBurst, subscribeRate } = this._opts;
    this._subscribeTokens = Math.min(subscribeBurst, this._subscribeTokens + ((t - this._subscribeRefill) / 1000) * subscribeRate);
    this._subscribeRefill = t;
    for (const ch of [...this._toSubscribe]) {
      if (this._subscribeTokens < 1) break;
      this._toSubscribe.delete(ch);
      if (this._channels.get(ch.name) !== ch || ch.status === 'failed') continue;
      this._subscribeTokens -= 1;
      this._sendSubscribe(ch);
    }
    if (this._toSubscribe.size > 0) this._timers.set('subscribe', Math.ceil(1000 / Math.max(1, subscribeRate)), () => this._pumpSubscribes());
  }

  /** @param {Channel} ch */
  _sendSubscribe(ch) {
    const since = ch.since();
    /** @type {{ type: string, channel: string, since?: number }} */
    const command = { type: 'subscribe', channel: ch.name };
    if (since !== null) command.since = since;
    /** @type {number | null} */
    let ref = null;
    ref = this._command(command, {
      channel: true,
      queue: false,
      onReply: (frame) => {
        if (ch.ref !== ref || frame.type !== 'subscribed') return;
        ch.onSubscribed(frame);
      },
      onError: (error) => {
        if (ch.ref !== ref) return;
        if (this._channels.get(ch.name) !== ch) return;
        if (ch.onSubscribeError(error)) {
          const delay = backoff(ch.failures - 1, 1000, this._opts.reconnectMaxMs);
          this._timers.set(`resubscribe:${ch.name}`, delay, () => {
            if (this._channels.get(ch.name) === ch && this._live) this._requestSubscribe(ch);
          });
        } else {
          this._channels.delete(ch.name);
        }
      },
    });
    ch.subscribing(ref, since);
  }

  /**
   * The last handle on a channel is gone. Dropped after the current task, so
   * unsubscribing and subscribing again at once (React StrictMode) keeps it.
   * @param {Channel} ch
   */
  _channelIdle(ch) {
    queueMicrotask(() => {
      if (ch.subs.size > 0 || this._channels.get(ch.name) !== ch) return;
      this._channels.delete(ch.name);
      this._toSubscribe.delete(ch);
      this._timers.clear(`resubscribe:${ch.name}`);
      const wasOn = ch.status === 'subscribing' || ch.status === 'active' || ch.status === 'recovering';
      ch.abortFill();
      ch.status = 'failed';
      this._poller?.remove(ch.name);
      if (this._live && wasOn) {
        this._command({ type: 'unsubscribe', channel: ch.name }, { channel: true, queue: false, onReply: () => {}, onError: () => {} });
      }
    });
  }

  /**
   * @param {Channel} ch
   * @param {PulseError} error
   */
  _channelRefused(ch, error) {
    if (this._channels.get(ch.name) === ch) this._channels.delete(ch.name);
    this._poller?.remove(ch.name);
    ch.fail(new PulseError(error.code, error.message, { channel: ch.name, status: error.status }));
  }

  // ---- HTTP -----------------------------------------------------------------------

  /**
   * GET a JSON resource of the hub with the token.
   * @template T
   * @param {string} path
   * @param {import('./types.js').Signal} signal
   * @returns {Promise<T>}
   */
  async _get(path, signal) {
    if (!this._fetch) throw new PulseError('network', 'no fetch here');
    let res;
    try {
      res = await this._fetch(`${this._httpBase}${path}`, { headers: { authorization: `Bearer ${this._token}` }, signal });
    } catch (e) {
      throw new PulseError('network', `GET ${path}: ${messageOf(e)}`, { cause: e });
    }
    if (!res.ok) {
      /** @type {any} */
      let body = null;
      try {
        body = await res.json();
      } catch {
        /* not JSON */
      }
      const error = new PulseError(body?.error?.code || codeOfStatus(res.status), body?.error?.message || `GET ${path}: HTTP ${res.status}`, { status: res.status });
      if (res.status === 401 && this._mode === 'poll') this._authProblem('refused');
      throw error;
    }
    try {
      return await res.json();
    } catch (e) {
      throw new PulseError('network', `GET ${path}: ${messageOf(e)}`, { cause: e });
    }
  }

  /**
   * A page of a recoverable channel's history.
   * @param {string} channel
   * @param {number | null} since
   * @param {number} limit
   * @param {import('./types.js').Signal} signal
   * @param {number} [wait]
   * @returns {Promise<import('./types.js').HistoryPage>}
   */
  _history(channel, since, limit, signal, wait) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (since !== null) q.set('since', String(since));
    if (wait) q.set('wait', String(wait));
    return this._get(`/api/channels/${encodeURIComponent(channel)}/history?${q}`, signal);
  }

  // ---- polling fallback ------------------------------------------------------------

  _startPolling() {
    if (this._mode === 'closed') return;
    this._mode = 'poll';
    this._poller = new Poller(this);
    this._set('polling', { transport: 'poll', retryAt: null, rtt: null, attempt: 0 });
    for (const ch of this._channels.values()) this._poller.add(ch);
    this._scheduleProbe();
  }

  _scheduleProbe() {
    if (this._mode !== 'poll') return;
    const [lo, hi] = this._opts.probeIntervalMs;
    this._timers.set('probe', between(lo, hi), () => this._connect());
  }

  /**
   * @param {boolean} ok
   * @param {number} [retryInMs]
   */
  _pollHealth(ok, retryInMs = 0) {
    if (this._mode !== 'poll') return;
    if (ok) {
      this._authFailures = 0;
      if (this._status.state !== 'polling') this._set('polling', { transport: 'poll', retryAt: null });
    } else {
      this._set('reconnecting', { transport: 'poll', retryAt: Date.now() + retryInMs });
    }
  }

  // ---- tokens ---------------------------------------------------------------------

  _scheduleRefresh() {
    this._timers.clear('refresh');
    if (!this._getToken || this._mode === 'closed') return;
    const exp = tokenExpiry(this._token);
    if (exp === null) return;
    const left = exp - Date.now();
    const margin = Math.min(this._opts.refreshMarginMs, left / 5);
    const delay = left <= 0 ? 0 : Math.max(Math.min(1000, left / 2), left - margin);
    this._timers.set('refresh', delay, () => {
      this._refresh('expiring').catch((e) => this._refreshFailed(e));
    });
  }

  /** @param {unknown} error */
  _refreshFailed(error) {
    if (this._mode === 'closed') return;
    this._report(error);
    const exp = tokenExpiry(this._token);
    const left = exp === null ? 0 : exp - Date.now();
    if (left > 0) {
      // Try again while the current token still works.
      this._timers.set('refresh', Math.max(500, Math.min(5000, left / 2)), () => {
        this._refresh('expiring').catch((e) => this._refreshFailed(e));
      });
      return;
    }
    this._terminate('unauthorized', `the token expires and getToken could not replace it: ${messageOf(error)}`, error);
  }

  /**
   * @param {import('./client.js').TokenRequest["reason"]} reason
   * @returns {Promise<void>}
   */
  _refresh(reason) {
    const getToken = this._getToken;
    if (!getToken) return rejected(new PulseError('unauthorized', 'no getToken to ask for a token'));
    if (this._refreshing) return this._refreshing;
    const run = async () => {
      const token = await getToken({ reason });
      if (typeof token !== 'string' || token.length === 0) throw new PulseError('unauthorized', 'getToken gave no token');
      if (this._mode === 'closed') throw new PulseError('closed', 'the client is closed');
      await this.setToken(token);
    };
    const promise = run().finally(() => {
      if (this._refreshing === promise) this._refreshing = null;
    });
    this._refreshing = promise;
    promise.catch(() => {});
    return promise;
  }

  /**
   * The hub refused the token, or closed the connection because it expired.
   * @param {"refused" | "expired"} why
   */
  async _authProblem(why) {
    if (this._mode === 'closed' || this._authInFlight) return;
    const what = why === 'expired' ? 'the token expired' : 'the hub refused the token';
    if (!this._getToken) {
      this._terminate('unauthorized', what, null);
      return;
    }
    this._authFailures += 1;
    if (this._authFailures > 2) {
      this._terminate('unauthorized', `${what}, also after getToken`, null);
      return;
    }
    this._authInFlight = true;
    // Nothing works until getToken answers: say so, and do not stay
    // `connected` on a socket the hub closed because the token expired.
    if (this._mode === 'ws') this._set(this._everConnected ? 'reconnecting' : 'connecting', { transport: 'ws', retryAt: null, awaitingToken: why });
    else this._patch({ awaitingToken: why });
    try {
      await this._refresh(why);
    } catch (e) {
      this._authInFlight = false;
      this._terminate('unauthorized', `${what} and getToken failed: ${messageOf(e)}`, e);
      return;
    }
    this._authInFlight = false;
    if (this._isClosed()) return;
    this._patch({ awaitingToken: null });
    if (this._mode === 'poll') {
      // Loops that met the 401 have stopped: start them again.
      this._poller?.stop();
      this._poller = new Poller(this);
      for (const ch of this._channels.values()) this._poller.add(ch);
      return;
    }
    this._connect();
  }

  // ---- closing ---------------------------------------------------------------------

  /**
   * Closes for good because of an error (state `closed`, event `error`).
   * @param {string} code
   * @param {string} message
   * @param {unknown} cause
   */
  _terminate(code, message, cause) {
    if (this._mode === 'closed') return;
    const error = new PulseError(code, message, cause === null || cause === undefined ? {} : { cause });
    this._emit('error', error);
    if (!this._closing) this._closing = this._shutdown(code, error);
  }

  /**
   * @param {string} reason
   * @param {PulseError | null} error
   * @returns {Promise<void>}
   */
  _shutdown(reason, error) {
    if (this._mode === 'closed') return Promise.resolve();
    this._mode = 'closed';
    this._timers.clearAll();
    this._listen(false);
    this._checkAbort?.abort();
    this._checkAbort = null;
    this._poller?.stop();
    this._poller = null;
    this._toSubscribe.clear();
    const closed = new PulseError('closed', error ? error.message : 'the client was closed');
    const pending = [...this._pending.values()];
    this._pending.clear();
    this._queue = [];
    for (const entry of pending) entry.onError(new PulseError('closed', closed.message, { ref: entry.ref }));
    const channels = [...this._channels.values()];
    this._channels.clear();
    for (const ch of channels) {
      ch.abortFill();
      for (const sub of [...ch.subs]) sub._close(closed);
      ch.subs.clear();
    }
    const ws = this._ws;
    this._ws = null;
    this._live = false;
    this._set('closed', { transport: null, retryAt: null, session: null, awaitingToken: null, reason, error });
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const finish = () => {
        clearTimeout(timer);
        ws.onclose = null;
        resolve();
      };
      ws.onmessage = null;
      ws.onerror = () => {};
      ws.onclose = finish;
      timer = setTimeout(() => {
        if (typeof ws.terminate === 'function') ws.terminate();
        finish();
      }, this._opts.closeTimeoutMs);
      try {
        ws.close(1000, 'bye');
      } catch {
        finish();
      }
      if (ws.readyState === WS_CLOSED) finish();
    });
  }

  // ---- helpers for channels and views ------------------------------------------------

  /** For checks after an `await` (the mode may have changed meanwhile). */
  _isClosed() {
    return this._mode === 'closed';
  }

  /** @param {unknown} error */
  _report(error) {
    if (this._mode === 'closed') return;
    const e = error instanceof PulseError ? error : new PulseError('network', messageOf(error), { cause: error });
    this._emit('error', e);
  }

  /** Who we are: the hub's word once connected, else the token's `sub`. */
  _userId() {
    return this._status.user?.id ?? tokenClaims(this._token)?.sub ?? null;
  }
}

/** @param {unknown} e */
function messageOf(e) {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A rejected promise that is never reported as unhandled.
 * @param {unknown} error
 * @returns {Promise<never>}
 */
function rejected(error) {
  const promise = Promise.reject(error);
  promise.catch(() => {});
  return promise;
}

function now() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}
