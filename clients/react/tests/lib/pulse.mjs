// Helpers of the hook tests: the real hub of clients/js's tests (started by
// its helper, imported rather than copied), clients that record what they
// send, and what the hub itself says it holds (GET /metrics).
import WebSocket from 'ws';
import { PulseClient } from '@pulsehub/client';

export { Hub, INGEST_KEY, checkIn, mintToken, sleep, until } from '../../../js/tests/lib/hub.mjs';

/**
 * A WebSocket (the `ws` package) that records the frames the client sends
 * and counts the sockets opened.
 */
export function recordingWebSocket() {
  const record = { sent: [], opened: 0 };
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      record.opened += 1;
    }
    send(data, ...rest) {
      record.sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: RecordingWebSocket, record };
}

/** The commands of one type (e.g. "subscribe") the client sent, by channel. */
export function sentChannels(record, type) {
  return record.sent.filter((f) => f.type === type).map((f) => f.channel);
}

/** A client of the hub with test-friendly delays; `record` has what it sent. */
export function connect(hub, options = {}) {
  const { WebSocket: WS, record } = recordingWebSocket();
  const client = new PulseClient(hub.wsUrl, {
    WebSocket: WS,
    reconnectBaseMs: 100,
    reconnectMaxMs: 500,
    commandTimeoutMs: 5000,
    ...options,
  });
  client.record = record;
  return client;
}

/** A gauge of the hub's /metrics: `pulsehub_subscriptions`, `pulsehub_sessions`. */
export async function gauge(hub, name) {
  const res = await fetch(`${hub.url}/metrics`);
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`pulsehub_${name} `));
  if (!line) throw new Error(`no pulsehub_${name} in /metrics:\n${text}`);
  return Number(line.split(' ')[1]);
}

/** A message.sent event of seed 001's shape, as the mapping makes it. */
export function event(scope, kind, n, extra = {}) {
  return { scope, kind, key: `${scope}-${kind}-${n}-${Math.random().toString(36).slice(2)}`, data: { n }, ...extra };
}
