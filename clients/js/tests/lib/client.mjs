// Helpers for tests that drive a PulseClient in Node (the `ws` package as its
// WebSocket, short delays so the tests run in seconds).

import WebSocket from 'ws';
import { PulseClient } from '../../src/pulsehub.js';
import { until } from './hub.mjs';

/** The WebSocket of the tests, recording what the client sends. */
export function spyingWebSocket(sent = []) {
  return class SpyWebSocket extends WebSocket {
    send(data, ...rest) {
      sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  };
}

/** A client with test-friendly delays; records its states and errors. */
export function connect(url, options = {}) {
  const client = new PulseClient(url, {
    WebSocket,
    reconnectBaseMs: 100,
    reconnectMaxMs: 1000,
    commandTimeoutMs: 5000,
    ...options,
  });
  client.states = [client.state];
  client.errors = [];
  client.on('state', (state) => client.states.push(state));
  client.on('error', (e) => client.errors.push(e));
  return client;
}

export function waitFor(client, state, timeoutMs = 10_000) {
  return until(() => client.state === state, { timeoutMs, what: `state ${state} (now ${client.state}; seen ${client.states.join(' → ')})` });
}

/** Subscribes and records every frame, subscribed info and reset. */
export function record(client, channel, options = {}) {
  const rec = { frames: [], subscribed: [], resets: [], errors: [] };
  rec.sub = client.subscribe(channel, {
    ...options,
    onMessage: (f) => rec.frames.push(f),
    onSubscribed: (i) => rec.subscribed.push(i),
    onReset: (i) => rec.resets.push(i),
    onError: (e) => rec.errors.push(e),
  });
  rec.offsets = () => rec.frames.map((f) => f.offset);
  return rec;
}

/** 1..n (or from..to). */
export function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
