// The dashboard's entry point: gets a token, picks a scope, and keeps the
// page in step with the hub through the Transport (WebSocket or polling).
//
// Channels: stats:{scope}, presence:{scope}, feed:{scope}, system and
// user:{me}. For each recoverable channel the page remembers the last offset
// it applied: frames at or below it are duplicates and dropped; a frame past
// the next offset is a gap and the channel is re-read from there; a
// `subscribed` with `recovered: false` starts the channel afresh (the items
// that follow are its recent history).
//
// Pause unsubscribes stats and the feed (presence stays subscribed so the
// person stays "online", and notifications keep coming); resume subscribes
// again with `since`, so the feed catches up and stats are a fresh snapshot.

import { Notifications } from './notifications.js';
import { Samples } from './sparkline.js';
import { claimsOf, demoIdentity, devToken, forgetToken, obtainToken } from './token.js';
import { Transport } from './transport.js';
import { Dashboard } from './ui.js';
import { $, store } from './util.js';

const params = new URLSearchParams(location.search);
const ui = new Dashboard();
const recoverable = (c) => c === 'system' || /^(feed|user):/.test(c);
const validScope = (s) => /^[A-Za-z0-9_.-]{1,64}$/.test(s);

const app = {
  auth: null, // {token, claims, source}
  scope: null,
  paused: false,
  transport: null,
  notes: null,
  samples: null,
  positions: new Map(), // channel -> {last, base, resyncing}
  presence: new Map(), // user id -> user
  presenceCount: 0,
  statsVersion: null,
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

async function renewToken(reason) {
  forgetToken();
  const auth = await obtainToken(askForToken, { reason, params: new URLSearchParams() });
  if (auth.claims.sub !== app.auth.claims.sub) {
    // Another person: start over as them.
    location.reload();
    return;
  }
  app.auth = auth;
  app.transport.setToken(auth.token);
  app.transport.reconnectNow();
  scheduleRefresh();
}

/** Before the token expires: a new one from the demo hub (sent as `refresh`),
 *  or a banner asking for one. */
function scheduleRefresh() {
  clearTimeout(app.refreshTimer);
  const left = app.auth.claims.exp * 1000 - Date.now();
  const lead = Math.min(5 * 60_000, left / 5);
  app.refreshTimer = setTimeout(async () => {
    if (app.auth.source === 'dev') {
      const token = await devToken(demoIdentity(new URLSearchParams()), null);
      if (token) {
        app.auth = { token, claims: claimsOf(token), source: 'dev' };
        store.set('pulsehub.token', { token, source: 'dev' });
        app.transport.setToken(token);
        scheduleRefresh();
        return;
      }
    }
    banner('Your token expires soon. Paste a new one to stay connected.', 'Paste token', () => renewToken(null));
  }, Math.max(1000, left - lead));
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

function channels() {
  const me = `user:${app.auth.claims.sub}`;
  if (!app.scope) return ['system', me];
  const scoped = app.paused ? [`presence:${app.scope}`] : [`stats:${app.scope}`, `presence:${app.scope}`, `feed:${app.scope}`];
  return [...scoped, 'system', me];
}

function switchScope(scope) {
  if (scope === app.scope) return;
  // Drop the old scope's channels first so its late frames are ignored.
  app.scope = null;
  app.transport.setChannels(channels());
  for (const c of [...app.positions.keys()]) if (c.startsWith('feed:')) app.positions.delete(c);
  app.presence.clear();
  app.statsVersion = null;
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
  app.transport.setChannels(channels());
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
      headers: { Authorization: `Bearer ${app.auth.token}` },
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

// ---- frames ---------------------------------------------------------------------------

function position(channel) {
  let p = app.positions.get(channel);
  if (!p) {
    p = { last: null, base: null, resyncing: false };
    app.positions.set(channel, p);
  }
  return p;
}

function sinceOf(channel) {
  const p = app.positions.get(channel);
  return p ? (p.last ?? p.base) : null;
}

/** Whether a recoverable frame is the next one of its channel. */
function accept(frame) {
  const p = position(frame.channel);
  if (p.last === null) {
    p.last = frame.offset;
    return true;
  }
  if (frame.offset <= p.last) return false; // duplicate
  if (frame.offset === p.last + 1) {
    p.last = frame.offset;
    return true;
  }
  // A gap: read the channel again from the last applied offset.
  if (!p.resyncing) {
    p.resyncing = true;
    app.transport.resync(frame.channel);
  }
  return false;
}

function onFrame(frame) {
  switch (frame.type) {
    case 'subscribed':
      if (recoverable(frame.channel)) {
        const p = position(frame.channel);
        p.resyncing = false;
        if (!frame.recovered) {
          // Start afresh: what follows is the channel's recent history.
          p.last = null;
          p.base = frame.offset;
          if (frame.channel === `feed:${app.scope}`) ui.resetFeed();
        }
        if (!frame.channel.startsWith('feed:')) app.notes.subscribed(frame);
      }
      if (frame.channel === `stats:${app.scope}`) app.statsVersion = null;
      return;
    case 'event':
      if (frame.channel === `feed:${app.scope}` && accept(frame)) ui.addEvent(frame);
      return;
    case 'notification':
      if (accept(frame)) app.notes.add(frame);
      return;
    case 'stats':
      if (frame.channel !== `stats:${app.scope}` || app.paused) return;
      // Versions only grow; the first snapshot after (re)subscribing is taken as is.
      if (app.statsVersion !== null && frame.version < app.statsVersion) return;
      app.statsVersion = frame.version;
      ui.renderStats(frame.stats, app.samples);
      return;
    case 'presence':
      if (frame.channel !== `presence:${app.scope}`) return;
      applyPresence(frame);
      if (!app.paused) ui.renderPeople(app.presence, app.presenceCount);
      return;
    case 'error':
      if (frame.command?.type === 'subscribe' && (frame.code === 'forbidden' || frame.code === 'bad_request')) {
        banner(`Cannot show ${frame.command.channel}: ${frame.message}`);
      }
      return;
    case 'unsubscribed':
      if (frame.ref === undefined) banner(`The hub ended the subscription to ${frame.channel}: the token no longer allows it.`);
      return;
    default:
  }
}

function applyPresence(frame) {
  if (frame.op === 'sync') {
    app.presence = new Map((frame.users ?? []).map((u) => [u.id, u]));
  } else if (frame.op === 'leave') {
    app.presence.delete(frame.user?.id);
  } else if (frame.user?.id) {
    app.presence.set(frame.user.id, { ...app.presence.get(frame.user.id), ...frame.user });
  }
  if (typeof frame.count === 'number') app.presenceCount = frame.count;
}

// ---- connection state -----------------------------------------------------------------------

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
  if (!paused) app.statsVersion = null;
  app.transport.setChannels(channels());
  if (!paused) ui.renderPeople(app.presence, app.presenceCount);
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
  $('#retry').addEventListener('click', () => app.transport.reconnectNow());
  let theme = store.get('pulsehub.theme', 'auto');
  if (!THEMES.includes(theme)) theme = 'auto';
  applyTheme(theme);
  $('#theme').addEventListener('click', () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    store.set('pulsehub.theme', theme);
    applyTheme(theme);
  });
  // Presence: tell the hub the person is here, at most once a minute, and
  // at once when the hub has marked them idle.
  let lastActivity = 0;
  const active = () => {
    if (document.visibilityState !== 'visible' || !app.auth) return;
    const idle = app.presence.get(app.auth.claims.sub)?.status === 'idle';
    if (!idle && Date.now() - lastActivity < 60_000) return;
    lastActivity = Date.now();
    app.transport.activity();
  };
  for (const type of ['pointerdown', 'keydown', 'wheel', 'touchstart']) addEventListener(type, active, { passive: true });
  document.addEventListener('visibilitychange', active);
  app.activityNow = () => {
    lastActivity = Date.now();
    app.transport.activity();
  };
}

// ---- start ------------------------------------------------------------------------------------

async function main() {
  setupControls();
  app.auth = await obtainToken(askForToken, { params });
  const { claims } = app.auth;
  $('#me').textContent = claims.name || claims.sub;
  $('#me').title = `Signed in as ${claims.name || claims.sub} (${claims.sub})`;
  ui.me = claims.sub;
  app.notes = new Notifications(claims.sub);
  app.transport = new Transport({
    token: app.auth.token,
    onFrame,
    onState: (s) => {
      const wasLive = app.connState.mode === 'live';
      app.connState = s;
      renderConn();
      if (s.mode === 'live' && !wasLive) app.activityNow();
    },
    sinceOf,
    onAuthFailure: (why) => renewToken(why),
  });
  const scope = setupScopes();
  if (scope) {
    app.scope = scope;
    startSamples(scope);
    document.title = `${scope} · pulsehub`;
  } else {
    banner('Your token grants no scope: ask for a token with at least one scope.');
  }
  app.transport.setChannels(channels());
  app.transport.start();
  scheduleRefresh();
  // For the end-to-end tests and the curious: read-only view of the state.
  window.pulsehub = { app, sinceOf };
}

main().catch((e) => {
  console.error(e);
  banner(`The dashboard failed to start: ${e.message}`);
});
