// The dashboard's link to the hub: a WebSocket when it works, HTTP polling
// when it does not, and the same frames to the app either way.
//
// WebSocket mode
//   - Connects to /ws?token=…, waits for `welcome`, then subscribes to every
//     wanted channel; recoverable ones with `since` = the last offset the app
//     has applied (`sinceOf`), so a reconnect has no gap and no duplicate.
//   - App-level `ping` every 15 s gives the round-trip time; a ping left
//     unanswered for 10 s means the link is dead (sleep, half-open TCP) and
//     the socket is replaced.
//   - A lost connection is retried with exponential backoff and full jitter
//     (0.5 s doubling to 30 s; the next attempt's time is reported for the
//     countdown). A connection that was live for a while retries quickly.
//   - An attempt that fails before `welcome` is followed by one HTTP request:
//     401 means the token is refused (the app gets a new one); a network error
//     means the hub is unreachable (keep retrying); success means WebSocket
//     itself is failing (a proxy, a firewall): after two such failures the
//     transport falls back to polling.
//
// Polling mode (fallback)
//   - stats every 5 s and right after new feed items; presence and
//     notifications every 5 s; the feed as a long-poll on
//     /api/channels/feed:{scope}/history?since=N&wait=25, paging forward.
//   - A WebSocket is tried again in the background every 10-15 s; when one
//     says `welcome` the transport switches back without a gap.
//
// Frames handed to the app: `subscribed` (also synthesised in polling mode,
// with `recovered`), `stats`, `presence`, `event`, `notification`, `error`,
// `unsubscribed`. State changes go to `onState({mode, retryAt, rtt, ...})`
// with mode one of connecting, live, reconnecting, polling, offline, auth.

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const WELCOME_TIMEOUT_MS = 10_000;
const PING_EVERY_MS = 15_000;
const PONG_TIMEOUT_MS = 10_000;
const FAILURES_BEFORE_POLLING = 2;
const PROBE_EVERY_MS = [10_000, 15_000];
const POLL_EVERY_MS = 5_000;
const LONG_POLL_WAIT_S = 25;
const PAGE = 100;

/** Exponential backoff with full jitter: a random delay in [d/2, d]. */
export function backoff(attempt, base = BACKOFF_BASE_MS, max = BACKOFF_MAX_MS) {
  const d = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

const recoverable = (channel) => channel === 'system' || /^(feed|user):/.test(channel);

export class Transport {
  /**
   * @param {object} o
   * @param {string} o.token
   * @param {(frame: object) => void} o.onFrame
   * @param {(state: object) => void} o.onState
   * @param {(channel: string) => number|null} o.sinceOf last applied offset of a recoverable channel
   * @param {(why: string) => void} o.onAuthFailure the token was refused or expired
   */
  constructor({ token, onFrame, onState, sinceOf, onAuthFailure }) {
    this.token = token;
    this.onFrame = onFrame;
    this.onStateChange = onState;
    this.sinceOf = sinceOf;
    this.onAuthFailure = onAuthFailure;
    this.channels = new Set(); // wanted
    this.subscribed = new Set(); // on the current socket
    this.ws = null;
    this.mode = 'idle';
    this.state = { mode: 'connecting', transport: 'ws', retryAt: null, rtt: null, attempt: 0, instance: null };
    this.attempt = 0;
    this.wsFailures = 0;
    this.nextRef = 1;
    this.refs = new Map();
    this.timers = new Set();
    this.polls = new Map(); // channel -> AbortController
    this.kicks = new Map(); // channel -> () => void (wake a sleeping poll loop)
    this.stopped = true;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.setState({ mode: 'offline', retryAt: null });
  }

  // ---- public ---------------------------------------------------------------

  start() {
    this.stopped = false;
    addEventListener('online', this.onOnline);
    addEventListener('offline', this.onOffline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this.onOnline);
    removeEventListener('offline', this.onOffline);
    this.clearTimers();
    this.stopPolling();
    if (this.ws) this.ws.close(1000, 'bye');
    this.ws = null;
  }

  /** Sets the wanted channels; subscribes and unsubscribes the difference. */
  setChannels(channels) {
    const next = new Set(channels);
    const added = [...next].filter((c) => !this.channels.has(c));
    const removed = [...this.channels].filter((c) => !next.has(c));
    this.channels = next;
    if (this.mode === 'ws' && this.live) {
      for (const c of removed) this.unsubscribe(c);
      for (const c of added) this.subscribe(c);
    } else if (this.mode === 'poll') {
      for (const c of removed) this.stopPoll(c);
      for (const c of added) this.startPoll(c);
    }
  }

  /** Re-reads a channel from the app's position (after a detected gap). */
  resync(channel) {
    if (!this.channels.has(channel)) return;
    if (this.mode === 'ws' && this.live) this.subscribe(channel);
    else if (this.mode === 'poll') this.kick(channel);
  }

  /** A new token: used for the next requests, and sent to a live socket. */
  setToken(token) {
    this.token = token;
    if (this.mode === 'ws' && this.live) this.send({ type: 'refresh', token });
  }

  /** Tells the hub the person is active (presence: online, last_active). */
  activity(action = 'viewing', target = 'dashboard') {
    if (this.mode === 'ws' && this.live) this.send({ type: 'activity', action, target });
  }

  /** Skips the countdown. */
  reconnectNow() {
    if (this.stopped) return;
    if (this.mode === 'poll') {
      this.probe();
      return;
    }
    if (this.ws && this.live) return;
    this.clearTimers();
    this.attempt = 0;
    const pending = this.ws;
    this.ws = null;
    pending?.close(1000, 'retrying');
    this.connect();
  }

  // ---- state ----------------------------------------------------------------

  setState(patch) {
    this.state = { ...this.state, ...patch };
    this.onStateChange(this.state);
  }

  later(fn, ms) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  clearTimers() {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  // ---- WebSocket ----------------------------------------------------------------

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/ws?token=${encodeURIComponent(this.token)}`;
  }

  connect() {
    if (this.stopped) return;
    const probing = this.mode === 'poll';
    if (!probing) {
      this.mode = 'ws';
      this.setState({ mode: navigator.onLine === false ? 'offline' : this.state.mode === 'live' || this.attempt > 0 ? 'reconnecting' : 'connecting', transport: 'ws', retryAt: null, attempt: this.attempt });
    }
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.afterClose({ code: 1006, reason: 'WebSocket unavailable' }, false, probing);
      return;
    }
    this.ws = ws;
    this.live = false;
    let welcomed = false;
    let closed = false;
    const welcomeTimer = setTimeout(() => ws.close(4000, 'no welcome'), WELCOME_TIMEOUT_MS);
    ws.onmessage = (msg) => {
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.type === 'welcome') {
        welcomed = true;
        clearTimeout(welcomeTimer);
        if (ws !== this.ws) {
          ws.close(1000, 'replaced'); // an attempt given up on
          return;
        }
        this.onWelcome(ws, frame);
        return;
      }
      if (ws === this.ws) this.handle(frame);
    };
    ws.onclose = (e) => {
      if (closed) return;
      closed = true;
      clearTimeout(welcomeTimer);
      if (ws !== this.ws) return; // replaced
      this.ws = null;
      this.live = false;
      this.clearPing();
      this.afterClose(e, welcomed, probing && !welcomed);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  onWelcome(ws, frame) {
    if (this.mode === 'poll') this.stopPolling();
    this.mode = 'ws';
    this.live = true;
    this.liveSince = Date.now();
    this.wsFailures = 0;
    this.subscribed.clear();
    this.refs.clear();
    this.clearTimers();
    this.setState({ mode: 'live', transport: 'ws', retryAt: null, attempt: 0, instance: frame.instance, user: frame.user });
    for (const c of this.channels) this.subscribe(c);
    this.startPing();
  }

  async afterClose(e, welcomed, probing) {
    if (this.stopped) return;
    if (e.code === 1008 && /expired/i.test(e.reason || '')) {
      this.attempt = 0;
      this.setState({ mode: 'auth', retryAt: null });
      this.onAuthFailure('Your token has expired.');
      return;
    }
    if (probing) {
      this.scheduleProbe();
      return;
    }
    if (welcomed) {
      // A connection that was live for a while starts the backoff afresh.
      if (Date.now() - this.liveSince > 10_000) this.attempt = 0;
    } else {
      const http = await this.checkHttp();
      if (this.stopped || this.ws) return;
      if (http === 401) {
        this.setState({ mode: 'auth', retryAt: null });
        this.onAuthFailure('The hub refused the token.');
        return;
      }
      if (http === 'ok' && ++this.wsFailures >= FAILURES_BEFORE_POLLING) {
        this.startPolling();
        return;
      }
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const delay = backoff(this.attempt);
    this.attempt += 1;
    const offline = navigator.onLine === false;
    this.setState({ mode: offline ? 'offline' : 'reconnecting', transport: 'ws', retryAt: Date.now() + delay, attempt: this.attempt, rtt: null });
    this.later(() => this.connect(), delay);
  }

  /** One cheap authenticated request: 'ok', 401, or 'down'. */
  async checkHttp() {
    try {
      const res = await fetch('/api/channels/system/history?limit=1', {
        headers: { Authorization: `Bearer ${this.token}` },
        cache: 'no-store',
      });
      if (res.status === 401) return 401;
      return res.ok ? 'ok' : 'down';
    } catch {
      return 'down';
    }
  }

  send(cmd) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const ref = this.nextRef++;
    this.refs.set(ref, cmd);
    this.ws.send(JSON.stringify({ ...cmd, ref }));
    return ref;
  }

  subscribe(channel) {
    const cmd = { type: 'subscribe', channel };
    if (recoverable(channel)) {
      const since = this.sinceOf(channel);
      if (since !== null && since !== undefined) cmd.since = since;
    }
    this.subscribed.add(channel);
    this.send(cmd);
  }

  unsubscribe(channel) {
    this.subscribed.delete(channel);
    this.send({ type: 'unsubscribe', channel });
  }

  handle(frame) {
    const cmd = frame.ref !== undefined ? this.refs.get(frame.ref) : undefined;
    if (frame.ref !== undefined && frame.type !== 'subscribed') this.refs.delete(frame.ref);
    switch (frame.type) {
      case 'pong':
        if (this.pingSent) {
          this.setState({ rtt: Math.max(0, Math.round(performance.now() - this.pingSent)) });
          this.pingSent = null;
        }
        return;
      case 'ok':
        return;
      case 'subscribed':
        this.refs.delete(frame.ref);
        // A channel dropped while its subscribe was in flight.
        if (!this.channels.has(frame.channel)) return;
        break;
      case 'stats':
      case 'presence':
      case 'event':
      case 'notification':
        // Frames in flight after an unsubscribe (pause, scope change).
        if (!this.channels.has(frame.channel)) return;
        break;
      case 'error':
        frame = { ...frame, command: cmd };
        break;
      default:
        break;
    }
    this.onFrame(frame);
  }

  startPing() {
    this.clearPing();
    const ping = () => {
      if (!this.live) return;
      if (this.pingSent && performance.now() - this.pingSent > PONG_TIMEOUT_MS) {
        // No answer: the connection is dead even if the socket has not noticed.
        this.pingSent = null;
        this.ws?.close(4001, 'ping timeout');
        return;
      }
      if (!this.pingSent) {
        this.pingSent = performance.now();
        this.send({ type: 'ping' });
      }
    };
    ping();
    this.pingTimer = setInterval(ping, PING_EVERY_MS);
    this.pongCheck = setInterval(() => {
      if (this.pingSent && performance.now() - this.pingSent > PONG_TIMEOUT_MS) ping();
    }, 1000);
  }

  clearPing() {
    clearInterval(this.pingTimer);
    clearInterval(this.pongCheck);
    this.pingSent = null;
  }

  // ---- polling fallback ---------------------------------------------------------

  startPolling() {
    this.mode = 'poll';
    this.pollFailures = 0;
    this.setState({ mode: 'polling', transport: 'poll', retryAt: null, rtt: null });
    for (const c of this.channels) this.startPoll(c);
    this.scheduleProbe();
  }

  stopPolling() {
    for (const c of [...this.polls.keys()]) this.stopPoll(c);
  }

  scheduleProbe() {
    if (this.stopped || this.mode !== 'poll') return;
    const [lo, hi] = PROBE_EVERY_MS;
    this.later(() => this.probe(), lo + Math.random() * (hi - lo));
  }

  /** Tries a WebSocket while polling; `onWelcome` switches over. */
  probe() {
    if (this.stopped || this.mode !== 'poll' || this.ws) return;
    this.clearTimers();
    this.connect();
  }

  startPoll(channel) {
    if (this.polls.has(channel)) return;
    const abort = new AbortController();
    this.polls.set(channel, abort);
    const loop = channel.startsWith('stats:')
      ? this.pollStats(channel, abort.signal)
      : channel.startsWith('presence:')
        ? this.pollPresence(channel, abort.signal)
        : this.pollHistory(channel, abort.signal);
    loop.catch(() => {}).finally(() => {
      if (this.polls.get(channel) === abort) this.polls.delete(channel);
    });
  }

  stopPoll(channel) {
    const abort = this.polls.get(channel);
    this.polls.delete(channel);
    this.kicks.delete(channel);
    abort?.abort();
  }

  kick(channel) {
    this.kicks.get(channel)?.();
  }

  /** Sleeps `ms`, or until kicked or aborted. */
  sleep(channel, ms, signal) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.kicks.delete(channel);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.kicks.set(channel, done);
      signal.addEventListener('abort', done);
    });
  }

  /** GET with the token; JSON body, or throws. 401 hands over to the app. */
  async get(path, signal) {
    let res;
    try {
      res = await fetch(path, { headers: { Authorization: `Bearer ${this.token}` }, cache: 'no-store', signal });
    } catch (e) {
      if (signal.aborted) throw e;
      this.pollFailed();
      throw e;
    }
    if (res.status === 401) {
      this.stopPolling();
      this.clearTimers();
      this.mode = 'ws';
      this.setState({ mode: 'auth', retryAt: null });
      this.onAuthFailure('The hub refused the token.');
      throw new Error('unauthorized');
    }
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      if (res.status >= 500) this.pollFailed();
      const error = new Error(body?.error?.message || `HTTP ${res.status}`);
      error.status = res.status;
      error.body = body;
      throw error;
    }
    if (this.pollFailures > 0 || this.state.mode !== 'polling') {
      this.pollFailures = 0;
      if (this.mode === 'poll') this.setState({ mode: 'polling', retryAt: null });
    }
    return res.json();
  }

  pollFailed() {
    this.pollFailures = (this.pollFailures || 0) + 1;
    this.pollDelay = backoff(this.pollFailures - 1, 1000);
    if (this.mode === 'poll') this.setState({ mode: 'reconnecting', retryAt: Date.now() + this.pollDelay });
  }

  /** Runs `step` until aborted; waits `every` ms (or the error backoff) between. */
  async pollLoop(channel, signal, step, every) {
    while (!signal.aborted && !this.stopped) {
      let wait = every;
      try {
        wait = (await step()) ?? every;
      } catch (e) {
        if (signal.aborted) return;
        if (e?.status === 403 || e?.status === 400 || e?.status === 404) {
          this.onFrame({ type: 'error', code: e.body?.error?.code || 'bad_request', message: e.message, command: { type: 'subscribe', channel } });
          return;
        }
        wait = this.pollFailures > 0 ? this.pollDelay : every;
      }
      if (wait > 0) await this.sleep(channel, wait, signal);
    }
  }

  pollStats(channel, signal) {
    const scope = channel.slice('stats:'.length);
    return this.pollLoop(channel, signal, async () => {
      const body = await this.get(`/api/scopes/${encodeURIComponent(scope)}/stats`, signal);
      if (signal.aborted) return 0;
      const { version, ...stats } = body;
      this.onFrame({ type: 'stats', channel, version, stats, polled: true });
      return POLL_EVERY_MS;
    }, POLL_EVERY_MS);
  }

  pollPresence(channel, signal) {
    const scope = channel.slice('presence:'.length);
    return this.pollLoop(channel, signal, async () => {
      const body = await this.get(`/api/scopes/${encodeURIComponent(scope)}/presence`, signal);
      if (signal.aborted) return 0;
      this.onFrame({ type: 'presence', channel, op: 'sync', count: body.count, users: body.users, polled: true });
      return POLL_EVERY_MS;
    }, POLL_EVERY_MS);
  }

  pollHistory(channel, signal) {
    const isFeed = channel.startsWith('feed:');
    let first = true;
    let lastStatsKick = 0;
    return this.pollLoop(channel, signal, async () => {
      const since = this.sinceOf(channel);
      const q = new URLSearchParams({ limit: String(PAGE) });
      if (since !== null && since !== undefined) {
        q.set('since', String(since));
        if (isFeed && !first) q.set('wait', String(LONG_POLL_WAIT_S));
      }
      const body = await this.get(`/api/channels/${encodeURIComponent(channel)}/history?${q}`, signal);
      if (signal.aborted) return 0;
      if (first || !body.recovered) {
        // Same meaning as over WebSocket: recovered false = start afresh.
        this.onFrame({ type: 'subscribed', channel, offset: body.offset, recovered: Boolean(body.recovered && since !== null), polled: true });
      }
      first = false;
      for (const item of body.items) this.onFrame(item);
      if (isFeed && body.items.length > 0) {
        const scope = channel.slice('feed:'.length);
        if (Date.now() - lastStatsKick > 1000) {
          lastStatsKick = Date.now();
          this.kick(`stats:${scope}`);
        }
      }
      if (body.items.length >= PAGE) return 0; // more to page through
      return isFeed ? 250 : POLL_EVERY_MS;
    }, POLL_EVERY_MS);
  }
}
