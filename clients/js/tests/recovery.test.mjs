// Subscriptions that survive: the hub restarted under the client, history
// pruned below the client's position, a hub with a new database.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, range, record, spyingWebSocket, waitFor } from './lib/client.mjs';
import { Hub, checkIn, mintToken, sleep, until } from './lib/hub.mjs';
import { Proxy } from './lib/proxy.mjs';

let hub;
before(async () => {
  // Few recent items, so "recent items" and "everything" differ.
  hub = await Hub.start({ PULSEHUB_RECENT_ITEMS: '3' });
});
after(async () => {
  await hub?.destroy();
});

test('the hub restarted under the client: it reconnects and recovers, no loss, no duplicate', async () => {
  const scope = 'restart';
  const sent = [];
  const client = connect(hub.wsUrl, { token: mintToken({ sub: 'alice', scopes: [scope] }), reconnectMaxMs: 1500, WebSocket: spyingWebSocket(sent) });
  try {
    const feed = record(client, `feed:${scope}`);
    const mine = record(client, 'user:alice');
    const stats = client.stats(scope);
    await Promise.all([feed.sub.ready, mine.sub.ready, stats.ready]);
    await hub.postEvents(range(1, 5).map((n) => checkIn(scope, 'Maria', n)));
    await hub.notify({ target: 'user:alice', level: 'info', title: 'before 1' });
    await hub.notify({ target: 'user:alice', level: 'info', title: 'before 2' });
    await until(() => feed.frames.length === 5 && mine.frames.length === 2, { what: 'frames before the restart' });

    await hub.restart();
    // Posted while the client is (most likely) still away: replayed with `since`.
    await hub.postEvents(range(6, 10).map((n) => checkIn(scope, 'Maria', n)));
    await hub.notify({ target: 'user:alice', level: 'info', title: 'during' });
    await waitFor(client, 'connected');
    await hub.postEvents(range(11, 15).map((n) => checkIn(scope, 'Maria', n)));
    await hub.notify({ target: 'user:alice', level: 'info', title: 'after' });
    await until(() => feed.frames.length >= 15 && mine.frames.length >= 4, { what: 'frames after the restart' });
    await sleep(200);

    assert.deepEqual(feed.offsets(), range(1, 15));
    // Re-subscribed from the position it had.
    assert.ok(sent.some((f) => f.type === 'subscribe' && f.channel === `feed:${scope}` && f.since === 5));
    assert.ok(sent.some((f) => f.type === 'subscribe' && f.channel === 'user:alice' && f.since === 2));
    assert.deepEqual(feed.frames.map((f) => f.event.data.n), range(1, 15));
    assert.deepEqual(mine.frames.map((f) => f.notification.title), ['before 1', 'before 2', 'during', 'after']);
    assert.deepEqual(mine.offsets(), range(1, 4));
    assert.ok(client.states.includes('reconnecting'), client.states.join(' → '));
    assert.deepEqual(feed.resets, []);
    const resumed = feed.subscribed.filter((i) => i.resumed);
    assert.ok(resumed.length >= 1);
    assert.ok(resumed.every((i) => i.recovered === true), JSON.stringify(feed.subscribed));
    assert.equal(feed.sub.recovered, true);
    // Stats carry on from the same database.
    await until(() => stats.stats?.counts.check_in === 15, { what: 'stats after the restart' });
  } finally {
    await client.close();
  }
});

test('history pruned below the position: one reset naming the missed offsets, then everything retained', async () => {
  const scope = 'pruned';
  const proxy = await Proxy.start(hub.port);
  const client = connect(proxy.wsUrl, { token: mintToken({ scopes: [scope] }), httpUrl: `http://127.0.0.1:${proxy.port}` });
  try {
    const feed = record(client, `feed:${scope}`);
    await feed.sub.ready;
    await hub.postEvents(range(1, 5).map((n) => checkIn(scope, 'Maria', n)));
    await until(() => feed.frames.length === 5, { what: 'first five' });

    // The client loses the hub; meanwhile 20 more events, and retention
    // removes offsets 1..10 (as the hub's pruning would).
    proxy.mode = 'down';
    proxy.cut();
    await waitFor(client, 'reconnecting');
    await hub.postEvents(range(6, 25).map((n) => checkIn(scope, 'Maria', n)));
    await hub.sql('DELETE FROM events WHERE scope = $1 AND feed_offset <= 10', [scope]);
    proxy.requests = [];
    proxy.mode = 'pass';
    await waitFor(client, 'connected');
    await until(() => feed.frames.at(-1)?.offset === 25, { what: 'retained history' });
    await hub.postEvents([checkIn(scope, 'Maria', 26)]);
    await until(() => feed.frames.at(-1)?.offset === 26, { what: 'live after the reset' });

    // The hub answered `recovered: false` (it only sends its 3 recent items);
    // the client read the history endpoint from its position instead.
    assert.ok(proxy.requests.some((u) => u.startsWith(`/api/channels/feed%3A${scope}/history?`) && u.includes('since=5')), proxy.requests.join('\n'));
    assert.deepEqual(feed.offsets(), [...range(1, 5), ...range(11, 26)]);
    assert.equal(feed.resets.length, 1);
    const [reset] = feed.resets;
    assert.equal(reset.reason, 'pruned');
    assert.equal(reset.since, 5);
    assert.equal(reset.offset, 25);
    assert.deepEqual(reset.missed, { from: 6, to: 10 });
    assert.equal(feed.subscribed.at(-1).recovered, false);
    assert.equal(feed.sub.recovered, false);
    // The reset came before the first frame after the hole.
    assert.equal(feed.frames.findIndex((f) => f.offset === 11), 5);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('a hub with a new database (offsets went back): reset "rewound", then the new items', async () => {
  const scope = 'rewound';
  const client = connect(hub.wsUrl, { token: mintToken({ sub: 'rewinder', scopes: [scope] }), reconnectMaxMs: 1500 });
  try {
    const feed = record(client, `feed:${scope}`);
    const stats = client.stats(scope);
    // The notifications helper passes on each channel's subscriptions and resets, in order with its items.
    const notes = [];
    const view = client.notifications({
      system: false,
      onSubscribed: (i) => notes.push(['subscribed', i.channel, i.offset, i.resumed]),
      onReset: (i) => notes.push(['reset', i.channel, i.reason, i.since]),
      onNotification: (n) => notes.push(['notification', n.channel, n.offset]),
    });
    await Promise.all([feed.sub.ready, stats.ready, view.ready]);
    await hub.postEvents(range(1, 6).map((n) => checkIn(scope, 'Maria', n)));
    await hub.notify({ target: 'user:rewinder', level: 'info', title: 'old 1' });
    await hub.notify({ target: 'user:rewinder', level: 'info', title: 'old 2' });
    await until(() => feed.frames.length === 6 && stats.stats?.counts.check_in === 6 && view.items.length === 2, { what: 'six events, two notifications' });

    await hub.restart({ fresh: true });
    await waitFor(client, 'connected');
    await until(() => feed.resets.length === 1, { what: 'the reset' });
    await until(() => notes.some(([what]) => what === 'reset'), { what: "the notifications' reset" });
    assert.deepEqual(notes, [
      ['subscribed', 'user:rewinder', 0, false],
      ['notification', 'user:rewinder', 1],
      ['notification', 'user:rewinder', 2],
      ['subscribed', 'user:rewinder', 0, true],
      ['reset', 'user:rewinder', 'rewound', 2],
    ]);
    await hub.postEvents(range(1, 2).map((n) => checkIn(scope, 'Ahmed', n)));
    await until(() => feed.frames.length === 8, { what: 'new items' });

    assert.equal(feed.resets[0].reason, 'rewound');
    assert.equal(feed.resets[0].since, 6);
    assert.equal(feed.resets[0].offset, 0);
    assert.equal(feed.resets[0].missed, null);
    assert.deepEqual(feed.offsets(), [...range(1, 6), 1, 2]);
    assert.deepEqual(feed.frames.slice(6).map((f) => f.event.actor.name), ['Ahmed', 'Ahmed']);
    // Stats versions started again too: the new world's snapshot is taken.
    await until(() => stats.stats?.counts.check_in === 2, { what: 'stats of the new database' });
  } finally {
    await client.close();
  }
});

test('`since` from the application resumes a first subscription', async () => {
  const scope = 'since';
  await hub.postEvents(range(1, 8).map((n) => checkIn(scope, 'Maria', n)));
  const client = connect(hub.wsUrl, { token: mintToken({ scopes: [scope] }) });
  try {
    const feed = record(client, `feed:${scope}`, { since: 4 });
    const info = await feed.sub.ready;
    assert.equal(info.recovered, true);
    await until(() => feed.frames.length === 4, { what: 'replay after 4' });
    assert.deepEqual(feed.offsets(), range(5, 8));
    assert.equal(feed.sub.offset, 8);
  } finally {
    await client.close();
  }
});
