// Subscriptions follow the components: shared by the components that use
// the same channel, kept through StrictMode's extra unmount and mount (one
// subscribe, no unsubscribe), ended when the last one unmounts (on the
// client and on the hub, whose /metrics count them); a provider that owns
// its client opens one connection under StrictMode and closes it on
// unmount; useConnectionState follows a hub that stops and comes back.
import './lib/dom.mjs';
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import { StrictMode, createElement as h, useState } from 'react';
import {
  PulseProvider,
  useChannel,
  useConnectionState,
  useConnectionStatus,
  useFeed,
  useNotifications,
  usePresence,
  usePulseClient,
  useStats,
} from '../src/index.js';
import { Hub, connect, event, gauge, mintToken, recordingWebSocket, sentChannels, until } from './lib/pulse.mjs';

const WAIT = { timeout: 10_000 };

let hub;
const clients = [];
before(async () => {
  hub = await Hub.start();
});
afterEach(async () => {
  cleanup();
  await Promise.all(clients.splice(0).map((c) => c.close()));
  // Every test starts from a hub with nobody on it.
  await until(async () => (await gauge(hub, 'sessions')) === 0, { what: 'no sessions left on the hub' });
});
after(async () => {
  await hub?.destroy();
});

function client(options) {
  const c = connect(hub, options);
  clients.push(c);
  return c;
}

/** Everything a dashboard uses, on one scope. */
function Everything({ scope }) {
  const { counts } = useStats(scope);
  const { count } = usePresence(scope);
  const { events } = useFeed(scope, { limit: 10 });
  const { ready } = useNotifications();
  return h('p', { 'data-testid': 'everything' }, `${ready} ${count} ${counts['message.sent'] ?? 0} ${events.length}`);
}

const channelsOf = (scope) => [`stats:${scope}`, `presence:${scope}`, `feed:${scope}`, 'system', 'user:alice'].sort();

test('StrictMode: each channel subscribed once, never unsubscribed while mounted; values update', async () => {
  const scope = 'life_strict';
  const c = client({ token: mintToken({ sub: 'alice', scopes: [scope] }) });
  render(h(StrictMode, null, h(PulseProvider, { client: c }, h(Everything, { scope }))));
  await waitFor(() => assert.equal(screen.getByTestId('everything').textContent, 'true 1 0 0'), WAIT);
  await act(() => hub.postEvents([event(scope, 'message.sent', 1), event(scope, 'message.sent', 2)]));
  await waitFor(() => assert.equal(screen.getByTestId('everything').textContent, 'true 1 2 2'), WAIT);

  assert.deepEqual(sentChannels(c.record, 'subscribe').sort(), channelsOf(scope));
  assert.deepEqual(sentChannels(c.record, 'unsubscribe'), []);
  await until(async () => (await gauge(hub, 'subscriptions')) === 5, { what: 'five subscriptions on the hub' });
  assert.deepEqual([...c._channels.keys()].sort(), channelsOf(scope));
  assert.deepEqual(sentChannels(c.record, 'subscribe').sort(), channelsOf(scope), 'no subscribe since');
});

test('unmount: every channel unsubscribed, on the client and on the hub; the user leaves presence', async () => {
  const scope = 'life_unmount';
  const c = client({ token: mintToken({ sub: 'alice', name: 'Alice', scopes: [scope] }) });
  const watcher = client({ token: mintToken({ sub: 'watcher', name: 'Watcher', scopes: [scope] }) });
  const people = watcher.presence(scope);
  await people.ready;

  const view = render(h(StrictMode, null, h(PulseProvider, { client: c }, h(Everything, { scope }))));
  await waitFor(() => assert.equal(screen.getByTestId('everything').textContent, 'true 2 0 0'), WAIT);
  await until(() => people.get('alice'), { what: 'alice present' });
  // alice's five and the watcher's presence
  await until(async () => (await gauge(hub, 'subscriptions')) === 6, { what: 'six subscriptions on the hub' });

  view.unmount();
  await until(() => c._channels.size === 0, { what: 'the client holds no channel' });
  await until(async () => (await gauge(hub, 'subscriptions')) === 1, { what: 'only the watcher subscribed on the hub' });
  await until(() => !people.get('alice'), { what: 'alice gone from presence' });
  assert.deepEqual(sentChannels(c.record, 'unsubscribe').sort(), channelsOf(scope));
  assert.equal(c.state, 'connected'); // the application's client stays open
});

test('components using the same channel share it; it ends with the last of them', async () => {
  const scope = 'life_shared';
  const c = client({ token: mintToken({ scopes: [scope] }) });
  const seen = [];
  let setShown;
  function Counter({ id }) {
    const { counts } = useStats(scope);
    return h('p', { 'data-testid': id }, String(counts['reaction'] ?? 0));
  }
  function Raw() {
    useChannel(`feed:${scope}`, (f) => seen.push(f.offset));
    const { events } = useFeed(scope, { limit: 5 });
    return h('p', { 'data-testid': 'feed' }, String(events.length));
  }
  function Page() {
    const [shown, set] = useState({ a: true, b: true, raw: true });
    setShown = set;
    return h('div', null, shown.a && h(Counter, { id: 'a' }), shown.b && h(Counter, { id: 'b' }), shown.raw && h(Raw));
  }
  render(h(PulseProvider, { client: c }, h(Page)));
  await act(() => hub.postEvents([event(scope, 'reaction', 1), event(scope, 'reaction', 2)]));
  await waitFor(() => {
    assert.equal(screen.getByTestId('a').textContent, '2');
    assert.equal(screen.getByTestId('b').textContent, '2');
    assert.equal(screen.getByTestId('feed').textContent, '2');
  }, WAIT);
  assert.deepEqual(seen, [1, 2]);
  assert.deepEqual(sentChannels(c.record, 'subscribe').sort(), [`feed:${scope}`, `stats:${scope}`]);

  act(() => setShown({ a: false, b: true, raw: true }));
  await act(() => hub.postEvents([event(scope, 'reaction', 3)]));
  await waitFor(() => assert.equal(screen.getByTestId('b').textContent, '3'), WAIT);
  assert.deepEqual(sentChannels(c.record, 'unsubscribe'), []);

  // A component mounted later gets the current value at once (no new subscribe).
  act(() => setShown({ a: true, b: true, raw: true }));
  assert.equal(screen.getByTestId('a').textContent, '3');
  assert.deepEqual(sentChannels(c.record, 'subscribe').sort(), [`feed:${scope}`, `stats:${scope}`]);

  act(() => setShown({ a: false, b: false, raw: true }));
  await until(() => sentChannels(c.record, 'unsubscribe').length === 1, { what: 'stats unsubscribed' });
  assert.deepEqual(sentChannels(c.record, 'unsubscribe'), [`stats:${scope}`]);

  act(() => setShown({ a: false, b: false, raw: false }));
  await until(() => c._channels.size === 0, { what: 'no channel left' });
  assert.deepEqual(sentChannels(c.record, 'unsubscribe').sort(), [`feed:${scope}`, `stats:${scope}`]);
  await until(async () => (await gauge(hub, 'subscriptions')) === 0, { what: 'none on the hub' });
});

test('changing the scope moves the subscription', async () => {
  const c = client({ token: mintToken({ scopes: ['life_a', 'life_b'] }) });
  let setScope;
  function Board() {
    const [scope, set] = useState('life_a');
    setScope = set;
    const { stats } = useStats(scope);
    return h('p', { 'data-testid': 'scope' }, stats?.scope ?? 'none');
  }
  render(h(PulseProvider, { client: c }, h(Board)));
  await waitFor(() => assert.equal(screen.getByTestId('scope').textContent, 'life_a'), WAIT);
  act(() => setScope('life_b'));
  await waitFor(() => assert.equal(screen.getByTestId('scope').textContent, 'life_b'), WAIT);
  await until(() => sentChannels(c.record, 'unsubscribe').length === 1, { what: 'the old scope unsubscribed' });
  assert.deepEqual(sentChannels(c.record, 'subscribe'), ['stats:life_a', 'stats:life_b']);
  assert.deepEqual(sentChannels(c.record, 'unsubscribe'), ['stats:life_a']);
  // A falsy scope subscribes to nothing.
  act(() => setScope(null));
  await waitFor(() => assert.equal(screen.getByTestId('scope').textContent, 'none'), WAIT);
  await until(() => c._channels.size === 0, { what: 'no channel' });
});

test('useConnectionState: connected, reconnecting while the hub is down, connected again; nothing lost', async () => {
  const scope = 'life_restart';
  const c = client({ token: mintToken({ scopes: [scope] }) });
  const states = [];
  function Status() {
    const state = useConnectionState();
    const status = useConnectionStatus();
    states.push(state);
    const { events } = useFeed(scope, { limit: 20 });
    return h(
      'div',
      null,
      h('p', { 'data-testid': 'state' }, `${state} ${status.transport}`),
      h('p', { 'data-testid': 'offsets' }, events.map((e) => e.offset).join(',')),
    );
  }
  render(h(PulseProvider, { client: c }, h(Status)));
  await waitFor(() => assert.equal(screen.getByTestId('state').textContent, 'connected ws'), WAIT);
  await act(() => hub.postEvents([event(scope, 'check_in', 1)]));
  await waitFor(() => assert.equal(screen.getByTestId('offsets').textContent, '1'), WAIT);

  await act(() => hub.stop());
  await waitFor(() => assert.match(screen.getByTestId('state').textContent, /^reconnecting/), WAIT);
  await act(() => hub.spawn());
  await waitFor(() => assert.equal(screen.getByTestId('state').textContent, 'connected ws'), { timeout: 20_000 });
  await act(() => hub.postEvents([event(scope, 'check_in', 2), event(scope, 'check_in', 3)]));
  await waitFor(() => assert.equal(screen.getByTestId('offsets').textContent, '3,2,1'), WAIT);
  const rendered = states.filter((s, i) => s !== states[i - 1]);
  assert.deepEqual(rendered, ['connecting', 'connected', 'reconnecting', 'connected']);
});

test('a provider given a url owns its client: one connection under StrictMode, closed on unmount', async () => {
  const scope = 'life_owned';
  const { WebSocket, record } = recordingWebSocket();
  const tokens = [];
  const getToken = async ({ reason }) => {
    tokens.push(reason);
    return mintToken({ sub: 'owner', scopes: [scope] });
  };
  let seenClient;
  function Board() {
    seenClient = usePulseClient();
    const state = useConnectionState();
    const { counts } = useStats(scope);
    return h('p', { 'data-testid': 'owned' }, `${state} ${counts['question.asked'] ?? 0}`);
  }
  const view = render(
    h(StrictMode, null, h(PulseProvider, { url: hub.wsUrl, options: { getToken, WebSocket, reconnectBaseMs: 100 } }, h(Board))),
  );
  await waitFor(() => assert.equal(screen.getByTestId('owned').textContent, 'connected 0'), WAIT);
  await act(() => hub.postEvents([event(scope, 'question.asked', 1)]));
  await waitFor(() => assert.equal(screen.getByTestId('owned').textContent, 'connected 1'), WAIT);
  assert.equal(record.opened, 1, 'StrictMode\'s discarded client never connected');
  assert.deepEqual(tokens, ['initial']);
  await until(async () => (await gauge(hub, 'sessions')) === 1, { what: 'one session on the hub' });
  assert.deepEqual(sentChannels(record, 'subscribe'), [`stats:${scope}`]);

  const owned = seenClient;
  view.unmount();
  assert.equal(owned.state, 'closed');
  await until(async () => (await gauge(hub, 'sessions')) === 0, { what: 'the session gone from the hub' });
});

test('a provider given a url sends a new options.token to the hub (refresh) without reconnecting', async () => {
  const scope = 'life_token';
  const { WebSocket, record } = recordingWebSocket();
  let seenClient;
  function Board() {
    seenClient = usePulseClient();
    return h('p', { 'data-testid': 'token' }, useConnectionState());
  }
  const first = mintToken({ sub: 'rotating', scopes: [scope] });
  const second = mintToken({ sub: 'rotating', scopes: [scope], ttlS: 7200 });
  const page = (token) => h(PulseProvider, { url: hub.wsUrl, options: { token, WebSocket } }, h(Board));
  const view = render(page(first));
  await waitFor(() => assert.equal(screen.getByTestId('token').textContent, 'connected'), WAIT);
  const owned = seenClient;
  view.rerender(page(second));
  await until(() => record.sent.some((f) => f.type === 'refresh' && f.token === second), { what: 'the refresh sent' });
  assert.equal(seenClient, owned, 'the same client');
  assert.equal(owned.token, second);
  assert.equal(record.opened, 1);
  view.unmount();
});

test('hooks outside a provider say so', () => {
  function Lost() {
    useStats('demo');
    return null;
  }
  const errors = [];
  const onError = (e) => {
    e.preventDefault();
    errors.push(e.error);
  };
  window.addEventListener('error', onError);
  const original = console.error;
  console.error = () => {};
  try {
    assert.throws(() => render(h(Lost)), /useStats: no <PulseProvider> above this component/);
  } finally {
    console.error = original;
    window.removeEventListener('error', onError);
  }
});
