// Token refresh before expiry through getToken, and the terminal state when
// there is no token to be had.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PulseError } from '../src/pulsehub.js';
import { connect, record, spyingWebSocket, waitFor } from './lib/client.mjs';
import { Hub, checkIn, mintToken, sleep, until } from './lib/hub.mjs';

let hub;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  await hub?.destroy();
});

test('getToken is asked before `exp`, the new token is sent as `refresh`, the connection stays', async () => {
  const scope = 'refresh';
  const sent = [];
  const asked = [];
  const first = mintToken({ sub: 'alice', scopes: [scope], ttlS: 3 });
  const expiresAt = Date.now() + 3000;
  const client = connect(hub.wsUrl, {
    token: first,
    WebSocket: spyingWebSocket(sent),
    getToken: async ({ reason }) => {
      asked.push({ reason, at: Date.now() });
      return mintToken({ sub: 'alice', scopes: [scope], ttlS: 60 });
    },
  });
  try {
    const feed = record(client, `feed:${scope}`);
    await feed.sub.ready;
    await until(() => sent.some((f) => f.type === 'refresh'), { what: 'a refresh frame', timeoutMs: 5000 });
    assert.equal(asked[0].reason, 'expiring');
    assert.ok(asked[0].at < expiresAt - 300, `asked ${expiresAt - asked[0].at} ms before expiry`);
    const refresh = sent.find((f) => f.type === 'refresh');
    assert.notEqual(refresh.token, first);
    assert.equal(client.token, refresh.token);
    // Past the first token's expiry the session is still the same one.
    await sleep(Math.max(0, expiresAt - Date.now()) + 1500);
    assert.equal(client.state, 'connected');
    assert.deepEqual(client.states, ['connecting', 'connected']);
    await hub.postEvents([checkIn(scope)]);
    await until(() => feed.frames.length === 1, { what: 'an event after the first token expired' });
    assert.equal(asked.length, 1);
  } finally {
    await client.close();
  }
});

test('a token that expires while getToken is still asking: reconnecting, awaitingToken "expired", then live again with nothing missed', async () => {
  // As when getToken asks the person for a token and they answer late.
  const scope = 'late-answer';
  const asked = [];
  /** @type {(token: string) => void} */
  let answer = () => {};
  const client = connect(hub.wsUrl, {
    token: mintToken({ sub: 'dora', scopes: [scope], ttlS: 2 }),
    getToken: ({ reason }) => {
      asked.push(reason);
      return new Promise((resolve) => (answer = resolve));
    },
  });
  try {
    const feed = record(client, `feed:${scope}`);
    await feed.sub.ready;
    assert.equal(client.status.awaitingToken, null);
    await until(() => client.status.awaitingToken === 'expired', { what: 'awaitingToken "expired"', timeoutMs: 6000 });
    // The hub closed the connection (1008): not `connected` any more.
    assert.equal(client.state, 'reconnecting');
    assert.equal(client.status.retryAt, null);
    assert.deepEqual(asked, ['expiring'], 'the one question still open, not a second one');
    await hub.postEvents([checkIn(scope)]);
    answer(mintToken({ sub: 'dora', scopes: [scope], ttlS: 60 }));
    await waitFor(client, 'connected');
    assert.equal(client.status.awaitingToken, null);
    await until(() => feed.frames.length === 1, { what: 'the event posted while the client waited' });
    assert.deepEqual(client.states, ['connecting', 'connected', 'reconnecting', 'connected']);
    assert.deepEqual(feed.resets, []);
  } finally {
    await client.close();
  }
});

test('a token that expires with no getToken: closed, reason "unauthorized", an error event', async () => {
  const client = connect(hub.wsUrl, { token: mintToken({ ttlS: 2 }) });
  try {
    const sub = client.subscribe('system');
    await sub.ready;
    await waitFor(client, 'closed', 6000);
    assert.equal(client.status.reason, 'unauthorized');
    assert.ok(client.status.error instanceof PulseError);
    assert.equal(client.status.error.code, 'unauthorized');
    assert.match(client.status.error.message, /expired/);
    assert.deepEqual(client.errors.map((e) => e.code), ['unauthorized']);
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(client._timers.size, 0);
    // Commands after that fail at once.
    await assert.rejects(client.ping(), (e) => e.code === 'closed');
  } finally {
    await client.close();
  }
});

test('getToken failing until the token expires: closed, reason "unauthorized"', async () => {
  let calls = 0;
  const client = connect(hub.wsUrl, {
    token: mintToken({ ttlS: 4 }),
    getToken: async () => {
      calls += 1;
      throw new Error('the identity provider is down');
    },
  });
  try {
    await waitFor(client, 'connected');
    await waitFor(client, 'closed', 8000);
    assert.ok(calls >= 2, `getToken called ${calls} times`);
    assert.equal(client.status.reason, 'unauthorized');
    assert.match(client.status.error.message, /identity provider is down/);
    assert.ok(client.errors.some((e) => e.code === 'unauthorized'));
  } finally {
    await client.close();
  }
});

test('a refused token goes to getToken, and its token connects', async () => {
  const asked = [];
  const client = connect(hub.wsUrl, {
    token: mintToken({ secret: 'not-the-hub-secret' }),
    getToken: ({ reason }) => {
      asked.push([reason, client.state, client.status.awaitingToken]);
      return mintToken();
    },
  });
  try {
    await waitFor(client, 'connected');
    assert.deepEqual(asked, [['refused', 'connecting', 'refused']]);
    assert.equal(client.status.awaitingToken, null);
  } finally {
    await client.close();
  }
});

test('getToken alone gives the first token', async () => {
  const asked = [];
  const client = connect(hub.wsUrl, {
    getToken: async ({ reason }) => {
      asked.push([reason, client.status.awaitingToken]);
      return mintToken({ sub: 'carol' });
    },
  });
  try {
    const notes = client.notifications();
    await waitFor(client, 'connected');
    await notes.ready;
    assert.deepEqual(asked, [['initial', 'initial']]);
    assert.equal(client.status.awaitingToken, null);
    assert.deepEqual(notes.subscriptions.map((s) => s.channel).sort(), ['system', 'user:carol']);
  } finally {
    await client.close();
  }
});

test('a refused token without getToken: closed at once', async () => {
  const client = connect(hub.wsUrl, { token: mintToken({ secret: 'not-the-hub-secret' }) });
  try {
    const sub = client.subscribe('system');
    await waitFor(client, 'closed');
    assert.equal(client.status.reason, 'unauthorized');
    assert.match(client.status.error.message, /refused/);
    await assert.rejects(sub.ready, (e) => e.code === 'closed');
  } finally {
    await client.close();
  }
});

test('setToken on a live connection sends `refresh`; a token for another user is refused', async () => {
  const client = connect(hub.wsUrl, { token: mintToken({ sub: 'alice' }) });
  try {
    await waitFor(client, 'connected');
    await client.setToken(mintToken({ sub: 'alice', ttlS: 120 }));
    const error = await client.setToken(mintToken({ sub: 'mallory' })).catch((e) => e);
    assert.ok(error instanceof PulseError);
    assert.equal(error.code, 'forbidden');
    assert.equal(typeof error.ref, 'number');
  } finally {
    await client.close();
  }
});
