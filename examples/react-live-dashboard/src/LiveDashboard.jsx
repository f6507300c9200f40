// Seed 001's LiveDashboard on @pulsehub/react: the five counters are the
// scope's counts by event kind (stats:{eventId}), the check-in feed is the
// scope's check_in events (feed:{eventId}). The kinds are the ones
// examples/mappings/live-dashboard.toml gives the seed's messages (type
// lower-cased, `_` → `.`, with a few renamed), so the page shows the same
// numbers whether the events come over HTTP or from the bus.
import { useConnectionStatus, useFeed, useStats } from '@pulsehub/react';

const COUNTERS = [
  ['message.sent', 'Total Messages'], // MESSAGE_SENT
  ['poll.vote', 'Poll Votes'], // POLL_VOTE_CAST
  ['question.asked', 'Questions Asked'], // QUESTION_ASKED
  ['question.upvoted', 'Question Upvotes'], // QUESTION_UPVOTED
  ['reaction', 'Emoji Reactions'], // REACTION_SENT
];
const FEED_SIZE = 10;

export function LiveDashboard({ eventId }) {
  const { counts, stats, error } = useStats(eventId);
  // The feed has every kind of the scope: keep enough to find 10 check-ins.
  const { events } = useFeed(eventId, { limit: 200 });
  const checkIns = events.filter((e) => e.kind === 'check_in').slice(0, FEED_SIZE);

  return (
    <div className="dashboard">
      <Connection />
      {error ? (
        <p className="card notice" role="alert">Cannot show event {eventId}: {error.message}</p>
      ) : !stats ? (
        <p className="card notice">Waiting for the first data…</p>
      ) : (
        <>
          <div className="counters">
            {COUNTERS.map(([kind, title]) => (
              <StatCard key={kind} kind={kind} title={title} value={counts[kind] ?? 0} />
            ))}
          </div>
          <section className="card" aria-labelledby="feed-title">
            <h2 id="feed-title">Live Check-in Feed</h2>
            {checkIns.length > 0 ? (
              <ul className="feed" role="log">
                {checkIns.map((e) => (
                  <li key={e.id}>
                    <span aria-hidden="true">✓</span> {e.actor?.name ?? e.actor?.id ?? 'Someone'} has checked in.
                  </li>
                ))}
              </ul>
            ) : (
              <p className="muted">No check-ins yet.</p>
            )}
          </section>
        </>
      )}
    </div>
  );
}

function StatCard({ kind, title, value }) {
  return (
    <section className="card counter">
      <h2>{title}</h2>
      <output data-kind={kind}>{value}</output>
    </section>
  );
}

const LABELS = {
  connecting: 'Connecting to real-time service…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  polling: 'Live (HTTP polling)',
  offline: 'Offline',
  closed: 'Disconnected',
};

function Connection() {
  const { state, error } = useConnectionStatus();
  return (
    <p className={`connection ${state}`} role="status" data-state={state}>
      {LABELS[state]}
      {state === 'closed' && error ? `: ${error.message}` : ''}
    </p>
  );
}
