// The browser's lifecycle signals (online/offline, the page becoming
// visible), given to Node through stand-in globals, and dead links found by
// the app-level ping. (node --test runs each file in its own process, so the
// globals set here stay here.)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, range, record, waitFor } from './lib/client.mjs';
import { Hub, checkIn, mintToken, sleep, until } from './lib/hub.mjs';
import { Proxy } from './lib/proxy.mjs';

const win = new EventTarget();
const doc = new EventTarget();
doc.visibilityState = 'visible';
globalThis.addEventListener = win.addEventListener.bind(win);
globalThis.removeEventListener = win.removeEventListener.bind(win);
globalThis.document = doc;
Object.defineProperty(globalThis, 'navigator', { value: { onLine: true }, configurable: true, writable: true });

let hub;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  await hub?.destroy();
});

test('offline: no attempts until `online`, which reconnects at once', async () => {
  const proxy = await Proxy.start(hub.port, 'down');
  // A long backoff, so only `online` can explain a quick reconnect.
  const client = connect(proxy.wsUrl, { token: mintToken(), reconnectBaseMs: 20_000, reconnectMaxMs: 60_000 });
  try {
    client.subscribe('system');
    await waitFor(client, 'reconnecting');
    navigator.onLine = false;
    win.dispatchEvent(new Event('offline'));
    assert.equal(client.state, 'offline');
    assert.equal(client.status.retryAt, null);
    const upgrades = proxy.upgrades;
    proxy.mode = 'pass';
    await sleep(300);
    assert.equal(proxy.upgrades, upgrades, 'no attempt while offline');
    navigator.onLine = true;
    win.dispatchEvent(new Event('online'));
    await waitFor(client, 'connected', 3000);
  } finally {
    navigator.onLine = true;
    await client.close();
    await proxy.close();
  }
});

test('the page becoming visible retries a waiting reconnect at once', async () => {
  const proxy = await Proxy.start(hub.port, 'down');
  const client = connect(proxy.wsUrl, { token: mintToken(), reconnectBaseMs: 20_000, reconnectMaxMs: 60_000 });
  try {
    await waitFor(client, 'reconnecting');
    proxy.mode = 'pass';
    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    await sleep(200);
    assert.equal(client.state, 'reconnecting');
    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    await waitFor(client, 'connected', 3000);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('a link that stops answering is found by the ping and replaced; nothing is lost', async () => {
  const scope = 'deadlink';
  const proxy = await Proxy.start(hub.port);
  const client = connect(proxy.wsUrl, { token: mintToken({ scopes: [scope] }), pingIntervalMs: 200, pongTimeoutMs: 300 });
  try {
    const feed = record(client, `feed:${scope}`);
    await feed.sub.ready;
    await hub.postEvents(range(1, 3).map((n) => checkIn(scope, 'Maria', n)));
    await until(() => feed.frames.length === 3, { what: 'first events' });
    proxy.stalled = true; // the hub no longer hears the client; the socket stays open
    await waitFor(client, 'reconnecting', 3000);
    proxy.stalled = false;
    await hub.postEvents(range(4, 6).map((n) => checkIn(scope, 'Maria', n)));
    await waitFor(client, 'connected', 5000);
    await until(() => feed.frames.length === 6, { what: 'events after the new connection' });
    assert.deepEqual(feed.offsets(), range(1, 6));
    // The pings of the new link measure the round trip again.
    await until(() => typeof client.status.rtt === 'number', { what: 'rtt' });
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('close() removes the listeners it added', async () => {
  const client = connect(hub.wsUrl, { token: mintToken() });
  await waitFor(client, 'connected');
  await client.close();
  // An `online` after close must not reopen anything.
  win.dispatchEvent(new Event('online'));
  doc.dispatchEvent(new Event('visibilitychange'));
  await sleep(100);
  assert.equal(client.state, 'closed');
  assert.equal(client._ws, null);
  assert.equal(client._timers.size, 0);
});
