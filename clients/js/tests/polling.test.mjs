// /ws refused by something in between while HTTP works: the long-poll
// fallback, then back to WebSocket when it works again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, range, record, spyingWebSocket, waitFor } from './lib/client.mjs';
import { Hub, checkIn, mintToken, sleep, until } from './lib/hub.mjs';
import { Proxy } from './lib/proxy.mjs';

let hub;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  await hub?.destroy();
});

const fast = { pollIntervalMs: 300, longPollWaitS: 2, probeIntervalMs: [400, 600], historyPageSize: 10 };

test('/ws refused: polling carries every channel, pages through a backlog, and returns to WebSocket', async () => {
  const scope = 'poll';
  const proxy = await Proxy.start(hub.port, 'no-upgrade');
  const sent = [];
  const client = connect(proxy.wsUrl, { token: mintToken({ sub: 'alice', scopes: [scope] }), WebSocket: spyingWebSocket(sent), ...fast });
  const bob = connect(hub.wsUrl, { token: mintToken({ sub: 'bob', name: 'Bob', scopes: [scope] }) });
  try {
    const feed = record(client, `feed:${scope}`);
    const system = record(client, 'system');
    const stats = client.stats(scope);
    const presence = client.presence(scope);
    const presenceOps = [];
    presence.on('change', (_, frame) => presenceOps.push(frame.op));
    await waitFor(client, 'polling');
    assert.deepEqual(client.states.slice(0, 3), ['connecting', 'reconnecting', 'polling']);
    assert.equal(client.status.transport, 'poll');
    const infos = await Promise.all([feed.sub.ready, system.sub.ready, stats.ready, presence.ready]);
    assert.ok(infos.every((i) => i.transport === 'poll'), JSON.stringify(infos));

    // Feed (long-poll) and stats (polled, kicked by new feed items).
    await hub.postEvents(range(1, 3).map((n) => checkIn(scope, 'Maria', n)));
    await until(() => feed.frames.length === 3, { what: 'polled feed' });
    assert.deepEqual(feed.offsets(), [1, 2, 3]);
    assert.equal(feed.frames[0].type, 'event');
    await until(() => stats.stats?.counts.check_in === 3, { what: 'polled stats' });
    assert.ok(stats.changed.includes('/counts/check_in'), String(stats.changed));

    // Presence: polled lists become sync, then join/leave diffs.
    await bob.subscribe(`feed:${scope}`).ready;
    await until(() => presence.get('bob'), { what: 'bob in polled presence' });
    assert.equal(presence.get('bob').name, 'Bob');
    await bob.close();
    await until(() => !presence.get('bob'), { what: 'bob gone from polled presence' });
    assert.equal(presenceOps[0], 'sync');
    assert.ok(presenceOps.includes('join') && presenceOps.includes('leave'), presenceOps.join());

    // Notifications (polled).
    await hub.notify({ target: 'system', level: 'info', title: 'polled note' });
    await until(() => system.frames.some((f) => f.notification.title === 'polled note'), { what: 'polled notification' });

    // HTTP fails too for a while: reconnecting (still the polling transport);
    // the backlog is paged through when it works again.
    proxy.mode = 'down';
    proxy.cut();
    await waitFor(client, 'reconnecting');
    assert.equal(client.status.transport, 'poll');
    assert.ok(client.status.retryAt > Date.now() - 1000);
    await hub.postEvents(range(4, 28).map((n) => checkIn(scope, 'Maria', n)));
    proxy.requests = [];
    proxy.mode = 'no-upgrade';
    await until(() => feed.frames.at(-1)?.offset === 28, { what: 'backlog paged', timeoutMs: 15_000 });
    await waitFor(client, 'polling');
    const pages = proxy.requests.filter((u) => u.startsWith(`/api/channels/feed%3A${scope}/history?`));
    for (const since of [3, 13, 23]) assert.ok(pages.some((u) => u.includes(`since=${since}&`) || u.endsWith(`since=${since}`)), `no page from ${since}:\n${pages.join('\n')}`);

    // WebSocket works again: the background probe switches back, subscriptions resume with `since`.
    proxy.mode = 'pass';
    await waitFor(client, 'connected', 15_000);
    assert.equal(client.status.transport, 'ws');
    await until(() => feed.subscribed.some((i) => i.transport === 'ws'), { what: 'feed resubscribed over ws' });
    const ws = feed.subscribed.find((i) => i.transport === 'ws');
    assert.equal(ws.resumed, true);
    assert.equal(ws.recovered, true);
    assert.ok(sent.some((f) => f.type === 'subscribe' && f.channel === `feed:${scope}` && f.since === 28));
    await hub.postEvents(range(29, 30).map((n) => checkIn(scope, 'Maria', n)));
    await until(() => feed.frames.at(-1)?.offset === 30, { what: 'live over ws' });
    await until(() => stats.stats?.counts.check_in === 30, { what: 'stats over ws' });
    await sleep(300);
    assert.deepEqual(feed.offsets(), range(1, 30));
    assert.deepEqual(feed.resets, []);
    assert.deepEqual(system.errors, []);
    // While connected over WebSocket, no more polling requests.
    proxy.requests = [];
    await sleep(800);
    assert.deepEqual(proxy.requests, []);
  } finally {
    await client.close();
    await bob.close();
    await proxy.close();
  }
});

test('HTTP down too: reconnecting with backoff, never polling', async () => {
  const proxy = await Proxy.start(hub.port, 'down');
  const client = connect(proxy.wsUrl, { token: mintToken(), ...fast, reconnectBaseMs: 100, reconnectMaxMs: 400 });
  try {
    client.subscribe('system');
    await until(() => client.status.attempt >= 4, { what: 'several attempts' });
    assert.equal(client.state, 'reconnecting');
    assert.ok(!client.states.includes('polling'));
    assert.ok(client.status.retryAt >= Date.now() - 50 && client.status.retryAt <= Date.now() + 400);
    proxy.mode = 'pass';
    await waitFor(client, 'connected');
    assert.equal(client.status.attempt, 0);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('`polling: false` keeps retrying the WebSocket', async () => {
  const proxy = await Proxy.start(hub.port, 'no-upgrade');
  const client = connect(proxy.wsUrl, { token: mintToken(), ...fast, polling: false, reconnectMaxMs: 300 });
  try {
    client.subscribe('system');
    await until(() => client.status.attempt >= 4, { what: 'several attempts' });
    assert.ok(!client.states.includes('polling'));
    assert.equal(client.state, 'reconnecting');
  } finally {
    await client.close();
    await proxy.close();
  }
});
