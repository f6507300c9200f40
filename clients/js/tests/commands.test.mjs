// Commands as promises: rate limiting, waiting for a connection, bounds, close.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PulseError } from '../src/pulsehub.js';
import { connect, spyingWebSocket, waitFor } from './lib/client.mjs';
import { Hub, mintToken } from './lib/hub.mjs';
import { Proxy } from './lib/proxy.mjs';

let hub;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  await hub?.destroy();
});

/** Sends `n` pings at once; returns each one's sent ref and outcome. */
async function flood(client, sent, n) {
  const calls = [];
  for (let i = 0; i < n; i++) {
    const promise = client.command({ type: 'ping' });
    calls.push({ ref: sent.at(-1).ref, promise });
  }
  return Promise.all(
    calls.map(({ ref, promise }) =>
      promise.then(
        (reply) => ({ ref, reply }),
        (error) => ({ ref, error }),
      ),
    ),
  );
}

test('a flood of commands: the hub refuses what is over its limit, every promise settles', async () => {
  const sent = [];
  const client = connect(hub.wsUrl, { token: mintToken(), WebSocket: spyingWebSocket(sent), commandTimeoutMs: 1500, pingIntervalMs: 0 });
  try {
    await waitFor(client, 'connected');
    const results = await flood(client, sent, 90);
    const ok = results.filter((r) => r.reply);
    const failed = results.filter((r) => r.error);
    // The hub allows a burst of 50 commands (then 20 a second).
    assert.ok(ok.length >= 50 && ok.length < 90, `${ok.length} answered`);
    for (const r of ok) assert.equal(r.reply.ref, r.ref);
    assert.ok(failed.every((r) => r.error instanceof PulseError && ['rate_limited', 'timeout'].includes(r.error.code)));
    // Today the hub's rate_limited errors carry no ref: they reach the client's
    // `error` event, and the commands they answer time out. With refs (the hub
    // change of issue 13) they reject the right promises instead.
    const refused = client.errors.filter((e) => e.code === 'rate_limited').length + failed.filter((r) => r.error.code === 'rate_limited').length;
    assert.ok(refused >= failed.length, `${refused} rate_limited for ${failed.length} failed`);
    assert.equal(client.state, 'connected');
  } finally {
    await client.close();
  }
});

test('a flood of commands: promises rejected with rate_limited carrying their own ref', async () => {
  const sent = [];
  const client = connect(hub.wsUrl, { token: mintToken(), WebSocket: spyingWebSocket(sent), commandTimeoutMs: 1500, pingIntervalMs: 0 });
  try {
    await waitFor(client, 'connected');
    const results = await flood(client, sent, 90);
    const failed = results.filter((r) => r.error);
    assert.ok(failed.length > 0);
    for (const r of failed) {
      assert.equal(r.error.code, 'rate_limited', `ref ${r.ref}: ${r.error.code} ${r.error.message}`);
      assert.equal(r.error.ref, r.ref);
    }
    assert.deepEqual(client.errors.filter((e) => e.code === 'rate_limited'), []);
  } finally {
    await client.close();
  }
});

test('a command issued without a connection waits for one', async () => {
  const proxy = await Proxy.start(hub.port, 'down');
  const client = connect(proxy.wsUrl, { token: mintToken(), reconnectMaxMs: 300 });
  try {
    const early = client.command({ type: 'ping' }, { timeoutMs: 300 });
    await assert.rejects(early, (e) => e instanceof PulseError && e.code === 'timeout' && typeof e.ref === 'number');
    const waiting = client.ping();
    await new Promise((r) => setTimeout(r, 200));
    proxy.mode = 'pass';
    const rtt = await waiting;
    assert.equal(typeof rtt, 'number');
    assert.equal(client.state, 'connected');
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('commands waiting for a connection are bounded', async () => {
  const proxy = await Proxy.start(hub.port, 'down');
  const client = connect(proxy.wsUrl, { token: mintToken(), maxQueuedCommands: 2 });
  try {
    const a = client.ping();
    const b = client.ping();
    await assert.rejects(client.ping(), (e) => e.code === 'queue_full');
    await client.close();
    await assert.rejects(a, (e) => e.code === 'closed');
    await assert.rejects(b, (e) => e.code === 'closed');
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('a command in flight on a lost connection is sent again on the next one', async () => {
  const proxy = await Proxy.start(hub.port);
  const sent = [];
  const client = connect(proxy.wsUrl, { token: mintToken(), WebSocket: spyingWebSocket(sent), reconnectMaxMs: 300, pingIntervalMs: 0 });
  try {
    await waitFor(client, 'connected');
    // The ping goes out on a link that no longer delivers, which then drops.
    proxy.stalled = true;
    const ping = client.ping();
    await new Promise((r) => setTimeout(r, 200));
    proxy.stalled = false;
    proxy.cut();
    await ping;
    const pings = sent.filter((f) => f.type === 'ping');
    assert.equal(pings.length, 2);
    assert.equal(pings[0].ref, pings[1].ref);
    assert.ok(client.states.includes('reconnecting'));
    assert.equal(client.state, 'connected');
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('subscribing to more channels than the hub allows at once: paced, no refusal', async () => {
  const client = connect(hub.wsUrl, { token: mintToken({ scopes: ['*'] }) });
  try {
    await waitFor(client, 'connected');
    const subs = Array.from({ length: 80 }, (_, i) => client.subscribe(`feed:many-${i}`));
    await Promise.all(subs.map((s) => s.ready));
    assert.deepEqual(client.errors.map((e) => e.code), []);
  } finally {
    await client.close();
  }
});

test('subscribes refused by the hub rate limit are retried until subscribed', async () => {
  // No client-side pacing: the hub refuses what is over its burst of 50.
  const client = connect(hub.wsUrl, { token: mintToken({ scopes: ['*'] }), subscribeBurst: 1000, commandTimeoutMs: 1500, pingIntervalMs: 0 });
  try {
    let refused = 0;
    client.on('frame', (f) => {
      if (f.type === 'error' && f.code === 'rate_limited') refused += 1;
    });
    await waitFor(client, 'connected');
    const subs = Array.from({ length: 80 }, (_, i) => client.subscribe(`feed:burst-${i}`));
    await Promise.all(subs.map((s) => s.ready));
    assert.ok(subs.every((s) => s.state === 'subscribed'));
    // The hub did refuse some (today without a ref, so those subscribes time
    // out before the retry; with refs the retry follows the refusal).
    assert.ok(refused > 0, 'no rate_limited refusal seen');
  } finally {
    await client.close();
  }
});
