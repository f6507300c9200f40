// The HTTP fallback, for when a WebSocket cannot be opened (a proxy or
// firewall that refuses the upgrade). The application sees the same frames
// as over the WebSocket; each channel has one loop:
//
// - `stats:{scope}`: `GET /api/scopes/{scope}/stats` every `pollIntervalMs`,
//   and soon after new feed items of the scope; turned into `stats` frames
//   (the channel drops a snapshot it already has and recomputes `changed`);
// - `presence:{scope}`: `GET /api/scopes/{scope}/presence` every
//   `pollIntervalMs`; the channel turns the lists into `sync` then diffs;
// - recoverable channels: `GET /api/channels/{c}/history?since=N&limit=…`,
//   paging forward from the channel's position. Feeds long-poll (`wait`):
//   the hub holds the request until something newer exists. Notification
//   channels are polled every `pollIntervalMs` instead, so a page keeps
//   fewer requests open than the browser's six per host.
//
// A failing request is retried with backoff and the client shows
// `reconnecting` until one succeeds again; 401 goes to the client's token
// handling; 400/403/404 end the channel (it is refused, as over the socket).

import { backoff } from './backoff.js';
import { PulseError } from './errors.js';

/**
 * What the poller needs from its client.
 * @typedef {object} PollerHost
 * @property {{ pollIntervalMs: number, longPollWaitS: number, historyPageSize: number }} _opts
 * @property {import('./timers.js').Timers} _timers
 * @property {<T>(path: string, signal: import('./types.js').Signal) => Promise<T>} _get
 * @property {(channel: string, since: number | null, limit: number, signal: import('./types.js').Signal, wait?: number) => Promise<import('./types.js').HistoryPage>} _history
 * @property {(ok: boolean, retryInMs?: number) => void} _pollHealth
 * @property {(channel: import('./channel.js').Channel, error: PulseError) => void} _channelRefused
 */

export class Poller {
  /** @param {PollerHost} host */
  constructor(host) {
    this.host = host;
    /** @type {Map<string, import('./types.js').Aborter>} */
    this.loops = new Map();
    /** @type {Map<string, () => void>} */
    this.wakers = new Map();
    this.failures = 0;
    this.stopped = false;
  }

  /** @param {import('./channel.js').Channel} channel */
  add(channel) {
    if (this.stopped || this.loops.has(channel.name)) return;
    const abort = new AbortController();
    this.loops.set(channel.name, abort);
    channel.detach();
    const loop =
      channel.family === 'stats'
        ? this.stats(channel, abort.signal)
        : channel.family === 'presence'
          ? this.presence(channel, abort.signal)
          : this.history(channel, abort.signal);
    loop
      .catch(() => {})
      .finally(() => {
        if (this.loops.get(channel.name) === abort) this.loops.delete(channel.name);
      });
  }

  /** @param {string} name */
  remove(name) {
    const abort = this.loops.get(name);
    this.loops.delete(name);
    this.wakers.get(name)?.();
    abort?.abort();
  }

  stop() {
    this.stopped = true;
    for (const name of [...this.loops.keys()]) this.remove(name);
  }

  /** Wakes a sleeping loop now. @param {string} name */
  kick(name) {
    this.wakers.get(name)?.();
  }

  /**
   * Sleeps `ms`, or until kicked or aborted.
   * @param {string} name
   * @param {number} ms
   * @param {import('./types.js').Signal} signal
   */
  sleep(name, ms, signal) {
    return new Promise((resolve) => {
      const timer = `poll:${name}`;
      const done = () => {
        this.host._timers.clear(timer);
        if (this.wakers.get(name) === done) this.wakers.delete(name);
        signal.removeEventListener('abort', done);
        resolve(undefined);
      };
      if (signal.aborted) return done();
      this.host._timers.set(timer, ms, done);
      this.wakers.set(name, done);
      signal.addEventListener('abort', done);
    });
  }

  /**
   * Runs `step` until aborted; it returns the wait before the next run.
   * @param {import('./channel.js').Channel} channel
   * @param {import('./types.js').Signal} signal
   * @param {() => Promise<number>} step
   */
  async loop(channel, signal, step) {
    while (!signal.aborted && !this.stopped) {
      let wait;
      try {
        wait = await step();
        if (signal.aborted) return;
        if (this.failures > 0) this.failures = 0;
        this.host._pollHealth(true);
      } catch (e) {
        if (signal.aborted) return;
        const error = e instanceof PulseError ? e : new PulseError('network', String(e), { cause: e });
        if (error.code === 'unauthorized') return; // the client's token handling takes over
        if (error.status === 400 || error.status === 403 || error.status === 404) {
          this.host._channelRefused(channel, error);
          return;
        }
        wait = backoff(this.failures, 1000, this.host._opts.pollIntervalMs * 6);
        this.failures += 1;
        this.host._pollHealth(false, wait);
      }
      if (wait > 0) await this.sleep(channel.name, wait, signal);
    }
  }

  /**
   * @param {import('./channel.js').Channel} channel
   * @param {import('./types.js').Signal} signal
   */
  stats(channel, signal) {
    const scope = channel.name.slice('stats:'.length);
    let started = false;
    return this.loop(channel, signal, async () => {
      /** @type {import('./types.js').Stats & { version: number }} */
      const body = await this.host._get(`/api/scopes/${encodeURIComponent(scope)}/stats`, signal);
      if (signal.aborted) return 0;
      if (!started) {
        started = true;
        channel.pollStarted();
      }
      const { version, ...stats } = body;
      channel.onFrame({ type: 'stats', channel: channel.name, version, changed: [], stats: /** @type {import('./types.js').Stats} */ (stats), polled: true });
      return this.host._opts.pollIntervalMs;
    });
  }

  /**
   * @param {import('./channel.js').Channel} channel
   * @param {import('./types.js').Signal} signal
   */
  presence(channel, signal) {
    const scope = channel.name.slice('presence:'.length);
    let started = false;
    return this.loop(channel, signal, async () => {
      /** @type {{ count: number, users: import('./types.js').PresenceUser[] }} */
      const body = await this.host._get(`/api/scopes/${encodeURIComponent(scope)}/presence`, signal);
      if (signal.aborted) return 0;
      if (!started) {
        started = true;
        channel.pollStarted();
      }
      channel.pollPresence(body);
      return this.host._opts.pollIntervalMs;
    });
  }

  /**
   * @param {import('./channel.js').Channel} channel
   * @param {import('./types.js').Signal} signal
   */
  history(channel, signal) {
    const feed = channel.name.startsWith('feed:');
    const { historyPageSize: limit, pollIntervalMs, longPollWaitS } = this.host._opts;
    let first = true;
    let lastKick = 0;
    return this.loop(channel, signal, async () => {
      const since = channel.since();
      const wait = feed && !first && since !== null ? longPollWaitS : undefined;
      const body = await this.host._history(channel.name, since, limit, signal, wait);
      if (signal.aborted) return 0;
      channel.pollPage(body, since, first);
      first = false;
      const items = body.items || [];
      if (feed && items.length > 0 && Date.now() - lastKick > 1000) {
        // New events move the scope's stats: read them soon, not in 5 s.
        lastKick = Date.now();
        this.kick(`stats:${channel.name.slice('feed:'.length)}`);
      }
      if (items.length >= limit) return 0; // more to page through
      return feed ? 250 : pollIntervalMs;
    });
  }
}
