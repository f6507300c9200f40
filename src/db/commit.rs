//! The group commit: one transaction stores a batch of events and
//! notifications with gapless offsets, claims idempotency keys and updates
//! the per-scope aggregates (counters, subject states, scope summaries).
//!
//! Contract: every row several writers may touch is upserted in sorted key
//! order, so concurrent replicas cannot deadlock; nothing is visible before
//! the commit; offsets are handed out in input order.
//!
//! Cost: whatever the batch, the transaction is at most three statements
//! (claim keys, take offsets, store everything) whose text never changes —
//! rows travel as arrays (`UNNEST`) — so each is parsed and planned once per
//! connection and then costs one round trip: five round trips per commit
//! with BEGIN and COMMIT, four when no event has a key.

use crate::events::{NewEvent, NewNotification};
use crate::protocol::Channel;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Int8, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a group commit stored.
#[derive(Debug, Default)]
pub struct Committed {
    /// Per input event: its feed offset, or `None` when its key was a duplicate.
    pub event_offsets: Vec<Option<i64>>,
    /// Per input notification: its channel offset.
    pub notification_offsets: Vec<i64>,
    /// Time spent in the statements (the rest of the transaction is BEGIN
    /// and COMMIT: the WAL flush).
    pub statements: Duration,
}

/// Stores a batch in one transaction: idempotency keys, offsets (gapless, in
/// input order), events, notifications, counters, subject states and scope
/// summaries. Rows that several writers may touch are upserted in sorted key
/// order so concurrent replicas cannot deadlock.
pub async fn commit_batch(
    conn: &mut AsyncPgConnection,
    new_events: &[NewEvent],
    new_notes: &[NewNotification],
) -> QueryResult<Committed> {
    conn.transaction(async move |conn: &mut AsyncPgConnection| {
        {
            let began = Instant::now();
            let fresh = claim_keys(conn, new_events).await?;

            // Offsets: one upsert per channel returns the new last offset.
            let mut per_channel: BTreeMap<String, i64> = BTreeMap::new();
            for e in new_events.iter().zip(&fresh).filter(|(_, f)| **f) {
                *per_channel
                    .entry(Channel::Feed(e.0.scope.clone()).to_string())
                    .or_default() += 1;
            }
            for n in new_notes {
                *per_channel.entry(n.channel.to_string()).or_default() += 1;
            }
            let lasts: Vec<(String, i64)> = if per_channel.is_empty() {
                Vec::new()
            } else {
                TakeOffsets {
                    channels: per_channel.keys().map(String::as_str).collect(),
                    counts: per_channel.values().copied().collect(),
                }
                .load(conn)
                .await?
            };
            // Next offset to hand out per channel.
            let mut next: HashMap<String, i64> = lasts
                .into_iter()
                .map(|(c, last)| {
                    let n = per_channel.get(&c).copied().unwrap_or(0);
                    (c, last - n + 1)
                })
                .collect();
            let mut take = |channel: String| -> i64 {
                let slot = next.entry(channel).or_insert(1);
                let offset = *slot;
                *slot += 1;
                offset
            };

            let mut out = Committed::default();
            let mut store = Store::default();
            for (e, is_fresh) in new_events.iter().zip(&fresh) {
                if !is_fresh {
                    out.event_offsets.push(None);
                    continue;
                }
                let offset = take(Channel::Feed(e.scope.clone()).to_string());
                out.event_offsets.push(Some(offset));
                store.event(e, offset);
            }
            for n in new_notes {
                let channel = n.channel.to_string();
                let offset = take(channel.clone());
                out.notification_offsets.push(offset);
                store.notification(n, channel, offset);
            }
            let stored: Vec<&NewEvent> = new_events
                .iter()
                .zip(&fresh)
                .filter_map(|(e, f)| f.then_some(e))
                .collect();
            store.aggregates(&stored);
            if !store.is_empty() {
                store.execute(conn).await?;
            }
            out.statements = began.elapsed();
            Ok(out)
        }
    })
    .await
}

/// Claims idempotency keys; returns, per event, whether it is new. A key seen
/// earlier in the same batch, or committed before, marks a duplicate.
async fn claim_keys(
    conn: &mut AsyncPgConnection,
    new_events: &[NewEvent],
) -> QueryResult<Vec<bool>> {
    let mut fresh = vec![true; new_events.len()];
    let mut first: BTreeMap<(&str, &str), (usize, Uuid)> = BTreeMap::new();
    for (i, e) in new_events.iter().enumerate() {
        if let Some(key) = &e.key {
            if first.contains_key(&(e.scope.as_str(), key.as_str())) {
                fresh[i] = false;
            } else {
                first.insert((&e.scope, key), (i, e.event_id));
            }
        }
    }
    if first.is_empty() {
        return Ok(fresh);
    }
    let claim = ClaimKeys {
        scopes: first.keys().map(|k| k.0).collect(),
        keys: first.keys().map(|k| k.1).collect(),
        ids: first.values().map(|v| v.1).collect(),
    };
    let claimed: HashSet<Uuid> = claim.load::<Uuid>(conn).await?.into_iter().collect();
    for (i, id) in first.values() {
        if !claimed.contains(id) {
            fresh[*i] = false;
        }
    }
    Ok(fresh)
}

/// A statement with one text for every batch: its rows are arrays.
macro_rules! fixed_statement {
    ($name:ident<$lt:lifetime>, $sql:expr, [$($field:ident: $st:ty),* $(,)?]) => {
        impl<$lt> QueryId for $name<$lt> {
            // Cached by its text (which never changes), not by a type id.
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }
        impl<$lt> QueryFragment<Pg> for $name<$lt> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                let mut parts = $sql.split("$?");
                out.push_sql(parts.next().unwrap_or_default());
                $(
                    out.push_bind_param::<Array<$st>, _>(&self.$field)?;
                    out.push_sql(parts.next().unwrap_or_default());
                )*
                Ok(())
            }
        }
    };
}

/// New keys; returns the event ids whose key was not taken before.
///
/// Keys are partitioned by week and unique per (scope, key, week): this
/// week's concurrent claims meet on that constraint (the second waits for
/// the first, then does nothing), earlier weeks' claims are found by the
/// `NOT EXISTS` (one index probe per earlier retained week: one or two at
/// the default retention). Two claims of one key in flight at the same
/// instant on either side of a week's start (Monday 00:00 UTC) could both
/// win; that is the price of dropping keys by partition.
struct ClaimKeys<'a> {
    scopes: Vec<&'a str>,
    keys: Vec<&'a str>,
    ids: Vec<Uuid>,
}
fixed_statement!(ClaimKeys<'a>,
    "INSERT INTO idempotency_keys (scope, key, event_id) \
     SELECT u.scope, u.key, u.id FROM UNNEST($?::text[], $?::text[], $?::uuid[]) AS u(scope, key, id) \
     WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys k \
                       WHERE k.scope = u.scope AND k.key = u.key \
                         AND k.week < date_trunc('week', now() AT TIME ZONE 'UTC')::date) \
     ON CONFLICT DO NOTHING RETURNING event_id",
    [scopes: Text, keys: Text, ids: diesel::sql_types::Uuid]);
impl Query for ClaimKeys<'_> {
    type SqlType = diesel::sql_types::Uuid;
}

/// Adds each channel's count to its last offset; returns the new lasts.
struct TakeOffsets<'a> {
    channels: Vec<&'a str>,
    counts: Vec<i64>,
}
fixed_statement!(TakeOffsets<'a>,
    "INSERT INTO channel_offsets (channel, last_offset) \
     SELECT * FROM UNNEST($?::text[], $?::int8[]) \
     ON CONFLICT (channel) DO UPDATE \
     SET last_offset = channel_offsets.last_offset + excluded.last_offset \
     RETURNING channel, last_offset",
    [channels: Text, counts: Int8]);
impl Query for TakeOffsets<'_> {
    type SqlType = (Text, Int8);
}

/// Everything else of a commit in one statement: events, notifications,
/// counters, subject states and scope summaries (one CTE each; aggregates
/// have one row per key, sorted: a statement may not touch a row twice).
#[derive(Default)]
struct Store<'a> {
    ev_ids: Vec<Uuid>,
    ev_scopes: Vec<&'a str>,
    ev_offsets: Vec<i64>,
    ev_kinds: Vec<&'a str>,
    ev_actors: Vec<Option<&'a Value>>,
    ev_subjects: Vec<Option<Value>>,
    ev_data: Vec<&'a Value>,
    ev_at: Vec<DateTime<Utc>>,
    nt_ids: Vec<Uuid>,
    nt_channels: Vec<String>,
    nt_offsets: Vec<i64>,
    nt_levels: Vec<&'a str>,
    nt_titles: Vec<&'a str>,
    nt_bodies: Vec<&'a str>,
    nt_at: Vec<DateTime<Utc>>,
    ct_scopes: Vec<&'a str>,
    ct_kinds: Vec<&'a str>,
    ct_counts: Vec<i64>,
    ss_scopes: Vec<&'a str>,
    ss_types: Vec<&'a str>,
    ss_ids: Vec<&'a str>,
    ss_states: Vec<Option<&'a str>>,
    ss_at: Vec<DateTime<Utc>>,
    sc_scopes: Vec<&'a str>,
    sc_at: Vec<DateTime<Utc>>,
}
fixed_statement!(Store<'a>,
"WITH ev AS (\
   INSERT INTO events (event_id, scope, feed_offset, kind, actor, subject, data, at) \
   SELECT * FROM UNNEST($?::uuid[], $?::text[], $?::int8[], $?::text[], \
                        $?::jsonb[], $?::jsonb[], $?::jsonb[], $?::timestamptz[])\
 ), nt AS (\
   INSERT INTO notifications (id, channel, channel_offset, level, title, body, at) \
   SELECT * FROM UNNEST($?::uuid[], $?::text[], $?::int8[], $?::text[], \
                        $?::text[], $?::text[], $?::timestamptz[])\
 ), ct AS (\
   INSERT INTO counters (scope, kind, count) \
   SELECT * FROM UNNEST($?::text[], $?::text[], $?::int8[]) \
   ON CONFLICT (scope, kind) DO UPDATE SET count = counters.count + excluded.count\
 ), ss AS (\
   INSERT INTO subject_states (scope, subject_type, subject_id, state, last_event_at) \
   SELECT * FROM UNNEST($?::text[], $?::text[], $?::text[], $?::text[], $?::timestamptz[]) \
   ON CONFLICT (scope, subject_type, subject_id) DO UPDATE \
   SET state = COALESCE(excluded.state, subject_states.state), \
       last_event_at = GREATEST(subject_states.last_event_at, excluded.last_event_at)\
 ) \
 INSERT INTO scopes (scope, last_event_at) \
 SELECT * FROM UNNEST($?::text[], $?::timestamptz[]) \
 ON CONFLICT (scope) DO UPDATE \
 SET last_event_at = GREATEST(scopes.last_event_at, excluded.last_event_at)",
[
    ev_ids: diesel::sql_types::Uuid, ev_scopes: Text, ev_offsets: Int8, ev_kinds: Text,
    ev_actors: Nullable<Jsonb>, ev_subjects: Nullable<Jsonb>, ev_data: Jsonb, ev_at: Timestamptz,
    nt_ids: diesel::sql_types::Uuid, nt_channels: Text, nt_offsets: Int8, nt_levels: Text,
    nt_titles: Text, nt_bodies: Text, nt_at: Timestamptz,
    ct_scopes: Text, ct_kinds: Text, ct_counts: Int8,
    ss_scopes: Text, ss_types: Text, ss_ids: Text, ss_states: Nullable<Text>, ss_at: Timestamptz,
    sc_scopes: Text, sc_at: Timestamptz,
]);

type SubjectKey<'a> = (&'a str, &'a str, &'a str);
type SubjectLatest<'a> = (Option<&'a str>, DateTime<Utc>);

impl<'a> Store<'a> {
    fn is_empty(&self) -> bool {
        self.ev_ids.is_empty() && self.nt_ids.is_empty()
    }

    fn event(&mut self, e: &'a NewEvent, offset: i64) {
        self.ev_ids.push(e.event_id);
        self.ev_scopes.push(&e.scope);
        self.ev_offsets.push(offset);
        self.ev_kinds.push(&e.kind);
        self.ev_actors.push(e.actor.as_ref());
        self.ev_subjects.push(e.subject_json());
        self.ev_data.push(&e.data);
        self.ev_at.push(e.at);
    }

    fn notification(&mut self, n: &'a NewNotification, channel: String, offset: i64) {
        self.nt_ids.push(n.id);
        self.nt_channels.push(channel);
        self.nt_offsets.push(offset);
        self.nt_levels.push(&n.level);
        self.nt_titles.push(&n.title);
        self.nt_bodies.push(&n.body);
        self.nt_at.push(n.at);
    }

    /// Counters, subject states and scope summaries of the stored events,
    /// aggregated in memory first (one row per key, in key order).
    fn aggregates(&mut self, stored: &[&'a NewEvent]) {
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        // (scope, type, id) → (latest state carried, latest event time)
        let mut subjects: BTreeMap<SubjectKey, SubjectLatest> = BTreeMap::new();
        let mut latest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for e in stored {
            *counts.entry((&e.scope, &e.kind)).or_default() += 1;
            let at = latest.entry(&e.scope).or_insert(e.at);
            *at = (*at).max(e.at);
            if let Some(s) = &e.subject {
                let entry = subjects
                    .entry((&e.scope, &s.kind, &s.id))
                    .or_insert((None, e.at));
                // The latest event (in ingest order) that carries a state decides.
                if let Some(state) = &s.state {
                    entry.0 = Some(state);
                }
                entry.1 = entry.1.max(e.at);
            }
        }
        for ((scope, kind), n) in counts {
            self.ct_scopes.push(scope);
            self.ct_kinds.push(kind);
            self.ct_counts.push(n);
        }
        for ((scope, kind, id), (state, at)) in subjects {
            self.ss_scopes.push(scope);
            self.ss_types.push(kind);
            self.ss_ids.push(id);
            self.ss_states.push(state);
            self.ss_at.push(at);
        }
        for (scope, at) in latest {
            self.sc_scopes.push(scope);
            self.sc_at.push(at);
        }
    }
}
