// The dashboard's entry point: gets a token, picks a scope, and shows what
// the hub sends. The link to the hub is @pulsehub/client, which the hub
// serves at /sdk/ (clients/js/src, unchanged): it reconnects with backoff,
// resumes channels with `since` (reading history, announcing a hole as a
// reset), falls back to HTTP polling when WebSocket is blocked, refreshes the
// token before it expires (through `getToken` below), turns presence into a
// member list and matches commands to replies. This page only shows things.
//
// Views of the scope: stats, presence and feed (client.stats / presence /
// feed); notifications of `system` and `user:{me}` (notifications.js).
//
// Pause unsubscribes stats and the feed (presence stays subscribed so the
// person stays "online", and notifications keep coming); resume subscribes
// again, the feed with `since` = where it stopped, so it catches up without a
// gap, and the stats with a fresh snapshot.

import { PulseClient } from '/sdk/pulsehub.js';
import { Notifications } from './notifications.js';
import { Samples } from './sparkline.js';
import { claimsOf, demoIdentity, devToken, forgetToken, obtainToken } from './token.js';
import { Dashboard, FEED_MAX } from './ui.js';
import { $, store } from './util.js';

const params = new URLSearchParams(location.search);
const ui = new Dashboard();
const validScope = (s) => /^[A-Za-z0-9_.-]{1,64}$/.test(s);
/** The token is renewed this long before it expires (a fifth of a shorter lifetime). */
const REFRESH_MARGIN_MS = 5 * 60_000;

const app = {
  auth: null, // {token, claims, source}
  client: null, // the PulseClient
  scope: null,
  paused: false,
  notes: null,
  samples: null,
  stats: null, // StatsView of the scope (not while paused)
  presence: null, // PresenceView of the scope
  feed: null, // FeedView of the scope (not while paused)
  feedOffset: null, // where the feed stopped when it was paused
  connState: { mode: 'connecting' },
};

// ---- token ---------------------------------------------------------------------------

function askForToken(reason) {
  const dialog = $('#token-dialog');
  const why = $('#token-reason');
  why.hidden = !reason;
  why.textContent = reason ?? '';
  $('#token-input').value = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve($('#token-input').value), { once: true });
    dialog.addEventListener('cancel', (e) => e.preventDefault(), { once: true });
    if (!dialog.open) dialog.showModal();
  });
}

let asking = null;
/** A new token: the demo hub's, or the one the person pastes (one dialog at a time). */
function askAgain(reason) {
  asking ??= (async () => {
    forgetToken();
    const auth = await obtainToken(askForToken, { reason, params: new URLSearchParams() });
    if (auth.claims.sub !== app.auth.claims.sub) {
      // Another person: start over as them.
      location.reload();
      return new Promise(() => {});
    }
    app.auth = auth;
    return auth.token;
  })().finally(() => (asking = null));
  return asking;
}

/**
 * The client's `getToken`. Before expiry: a new demo token, or a banner
 * asking for one (the dialog opens by itself once the token has expired);
 * a refused or expired token opens the dialog at once.
 */
async function getToken({ reason }) {
  if (reason === 'refused') return askAgain('The hub refused the token.');
  if (reason === 'expired') return askAgain('Your token has expired.');
  if (reason !== 'expiring') return askAgain(null);
  if (app.auth.source === 'dev') {
    const token = await devToken(demoIdentity(new URLSearchParams()), null);
    if (token) {
      app.auth = { token, claims: claimsOf(token), source: 'dev' };
      store.set('pulsehub.token', { token, source: 'dev' });
      return token;
    }
  }
  return new Promise((resolve, reject) => {
    let off = () => {};
    let done = false;
    const ask = (why) => {
      if (done) return;
      done = true;
      off();
      banner(null);
      askAgain(why).then(resolve, reject);
    };
    banner('Your token expires soon. Paste a new one to stay connected.', 'Paste token', () => ask(null));
    // Not answered in time: the hub closed the connection, the client waits for this answer.
    off = app.client.on('status', (s) => {
      if (s.awaitingToken === 'expired') ask('Your token has expired.');
    });
  });
}

function banner(text, action, onAction) {
  const el = $('#banner');
  if (!text) {
    el.hidden = true;
    return;
  }
  el.replaceChildren(document.createTextNode(text));
  if (action) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'link-button';
    b.textContent = action;
    b.addEventListener('click', () => {
      el.hidden = true;
      onAction();
    });
    el.append(' ', b);
  }
  el.hidden = false;
}

// ---- scope ----------------------------------------------------------------------------

function setupScopes() {
  const scopes = (app.auth.claims.scopes ?? []).filter((s) => s === '*' || validScope(s));
  const wildcard = scopes.includes('*');
  const remembered = store.get('pulsehub.scope');
  const wanted = params.get('scope');
  const named = scopes.filter((s) => s !== '*');
  const pick = [wanted, remembered, named[0], 'demo'].find((s) => s && validScope(s) && (wildcard || named.includes(s)));
  const select = $('#scope');
  const input = $('#scope-input');
  if (wildcard) {
    select.hidden = true;
    input.hidden = false;
    input.value = pick ?? '';
    const known = new Set([...(store.get('pulsehub.scopes', []) ?? []), ...named, pick].filter(Boolean));
    $('#scope-list').replaceChildren(...[...known].map((s) => Object.assign(document.createElement('option'), { value: s })));
    input.addEventListener('change', () => {
      if (validScope(input.value)) switchScope(input.value);
    });
    $('label[for=scope]').htmlFor = 'scope-input';
  } else {
    select.replaceChildren(...named.map((s) => Object.assign(document.createElement('option'), { value: s, textContent: s })));
    select.disabled = named.length < 2;
    if (pick) select.value = pick;
    select.addEventListener('change', () => switchScope(select.value));
  }
  return pick ?? null;
}

/** A subscription the hub refused, or ended (the token no longer allows it). */
function refused(error) {
  banner(`Cannot show ${error.channel ?? 'a channel'}: ${error.message}`);
}

function renderPeople() {
  ui.renderPeople(app.presence?.byId ?? new Map(), app.presence?.count ?? 0);
}

/** Subscribes the scope's views (presence always; stats and feed unless paused). */
function watchScope(scope) {
  app.presence = app.client.presence(scope, {
    onChange: () => {
      if (!app.paused) renderPeople();
    },
  });
  app.presence.on('error', refused);
  if (!app.paused) watchLive(scope, null);
}

/** Stats and feed; the feed resumes after `since` when given. */
function watchLive(scope, since) {
  app.stats = app.client.stats(scope, { onChange: (stats) => ui.renderStats(stats, app.samples) });
  app.stats.on('error', refused);
  app.feed = app.client.feed(scope, {
    limit: FEED_MAX,
    since: since ?? undefined,
    onEvent: (entry, frame) => ui.addEvent(frame),
    // The page's position is gone (history pruned, a new database): start from the latest items.
    onReset: () => ui.resetFeed(),
  });
  app.feed.on('error', refused);
}

/** Unsubscribes stats and feed; returns where the feed was. */
function unwatchLive() {
  const offset = app.feed?.offset ?? null;
  app.stats?.unsubscribe();
  app.feed?.unsubscribe();
  app.stats = null;
  app.feed = null;
  return offset;
}

function switchScope(scope) {
  if (scope === app.scope) return;
  unwatchLive();
  app.presence?.unsubscribe();
  app.presence = null;
  app.feedOffset = null;
  ui.reset();
  app.scope = scope;
  startSamples(scope);
  store.set('pulsehub.scope', scope);
  const known = new Set(store.get('pulsehub.scopes', []) ?? []);
  known.add(scope);
  store.set('pulsehub.scopes', [...known].slice(-20));
  const url = new URL(location.href);
  url.searchParams.set('scope', scope);
  history.replaceState(null, '', url);
  document.title = `${scope} · pulsehub`;
  watchScope(scope);
}

// ---- sparkline ---------------------------------------------------------------------------

/** The scope's events-per-minute curve: kept samples, completed from the
 *  feed's history when the page has not watched the scope lately. */
async function startSamples(scope) {
  app.samples = new Samples(scope);
  const newest = app.samples.points[app.samples.points.length - 1]?.[0] ?? 0;
  if (app.samples.points.length >= 6 && Date.now() - newest < 30_000) return;
  try {
    const channel = encodeURIComponent(`feed:${scope}`);
    const res = await fetch(`/api/channels/${channel}/history?limit=1000`, {
      headers: { Authorization: `Bearer ${app.client.token}` },
      cache: 'no-store',
    });
    if (!res.ok || app.scope !== scope) return;
    const body = await res.json();
    if (app.scope !== scope) return;
    app.samples.seed(body.items.map((f) => f.event?.at), body.items.length < 1000);
    ui.drawSpark(app.samples);
  } catch {
    /* the curve fills from live samples */
  }
}

setInterval(() => {
  if (!app.scope || !app.samples || app.paused || !ui.prev) return;
  app.samples.add(ui.prev.events_last_minute);
  ui.drawSpark(app.samples);
}, 10_000);

// ---- connection state -----------------------------------------------------------------------

const MODE_OF_STATE = { connecting: 'connecting', connected: 'live', reconnecting: 'reconnecting', polling: 'polling', offline: 'offline' };

/** The client's status, as the indicator's mode: "auth" while it waits for a token. */
function onStatus(status) {
  const wasLive = app.connState.mode === 'live';
  const mode = status.awaitingToken || status.state === 'closed' ? 'auth' : MODE_OF_STATE[status.state];
  app.connState = { ...status, mode };
  renderConn();
  if (mode === 'live' && !wasLive) app.activityNow();
}

const MODE_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  polling: 'Polling',
  offline: 'Offline',
  auth: 'Needs a token',
  paused: 'Paused',
};

function renderConn() {
  const s = app.connState;
  const mode = app.paused && s.mode !== 'auth' ? 'paused' : s.mode;
  const conn = $('#conn');
  conn.dataset.mode = mode;
  conn.dataset.transport = s.transport ?? 'ws';
  let text = MODE_TEXT[mode] ?? mode;
  let title = '';
  if (mode === 'reconnecting' && s.retryAt) {
    const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
    text = secs > 0 ? `Reconnecting in ${secs} s` : 'Reconnecting…';
    title = s.transport === 'poll' ? 'The hub does not answer; polling again soon.' : `Connection lost; attempt ${s.attempt}.`;
  } else if (mode === 'polling') {
    text = 'Polling (no WebSocket)';
    title = 'WebSocket is unavailable here (blocked or failing): updating over HTTP and retrying WebSocket in the background.';
  } else if (mode === 'paused') {
    text = 'Paused';
    title = 'Live updates are paused; notifications still arrive.';
  } else if (mode === 'live') {
    title = `Connected over WebSocket${s.instance ? ` to ${s.instance}` : ''}.`;
  } else if (mode === 'offline') {
    title = 'This device is offline; reconnecting when it is back.';
  }
  // Screen readers hear mode changes, not every tick of the countdown.
  if (conn.dataset.announced !== mode) {
    conn.dataset.announced = mode;
    $('#conn-announce').textContent = `Connection: ${MODE_TEXT[mode] ?? mode}`;
  }
  const textEl = $('#conn-text');
  if (textEl.textContent !== text) textEl.textContent = text;
  conn.title = title;
  const rtt = mode === 'live' && typeof s.rtt === 'number' ? `${s.rtt} ms` : '';
  $('#conn-rtt').textContent = rtt;
  $('#conn-rtt').title = rtt ? 'Round-trip time (app-level ping)' : '';
  $('#retry').hidden = !(mode === 'reconnecting' || mode === 'polling' || mode === 'offline');
  clearTimeout(app.connTimer);
  if (mode === 'reconnecting' && s.retryAt) app.connTimer = setTimeout(renderConn, 250);
}

// ---- controls --------------------------------------------------------------------------------

function setPaused(paused) {
  app.paused = paused;
  const button = $('#pause');
  button.setAttribute('aria-pressed', String(paused));
  button.title = paused ? 'Resume live updates' : 'Pause live updates';
  $('#pause-label').textContent = paused ? 'Resume' : 'Pause';
  document.body.classList.toggle('paused', paused);
  if (app.scope && paused) app.feedOffset = unwatchLive();
  else if (app.scope && !app.feed) watchLive(app.scope, app.feedOffset);
  if (!paused) renderPeople();
  renderConn();
}

const THEMES = ['auto', 'light', 'dark'];
function applyTheme(theme) {
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $('#theme-label').textContent = `Theme: ${theme === 'auto' ? 'automatic' : theme}`;
  $('#theme').title = `Colour theme: ${theme === 'auto' ? 'automatic (follows the system)' : theme}`;
}

function setupControls() {
  $('#pause').addEventListener('click', () => setPaused(!app.paused));
  $('#retry').addEventListener('click', () => app.client?.reconnect());
  let theme = store.get('pulsehub.theme', 'auto');
  if (!THEMES.includes(theme)) theme = 'auto';
  applyTheme(theme);
  $('#theme').addEventListener('click', () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    store.set('pulsehub.theme', theme);
    applyTheme(theme);
  });
  // Presence: tell the hub the person is here, at most once a minute, and
  // at once when the hub has marked them idle. Only on a live connection
  // (not queued for later: it says "now").
  let lastActivity = 0;
  const activity = () => {
    lastActivity = Date.now();
    if (app.client?.state === 'connected') app.client.activity('viewing', 'dashboard');
  };
  const active = () => {
    if (document.visibilityState !== 'visible' || !app.auth) return;
    const idle = app.presence?.get(app.auth.claims.sub)?.status === 'idle';
    if (!idle && Date.now() - lastActivity < 60_000) return;
    activity();
  };
  for (const type of ['pointerdown', 'keydown', 'wheel', 'touchstart']) addEventListener(type, active, { passive: true });
  document.addEventListener('visibilitychange', active);
  app.activityNow = activity;
}

// ---- start ------------------------------------------------------------------------------------

async function main() {
  setupControls();
  app.auth = await obtainToken(askForToken, { params });
  const { claims } = app.auth;
  $('#me').textContent = claims.name || claims.sub;
  $('#me').title = `Signed in as ${claims.name || claims.sub} (${claims.sub})`;
  ui.me = claims.sub;
  const client = new PulseClient('/ws', { token: app.auth.token, getToken, refreshMarginMs: REFRESH_MARGIN_MS });
  app.client = client;
  client.on('status', onStatus);
  client.on('state', (state, status) => {
    // Terminal: the hub kept refusing the tokens given to it.
    if (state === 'closed') banner(`Disconnected: ${status.error?.message ?? 'the client closed'}.`, 'Reload', () => location.reload());
  });
  // Problems the client deals with itself (a history read that failed, …).
  client.on('error', (e) => console.warn(`pulsehub: ${e.code}: ${e.message}`));
  onStatus(client.status);
  app.notes = new Notifications(client, claims.sub);
  const scope = setupScopes();
  if (scope) {
    app.scope = scope;
    startSamples(scope);
    document.title = `${scope} · pulsehub`;
    watchScope(scope);
  } else {
    banner('Your token grants no scope: ask for a token with at least one scope.');
  }
  // For the end-to-end tests and the curious: read-only view of the state.
  window.pulsehub = { app, client };
}

main().catch((e) => {
  console.error(e);
  banner(`The dashboard failed to start: ${e.message}`);
});
