// Connecting, every channel family, the helpers, and refusals, against a real hub.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PulseError } from '../src/pulsehub.js';
import { connect, range, record, waitFor } from './lib/client.mjs';
import { Hub, checkIn, mintToken, sleep, until } from './lib/hub.mjs';

let hub;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  await hub?.destroy();
});

test('connects: connecting → connected, with who and where from welcome', async () => {
  const client = connect(hub.wsUrl, { token: mintToken({ sub: 'alice', name: 'Alice' }) });
  try {
    assert.equal(client.state, 'connecting');
    await waitFor(client, 'connected');
    assert.deepEqual(client.states, ['connecting', 'connected']);
    assert.deepEqual(client.status.user, { id: 'alice', name: 'Alice' });
    assert.equal(client.status.instance, 'hub-sdk');
    assert.match(client.status.session, /^s_/);
    assert.equal(client.status.transport, 'ws');
    const rtt = await client.ping();
    assert.ok(typeof rtt === 'number' && rtt >= 0);
    assert.equal(client.status.rtt, rtt);
    await client.activity('viewing', 'dashboard');
  } finally {
    await client.close();
  }
  assert.equal(client.state, 'closed');
  assert.equal(client.status.reason, 'client');
  assert.equal(client._timers.size, 0);
});

test('subscribes to each channel family and receives its frames', async () => {
  const scope = 'families';
  await hub.postEvents([checkIn(scope, 'Maria'), checkIn(scope, 'Maria')]);
  const client = connect(hub.wsUrl, { token: mintToken({ sub: 'alice', name: 'Alice', scopes: [scope] }) });
  try {
    const stats = record(client, `stats:${scope}`);
    const presence = record(client, `presence:${scope}`);
    const feed = record(client, `feed:${scope}`);
    const mine = record(client, 'user:alice');
    const system = record(client, 'system');
    const infos = await Promise.all([stats, presence, feed, mine, system].map((r) => r.sub.ready));
    assert.deepEqual(
      infos.map((i) => [i.channel, i.transport, i.resumed]),
      [`stats:${scope}`, `presence:${scope}`, `feed:${scope}`, 'user:alice', 'system'].map((c) => [c, 'ws', false]),
    );
    assert.equal(infos[2].offset, 2);
    assert.equal(infos[2].recovered, false);
    // Without `since`: the channel's recent items.
    await until(() => feed.frames.length === 2, { what: 'recent feed items' });
    assert.deepEqual(feed.offsets(), [1, 2]);
    await until(() => stats.frames.length >= 1 && presence.frames.length >= 1, { what: 'stats snapshot and presence sync' });
    assert.equal(stats.frames[0].type, 'stats');
    assert.equal(stats.frames[0].stats.counts.check_in, 2);
    assert.equal(presence.frames[0].op, 'sync');
    assert.deepEqual(presence.frames[0].users.map((u) => u.id), ['alice']);

    await hub.postEvents([checkIn(scope, 'Ahmed')]);
    await hub.notify({ target: 'system', level: 'warning', title: 'Maintenance', body: 'at noon' });
    await hub.notify({ target: 'user:alice', level: 'info', title: 'For Alice' });
    await hub.notify({ target: 'user:bob', level: 'info', title: 'For Bob' });
    await until(() => feed.frames.length === 3 && system.frames.length === 1 && mine.frames.length === 1, { what: 'live frames' });
    assert.equal(feed.frames[2].type, 'event');
    assert.equal(feed.frames[2].offset, 3);
    assert.equal(feed.frames[2].event.actor.name, 'Ahmed');
    assert.equal(system.frames[0].type, 'notification');
    assert.equal(system.frames[0].notification.title, 'Maintenance');
    assert.deepEqual(mine.frames.map((f) => f.notification.title), ['For Alice']);
    await until(() => stats.frames.at(-1).stats.counts.check_in === 3, { what: 'stats update' });
    const last = stats.frames.at(-1);
    assert.ok(last.changed.includes('/counts/check_in'), `changed: ${last.changed}`);
    // Versions only grow, each snapshot once.
    const versions = stats.frames.map((f) => f.version);
    assert.deepEqual(versions, [...new Set(versions)].sort((a, b) => a - b));
    for (const r of [stats, presence, feed, mine, system]) assert.deepEqual(r.errors, []);
  } finally {
    await client.close();
  }
});

test('helpers: stats, presence, feed and notifications keep the state to render', async () => {
  const scope = 'helpers';
  const alice = connect(hub.wsUrl, { token: mintToken({ sub: 'alice', name: 'Alice', scopes: [scope] }) });
  const bob = connect(hub.wsUrl, { token: mintToken({ sub: 'bob', name: 'Bob', scopes: [scope] }) });
  try {
    const stats = alice.stats(scope);
    const presence = alice.presence(scope);
    const feed = alice.feed(scope, { limit: 3 });
    const notes = alice.notifications({ limit: 10 });
    const changes = [];
    stats.on('change', (s, changed) => changes.push(changed));
    const joined = [];
    presence.on('join', (u) => joined.push(u.id));
    const left = [];
    presence.on('leave', (u) => left.push(u.id));
    await Promise.all([stats.ready, presence.ready, feed.ready, notes.ready]);
    await until(() => presence.count === 1, { what: 'alice present' });
    assert.deepEqual(presence.members.map((u) => u.id), ['alice']);

    // Bob's presence in the scope: a join, then a leave when his client closes.
    const bobFeed = bob.subscribe(`feed:${scope}`);
    await bobFeed.ready;
    await until(() => presence.count === 2, { what: 'bob joined' });
    assert.deepEqual(presence.members.map((u) => u.name), ['Alice', 'Bob']);
    assert.equal(presence.get('bob').sessions, 1);
    assert.deepEqual(joined, ['bob']);

    await hub.postEvents([1, 2, 3, 4, 5].map((n) => checkIn(scope, 'Maria', n)));
    await until(() => feed.events.length === 3 && feed.events[0].offset === 5, { what: 'feed events' });
    assert.deepEqual(feed.events.map((e) => e.offset), [5, 4, 3]);
    assert.equal(feed.events[0].kind, 'check_in');
    assert.equal(feed.offset, 5);
    await until(() => stats.stats?.counts.check_in === 5, { what: 'stats' });
    assert.equal(stats.version, stats.version | 0);
    assert.ok(changes.some((c) => c.includes('/counts/check_in')));

    await hub.notify({ target: 'system', level: 'info', title: 'One' });
    await hub.notify({ target: 'user:alice', level: 'success', title: 'Two' });
    // (`system` may also hold notifications of earlier tests: its recent items.)
    await until(() => ['One', 'Two'].every((t) => notes.items.some((n) => n.title === t)), { what: 'notifications' });
    const n = notes.items.length;
    assert.equal(notes.unread, n);
    assert.deepEqual(notes.items.map((i) => i.title).slice(0, 2).sort(), ['One', 'Two']);
    assert.deepEqual(notes.items.find((i) => i.title === 'Two').channel, 'user:alice');
    notes.markRead(notes.items[0].id);
    assert.equal(notes.unread, n - 1);
    notes.dismiss(notes.items[1].id);
    assert.equal(notes.items.length, n - 1);
    notes.markAllRead();
    assert.equal(notes.unread, 0);

    await bob.close();
    await until(() => presence.count === 1, { what: 'bob left' });
    assert.deepEqual(left, ['bob']);
    assert.deepEqual(presence.members.map((u) => u.id), ['alice']);
    for (const v of [stats, presence, feed, notes]) v.unsubscribe();
  } finally {
    await alice.close();
    await bob.close();
  }
});

test('a second subscription to an established channel gets its current content first', async () => {
  const scope = 'late';
  await hub.postEvents(range(1, 4).map((n) => checkIn(scope, 'Maria', n)));
  const client = connect(hub.wsUrl, { token: mintToken({ scopes: [scope] }), replayItems: 3 });
  try {
    const first = record(client, `feed:${scope}`);
    const firstStats = record(client, `stats:${scope}`);
    await until(() => first.frames.length === 4 && firstStats.frames.length === 1, { what: 'first subscription' });
    const sent = [];
    client.on('frame', (f) => sent.push(f));
    const second = record(client, `feed:${scope}`);
    const secondStats = record(client, `stats:${scope}`);
    await second.sub.ready;
    await secondStats.sub.ready;
    assert.deepEqual(second.offsets(), [2, 3, 4]);
    assert.equal(secondStats.frames.length, 1);
    assert.equal(secondStats.frames[0].version, firstStats.frames[0].version);
    await hub.postEvents([checkIn(scope, 'Maria', 5)]);
    await until(() => first.frames.length === 5 && second.frames.length === 4, { what: 'live frame to both' });
    assert.deepEqual(second.offsets(), [2, 3, 4, 5]);
    // One hub subscription for both handles: one subscribe on the wire, no second `subscribed`.
    assert.equal(sent.filter((f) => f.type === 'subscribed').length, 0);
    // The hub subscription ends with the last handle.
    first.sub.unsubscribe();
    await hub.postEvents([checkIn(scope, 'Maria', 6)]);
    await until(() => second.frames.length === 5, { what: 'frame after the first handle left' });
    assert.equal(first.frames.length, 5);
    second.sub.unsubscribe();
    await until(() => sent.some((f) => f.type === 'unsubscribed' && f.channel === `feed:${scope}`), { what: 'unsubscribed' });
    await hub.postEvents([checkIn(scope, 'Maria', 7)]);
    await sleep(300);
    assert.equal(second.frames.length, 5);
    assert.equal(sent.filter((f) => f.type === 'event' && f.offset === 7).length, 0);
  } finally {
    await client.close();
  }
});

test('unsubscribing and subscribing again at once (React StrictMode) keeps one hub subscription', async () => {
  const scope = 'strict';
  await hub.postEvents([checkIn(scope), checkIn(scope)]);
  const sent = [];
  const client = connect(hub.wsUrl, { token: mintToken({ scopes: [scope] }) });
  client.on('frame', (f) => sent.push(f));
  try {
    await waitFor(client, 'connected');
    const a = record(client, `feed:${scope}`);
    a.sub.unsubscribe();
    const b = record(client, `feed:${scope}`);
    await b.sub.ready;
    await until(() => b.frames.length === 2, { what: 'items' });
    assert.deepEqual(b.offsets(), [1, 2]);
    await assert.rejects(a.sub.ready, (e) => e instanceof PulseError && e.code === 'closed');
    assert.equal(sent.filter((f) => f.type === 'subscribed').length, 1);
    assert.equal(sent.filter((f) => f.type === 'unsubscribed').length, 0);
  } finally {
    await client.close();
  }
});

test('a refused subscription rejects `ready` with the PulseError of its ref', async () => {
  const sent = [];
  const { spyingWebSocket } = await import('./lib/client.mjs');
  const client = connect(hub.wsUrl, { token: mintToken({ scopes: ['demo'] }), WebSocket: spyingWebSocket(sent) });
  try {
    const errors = [];
    const sub = client.subscribe('feed:acme', { onError: (e) => errors.push(e) });
    const error = await sub.ready.then(
      () => assert.fail('subscribed to a scope the token lacks'),
      (e) => e,
    );
    assert.ok(error instanceof PulseError);
    assert.equal(error.code, 'forbidden');
    assert.equal(error.channel, 'feed:acme');
    const subscribe = sent.find((f) => f.type === 'subscribe' && f.channel === 'feed:acme');
    assert.equal(error.ref, subscribe.ref);
    assert.equal(sub.state, 'failed');
    assert.deepEqual(errors, [error]);

    const unknown = client.subscribe('nosuch:thing');
    await assert.rejects(unknown.ready, (e) => e instanceof PulseError && ['not_found', 'bad_request'].includes(e.code) && typeof e.ref === 'number');

    // A refused channel can be asked for again (a new attempt, not the failed one).
    const again = client.subscribe('feed:acme');
    await assert.rejects(again.ready, (e) => e.code === 'forbidden' && e.ref !== error.ref);
  } finally {
    await client.close();
  }
});

test('commands resolve with their reply and reject with the hub code and ref', async () => {
  const sent = [];
  const { spyingWebSocket } = await import('./lib/client.mjs');
  const client = connect(hub.wsUrl, { token: mintToken(), WebSocket: spyingWebSocket(sent), pingIntervalMs: 0 });
  try {
    // Issued before `welcome`: waits for the connection.
    const pong = await client.command({ type: 'ping' });
    assert.equal(pong.type, 'pong');
    assert.equal(pong.ref, sent.at(-1).ref);
    const error = await client.command({ type: 'frobnicate' }).catch((e) => e);
    assert.ok(error instanceof PulseError);
    assert.equal(error.code, 'not_found');
    assert.equal(error.ref, sent.at(-1).ref);
    const bad = await client.command({ type: 'subscribe' }).catch((e) => e);
    assert.equal(bad.code, 'bad_request');
    assert.equal(bad.ref, sent.at(-1).ref);
    // Refs are distinct integers.
    const refs = sent.map((f) => f.ref);
    assert.equal(new Set(refs).size, refs.length);
  } finally {
    await client.close();
  }
});
