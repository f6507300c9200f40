// The pure parts, without a hub.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PulseClient, PulseError, backoff, changedPointers, tokenClaims, tokenExpiry } from '../src/pulsehub.js';
import { mintToken } from './lib/hub.mjs';

test('backoff: jittered in [d/2, d], doubling, capped', () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const d = Math.min(30_000, 500 * 2 ** attempt);
    for (let i = 0; i < 50; i++) {
      const ms = backoff(attempt);
      assert.ok(ms >= Math.floor(d / 2) && ms <= d, `attempt ${attempt}: ${ms} not in [${d / 2}, ${d}]`);
    }
  }
  assert.equal(backoff(3, 100, 10_000, () => 1), 800);
  assert.equal(backoff(3, 100, 10_000, () => 0), 400);
  assert.equal(backoff(50, 100, 10_000, () => 1), 10_000);
});

test('tokenClaims and tokenExpiry read a JWT without verifying it', () => {
  const token = mintToken({ sub: 'zoë', name: 'Zoë', scopes: ['*'], exp: 2_000_000_000 });
  assert.deepEqual(tokenClaims(token), { sub: 'zoë', name: 'Zoë', scopes: ['*'], exp: 2_000_000_000 });
  assert.equal(tokenExpiry(token), 2_000_000_000_000);
  assert.equal(tokenClaims('not a token'), null);
  assert.equal(tokenClaims('a.b.c'), null);
  assert.equal(tokenExpiry(undefined), null);
});

test('changedPointers names changed leaves as JSON Pointers', () => {
  const before = { counts: { a: 1, 'x/y': 2 }, states: { task: { open: 1 } }, online_users: 3 };
  const after = { counts: { a: 1, 'x/y': 3, b: 1 }, states: {}, online_users: 3, last_event_at: 't' };
  assert.deepEqual(changedPointers(before, after), ['/counts/b', '/counts/x~1y', '/last_event_at', '/states/task/open']);
  assert.deepEqual(changedPointers(before, structuredClone(before)), []);
});

test('PulseError carries code, ref, channel and status', () => {
  const e = PulseError.fromFrame({ type: 'error', ref: 7, code: 'forbidden', message: 'no' }, 'feed:x');
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'PulseError');
  assert.deepEqual([e.code, e.ref, e.channel, e.message], ['forbidden', 7, 'feed:x', 'no']);
});

test('the constructor checks its arguments', () => {
  assert.throws(() => new PulseClient('ws://x/ws', { token: 't' }), /WebSocket/);
  class Fake {}
  assert.throws(() => new PulseClient('ws://x/ws', { WebSocket: Fake }), /token/);
  assert.throws(() => new PulseClient('ftp://x/ws', { WebSocket: Fake, token: 't' }), /not a WebSocket URL/);
});

test('HTTP endpoints are derived from the WebSocket URL', async () => {
  const opened = [];
  class Fake {
    constructor(url) {
      opened.push(url);
      this.readyState = 3;
    }
    close() {}
  }
  const c = new PulseClient('wss://hub.example.com/base/ws?x=1', { WebSocket: Fake, token: 'a b', fetch: async () => ({}) });
  assert.equal(c._httpBase, 'https://hub.example.com/base');
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(opened, ['wss://hub.example.com/base/ws?x=1&token=a%20b']);
  await c.close();
  assert.equal(c.state, 'closed');
  assert.equal(c._timers.size, 0);
  const d = new PulseClient('http://localhost:8080/ws', { WebSocket: Fake, token: 't', httpUrl: 'http://api.local:9000/' });
  assert.equal(d._wsUrl, 'ws://localhost:8080/ws');
  assert.equal(d._httpBase, 'http://api.local:9000');
  await d.close();
});
