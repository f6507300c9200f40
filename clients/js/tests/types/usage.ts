// Type-level checks of the public surface as an application uses it, with
// the `ws` package as the WebSocket (`npm run check:usage`; nothing runs).
import WebSocket from 'ws';
import { PulseClient, PulseError } from '@pulsehub/client';
import type { ConnectionState, ConnectionStatus, FeedEntry, ResetInfo, SubscribedInfo } from '@pulsehub/client';

const client = new PulseClient('ws://host:8080/ws', {
  token: 'jwt',
  getToken: async ({ reason }) => `new token (${reason})`,
  WebSocket,
});
client.on('state', (state: ConnectionState, status: ConnectionStatus) => {
  const retryAt: number | null = status.retryAt;
  const waiting: 'initial' | 'refused' | 'expired' | null = status.awaitingToken;
  void retryAt, waiting;
  void state;
});
// @ts-expect-error: not a state
client.on('state', (state) => state === 'live');
client.on('error', (e: PulseError) => console.log(e.code, e.ref, e.message));

// Frames are typed by channel family.
const feed = client.subscribe('feed:demo', {
  onMessage: (frame) => {
    const offset: number = frame.offset;
    const kind: string = frame.event.kind;
    void offset, kind;
  },
  onSubscribed: (info: SubscribedInfo) => void info.recovered,
  onReset: (info: ResetInfo) => void info.missed?.from,
});
client.subscribe('stats:demo', {
  onMessage: (frame) => {
    const online: number = frame.stats.online_users;
    const changed: string[] = frame.changed;
    void online, changed;
  },
});
client.subscribe('presence:demo', {
  onMessage: (frame) => {
    if (frame.op === 'sync') frame.users.map((u) => u.status);
    else if (frame.op === 'leave') void frame.user.id;
    else void frame.user.sessions;
  },
});
client.subscribe('system', { onMessage: (frame) => void frame.notification.title });
client.subscribe('user:alice', { onMessage: (frame) => void frame.notification.level });
// @ts-expect-error: a feed frame has no stats
client.subscribe('feed:demo', { onMessage: (frame) => frame.stats });

const stats = client.stats('demo', { onChange: (s, changed) => void [s.counts, changed] });
const presence = client.presence('demo');
const events: FeedEntry[] = client.feed('demo', { limit: 50 }).events;
const notes = client.notifications({
  user: true,
  onSubscribed: (info: SubscribedInfo) => void info.offset,
  onReset: (info: ResetInfo) => void info.reason,
});

async function main(): Promise<void> {
  const info = await feed.ready;
  void info.offset;
  const rtt: number = await client.ping();
  await client.activity('viewing', 'dashboard');
  void rtt, stats.stats?.online_users, presence.members.length, events, notes.unread;
  feed.unsubscribe();
  await client.close();
}
void main;
