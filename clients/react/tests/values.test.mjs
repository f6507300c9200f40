// The hooks' values follow the hub: events posted over HTTP (POST
// /api/events, as a service posts them) show up in useStats and useFeed,
// people in usePresence, notifications in useNotifications, raw frames in
// useChannel; a burst of frames is rendered in a few batches, not one render
// per frame. A real hub (clients/js's test helper), real WebSockets, React
// in jsdom.
import './lib/dom.mjs';
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import { createElement as h, useState } from 'react';
import { PulseProvider, useChannel, useFeed, useNotifications, usePresence, useStats } from '../src/index.js';
import { Hub, connect, event, mintToken, sentChannels } from './lib/pulse.mjs';

const WAIT = { timeout: 10_000 };

let hub;
const clients = [];
before(async () => {
  hub = await Hub.start();
});
afterEach(async () => {
  cleanup();
  await Promise.all(clients.splice(0).map((c) => c.close()));
});
after(async () => {
  await hub?.destroy();
});

function client(options) {
  const c = connect(hub, options);
  clients.push(c);
  return c;
}

/** Renders `element` under a provider of `c`. */
function show(c, element) {
  return render(h(PulseProvider, { client: c }, element));
}

test('useStats and useFeed: posted events change the counters and the feed', async () => {
  const scope = 'values_stats';
  const c = client({ token: mintToken({ scopes: [scope] }) });
  function Board() {
    const { counts, ready, version } = useStats(scope);
    const { events } = useFeed(scope, { limit: 3 });
    return h(
      'section',
      null,
      h('p', { 'data-testid': 'ready' }, ready ? 'ready' : 'waiting'),
      h('p', { 'data-testid': 'version' }, String(version)),
      h('p', { 'data-testid': 'messages' }, String(counts['message.sent'] ?? 0)),
      h('p', { 'data-testid': 'votes' }, String(counts['poll.vote'] ?? 0)),
      h('ul', null, events.map((e) => h('li', { key: e.id }, `${e.offset} ${e.kind} ${e.actor?.name ?? ''}`))),
    );
  }
  show(c, h(Board));
  await waitFor(() => assert.equal(screen.getByTestId('ready').textContent, 'ready'), WAIT);
  await waitFor(() => assert.notEqual(screen.getByTestId('version').textContent, 'null'), WAIT);
  assert.equal(screen.getByTestId('messages').textContent, '0');

  await act(() =>
    hub.postEvents([
      event(scope, 'message.sent', 1),
      event(scope, 'message.sent', 2),
      event(scope, 'poll.vote', 3),
      event(scope, 'check_in', 4, { actor: { id: 'maria', name: 'Maria' } }),
    ]),
  );
  await waitFor(() => {
    assert.equal(screen.getByTestId('messages').textContent, '2');
    assert.equal(screen.getByTestId('votes').textContent, '1');
  }, WAIT);
  await waitFor(() => assert.deepEqual(screen.getAllByRole('listitem').map((li) => li.textContent), ['4 check_in Maria', '3 poll.vote ', '2 message.sent ']), WAIT);

  await act(() => hub.postEvents([event(scope, 'message.sent', 5)]));
  await waitFor(() => assert.equal(screen.getByTestId('messages').textContent, '3'), WAIT);
  // limit: 3, newest first
  await waitFor(() => assert.deepEqual(screen.getAllByRole('listitem').map((li) => li.textContent.split(' ')[0]), ['5', '4', '3']), WAIT);
});

test('usePresence: the members of a scope, joining and leaving', async () => {
  const scope = 'values_presence';
  const alice = client({ token: mintToken({ sub: 'alice', name: 'Alice', scopes: [scope] }) });
  const bob = client({ token: mintToken({ sub: 'bob', name: 'Bob', scopes: [scope] }) });
  function People() {
    const { members, count } = usePresence(scope);
    return h('p', { 'data-testid': 'people' }, `${count}: ${members.map((m) => m.name).join(', ')}`);
  }
  show(alice, h(People));
  await waitFor(() => assert.equal(screen.getByTestId('people').textContent, '1: Alice'), WAIT);

  // Bob's page: another root with its own client.
  const bobsPage = document.createElement('div');
  document.body.append(bobsPage);
  const bobs = render(h(PulseProvider, { client: bob }, h(People)), { container: bobsPage });
  await waitFor(() => assert.equal(screen.getAllByTestId('people')[0].textContent, '2: Alice, Bob'), WAIT);

  bobs.unmount();
  await waitFor(() => assert.equal(screen.getByTestId('people').textContent, '1: Alice'), WAIT);
});

test('useNotifications: system and the user\'s own, unread count, markRead, dismiss; another user\'s are not shown', async () => {
  const alice = client({ token: mintToken({ sub: 'alice', scopes: ['demo'] }) });
  let api;
  function Bell() {
    const notes = useNotifications();
    api = notes;
    return h(
      'div',
      null,
      h('p', { 'data-testid': 'ready' }, String(notes.ready)),
      h('p', { 'data-testid': 'unread' }, String(notes.unread)),
      h('ul', null, notes.items.map((n) => h('li', { key: n.id }, `${n.channel} ${n.title}${n.read ? ' (read)' : ''}`))),
    );
  }
  show(alice, h(Bell));
  await waitFor(() => assert.equal(screen.getByTestId('ready').textContent, 'true'), WAIT);
  const before = screen.queryAllByRole('listitem').length; // `system` may hold earlier tests' notifications

  await act(async () => {
    await hub.notify({ target: 'user:bob', level: 'info', title: 'For Bob' });
    await hub.notify({ target: 'user:alice', level: 'success', title: 'Export ready' });
    await hub.notify({ target: 'system', level: 'warning', title: 'Maintenance' });
  });
  await waitFor(() => assert.equal(screen.getAllByRole('listitem').length, before + 2), WAIT);
  const texts = () => screen.getAllByRole('listitem').map((li) => li.textContent);
  assert.ok(texts().includes('user:alice Export ready'), texts().join('; '));
  assert.ok(texts().includes('system Maintenance'), texts().join('; '));
  assert.ok(!texts().some((t) => t.includes('For Bob')));
  assert.equal(screen.getByTestId('unread').textContent, String(before + 2));

  const exportReady = api.items.find((n) => n.title === 'Export ready');
  act(() => api.markRead(exportReady.id));
  await waitFor(() => assert.ok(texts().includes('user:alice Export ready (read)')), WAIT);
  assert.equal(screen.getByTestId('unread').textContent, String(before + 1));

  act(() => api.dismiss(exportReady.id));
  await waitFor(() => assert.ok(!texts().some((t) => t.includes('Export ready'))), WAIT);
  assert.equal(screen.getByTestId('unread').textContent, String(before + 1));
});

test('useNotifications(id) reads that user\'s channel; the hub refuses another user\'s (error, not a crash)', async () => {
  const alice = client({ token: mintToken({ sub: 'alice', scopes: ['demo'] }) });
  function Theirs({ id }) {
    const { error, ready } = useNotifications(id);
    return h('p', { 'data-testid': id }, error ? error.code : String(ready));
  }
  show(alice, h('div', null, h(Theirs, { id: 'alice' }), h(Theirs, { id: 'mallory' })));
  await waitFor(() => assert.equal(screen.getByTestId('alice').textContent, 'true'), WAIT);
  await waitFor(() => assert.equal(screen.getByTestId('mallory').textContent, 'forbidden'), WAIT);
});

test('useChannel: raw frames in order to the latest callback; a new callback does not resubscribe', async () => {
  const scope = 'values_channel';
  const c = client({ token: mintToken({ scopes: [scope] }) });
  const seen = [];
  let setTag;
  function Raw() {
    const [tag, set] = useState('a');
    setTag = set;
    const { ready } = useChannel(`feed:${scope}`, (frame) => seen.push(`${tag}${frame.offset}`));
    return h('p', { 'data-testid': 'raw' }, String(ready));
  }
  show(c, h(Raw));
  await waitFor(() => assert.equal(screen.getByTestId('raw').textContent, 'true'), WAIT);
  await act(() => hub.postEvents([event(scope, 'reaction', 1), event(scope, 'reaction', 2)]));
  await waitFor(() => assert.deepEqual(seen, ['a1', 'a2']), WAIT);
  act(() => setTag('b'));
  await act(() => hub.postEvents([event(scope, 'reaction', 3)]));
  await waitFor(() => assert.deepEqual(seen, ['a1', 'a2', 'b3']), WAIT);
  assert.deepEqual(sentChannels(c.record, 'subscribe'), [`feed:${scope}`]);
  assert.deepEqual(sentChannels(c.record, 'unsubscribe'), []);
});

test('a burst of frames is rendered in a few batches, not once per frame', async () => {
  const scope = 'values_burst';
  // As in a browser, where each WebSocket message is a task of its own (the
  // `ws` package hands Node several messages in one task, which React
  // would batch anyway): each message is dispatched in its own macrotask.
  const { default: WebSocket } = await import('ws');
  class TaskPerMessage extends WebSocket {
    set onmessage(fn) {
      super.onmessage = fn ? (msg) => setImmediate(() => fn(msg)) : null;
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  const c = client({ token: mintToken({ scopes: [scope] }), WebSocket: TaskPerMessage });
  let renders = 0;
  function Feed() {
    const { events, ready } = useFeed(scope, { limit: 500 });
    renders += 1;
    return h('p', { 'data-testid': 'n' }, `${ready} ${events.length}`);
  }
  show(c, h(Feed));
  await waitFor(() => assert.equal(screen.getByTestId('n').textContent, 'true 0'), WAIT);
  const N = 300;
  const rendersBefore = renders;
  await act(() => hub.postEvents(Array.from({ length: N }, (_, i) => event(scope, 'message.sent', i))));
  await waitFor(() => assert.equal(screen.getByTestId('n').textContent, `true ${N}`), WAIT);
  const burst = renders - rendersBefore;
  assert.ok(burst < N / 10, `${N} frames took ${burst} renders`);
});
