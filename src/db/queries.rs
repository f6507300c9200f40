//! Every SQL statement the hub runs. Writes happen in [`commit_batch`], one
//! transaction per group commit; reads are bounded by indexes (see the
//! migration) and never scan the whole event table.

use super::schema::{
    channel_offsets, counters, events, idempotency_keys, notifications, scopes, subject_states,
};
use crate::events::{event_frame, notification_frame, EventView, NewEvent, NewNotification};
use crate::protocol::Channel;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use diesel::dsl::{count_star, sql};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Timestamptz};
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Rows per multi-row INSERT, well under PostgreSQL's 65,535 parameters.
const CHUNK: usize = 2000;

/// What a group commit stored.
#[derive(Debug, Default)]
pub struct Committed {
    /// Per input event: its feed offset, or `None` when its key was a duplicate.
    pub event_offsets: Vec<Option<i64>>,
    /// Per input notification: its channel offset.
    pub notification_offsets: Vec<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = events)]
struct EventRow<'a> {
    event_id: Uuid,
    scope: &'a str,
    feed_offset: i64,
    kind: &'a str,
    actor: Option<&'a Value>,
    subject: Option<Value>,
    data: &'a Value,
    at: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = notifications)]
struct NotificationRow<'a> {
    id: Uuid,
    channel: String,
    channel_offset: i64,
    level: &'a str,
    title: &'a str,
    body: &'a str,
    at: DateTime<Utc>,
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
            let fresh = claim_keys(conn, new_events).await?;

            // Offsets: one upsert per channel returns the new last offset.
            let mut per_channel: BTreeMap<String, i64> = BTreeMap::new();
            for e in new_events.iter().zip(&fresh).filter(|(_, f)| **f) {
                *per_channel
                    .entry(format!("feed:{}", e.0.scope))
                    .or_default() += 1;
            }
            for n in new_notes {
                *per_channel.entry(n.channel.to_string()).or_default() += 1;
            }
            let rows: Vec<_> = per_channel
                .iter()
                .map(|(c, n)| {
                    (
                        channel_offsets::channel.eq(c.as_str()),
                        channel_offsets::last_offset.eq(*n),
                    )
                })
                .collect();
            let lasts: Vec<(String, i64)> = if rows.is_empty() {
                Vec::new()
            } else {
                diesel::insert_into(channel_offsets::table)
                    .values(&rows)
                    .on_conflict(channel_offsets::channel)
                    .do_update()
                    .set(
                        channel_offsets::last_offset
                            .eq(channel_offsets::last_offset
                                + excluded(channel_offsets::last_offset)),
                    )
                    .returning((channel_offsets::channel, channel_offsets::last_offset))
                    .get_results(conn)
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
            let mut rows = Vec::new();
            for (e, is_fresh) in new_events.iter().zip(&fresh) {
                if !is_fresh {
                    out.event_offsets.push(None);
                    continue;
                }
                let offset = take(format!("feed:{}", e.scope));
                out.event_offsets.push(Some(offset));
                rows.push(EventRow {
                    event_id: e.event_id,
                    scope: &e.scope,
                    feed_offset: offset,
                    kind: &e.kind,
                    actor: e.actor.as_ref(),
                    subject: e.subject_json(),
                    data: &e.data,
                    at: e.at,
                });
            }
            for chunk in rows.chunks(CHUNK) {
                diesel::insert_into(events::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }

            let mut note_rows = Vec::new();
            for n in new_notes {
                let channel = n.channel.to_string();
                let offset = take(channel.clone());
                out.notification_offsets.push(offset);
                note_rows.push(NotificationRow {
                    id: n.id,
                    channel,
                    channel_offset: offset,
                    level: &n.level,
                    title: &n.title,
                    body: &n.body,
                    at: n.at,
                });
            }
            for chunk in note_rows.chunks(CHUNK) {
                diesel::insert_into(notifications::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }

            let stored: Vec<&NewEvent> = new_events
                .iter()
                .zip(&fresh)
                .filter_map(|(e, f)| f.then_some(e))
                .collect();
            update_aggregates(conn, &stored).await?;
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
    let rows: Vec<_> = first
        .iter()
        .map(|((scope, key), (_, id))| {
            (
                idempotency_keys::scope.eq(*scope),
                idempotency_keys::key.eq(*key),
                idempotency_keys::event_id.eq(id),
            )
        })
        .collect();
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    for chunk in rows.chunks(CHUNK) {
        let got: Vec<(String, String)> = diesel::insert_into(idempotency_keys::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .returning((idempotency_keys::scope, idempotency_keys::key))
            .get_results(conn)
            .await?;
        claimed.extend(got);
    }
    for ((scope, key), (i, _)) in &first {
        if !claimed.contains(&(scope.to_string(), key.to_string())) {
            fresh[*i] = false;
        }
    }
    Ok(fresh)
}

type SubjectKey<'a> = (&'a str, &'a str, &'a str);
type SubjectLatest<'a> = (Option<&'a str>, DateTime<Utc>);

/// Counters, subject states and scope summaries, aggregated in memory first
/// (one row per key: a multi-row upsert may not touch a row twice).
async fn update_aggregates(conn: &mut AsyncPgConnection, stored: &[&NewEvent]) -> QueryResult<()> {
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
    let rows: Vec<_> = counts
        .iter()
        .map(|((scope, kind), n)| {
            (
                counters::scope.eq(*scope),
                counters::kind.eq(*kind),
                counters::count.eq(*n),
            )
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        diesel::insert_into(counters::table)
            .values(chunk)
            .on_conflict((counters::scope, counters::kind))
            .do_update()
            .set(counters::count.eq(counters::count + excluded(counters::count)))
            .execute(conn)
            .await?;
    }
    let rows: Vec<_> = subjects
        .iter()
        .map(|((scope, kind, id), (state, at))| {
            (
                subject_states::scope.eq(*scope),
                subject_states::subject_type.eq(*kind),
                subject_states::subject_id.eq(*id),
                subject_states::state.eq(*state),
                subject_states::last_event_at.eq(*at),
            )
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        diesel::insert_into(subject_states::table)
            .values(chunk)
            .on_conflict((
                subject_states::scope,
                subject_states::subject_type,
                subject_states::subject_id,
            ))
            .do_update()
            .set((
                subject_states::state.eq(sql::<Nullable<diesel::sql_types::Text>>(
                    "COALESCE(excluded.state, subject_states.state)",
                )),
                subject_states::last_event_at.eq(sql::<Timestamptz>(
                    "GREATEST(subject_states.last_event_at, excluded.last_event_at)",
                )),
            ))
            .execute(conn)
            .await?;
    }
    let rows: Vec<_> = latest
        .iter()
        .map(|(scope, at)| {
            (
                scopes::scope.eq(*scope),
                scopes::last_event_at.eq(Some(*at)),
            )
        })
        .collect();
    if !rows.is_empty() {
        diesel::insert_into(scopes::table)
            .values(&rows)
            .on_conflict(scopes::scope)
            .do_update()
            .set(scopes::last_event_at.eq(sql::<Nullable<Timestamptz>>(
                "GREATEST(scopes.last_event_at, excluded.last_event_at)",
            )))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The stats body of a scope (PROTOCOL.md), without `online_users`, which
/// the caller adds from presence.
pub async fn scope_stats(
    conn: &mut AsyncPgConnection,
    scope: &str,
    active_window: chrono::Duration,
) -> QueryResult<Value> {
    let now = Utc::now();
    let counts: Vec<(String, i64)> = counters::table
        .filter(counters::scope.eq(scope))
        .select((counters::kind, counters::count))
        .load(conn)
        .await?;
    let states: Vec<(String, Option<String>, i64)> = subject_states::table
        .filter(subject_states::scope.eq(scope))
        .filter(subject_states::state.is_not_null())
        .group_by((subject_states::subject_type, subject_states::state))
        .select((
            subject_states::subject_type,
            subject_states::state,
            count_star(),
        ))
        .load(conn)
        .await?;
    let active: Vec<(String, i64)> = subject_states::table
        .filter(subject_states::scope.eq(scope))
        .filter(subject_states::last_event_at.gt(now - active_window))
        .group_by(subject_states::subject_type)
        .select((subject_states::subject_type, count_star()))
        .load(conn)
        .await?;
    let last_minute: i64 = events::table
        .filter(events::scope.eq(scope))
        .filter(events::at.gt(now - chrono::Duration::minutes(1)))
        .filter(events::at.le(now))
        .select(count_star())
        .get_result(conn)
        .await?;
    let last_event_at: Option<DateTime<Utc>> = scopes::table
        .filter(scopes::scope.eq(scope))
        .select(scopes::last_event_at)
        .first(conn)
        .await
        .optional()?
        .flatten();

    let mut state_map: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (kind, state, n) in states {
        if let Some(state) = state {
            state_map.entry(kind).or_default().insert(state, n.into());
        }
    }
    Ok(json!({
        "scope": scope,
        "counts": counts.into_iter().collect::<BTreeMap<_, _>>(),
        "states": state_map,
        "active_subjects": active.into_iter().collect::<BTreeMap<_, _>>(),
        "online_users": 0,
        "events_last_minute": last_minute,
        "last_event_at": last_event_at.map(|t| crate::events::timestamp(&t)),
    }))
}

/// Bumps and returns a scope's stats version (shared by all replicas).
pub async fn next_stats_version(conn: &mut AsyncPgConnection, scope: &str) -> QueryResult<i64> {
    diesel::insert_into(scopes::table)
        .values((scopes::scope.eq(scope), scopes::stats_version.eq(1)))
        .on_conflict(scopes::scope)
        .do_update()
        .set(scopes::stats_version.eq(scopes::stats_version + 1))
        .returning(scopes::stats_version)
        .get_result(conn)
        .await
}

/// A recoverable channel's latest offset (0 when it has none).
pub async fn latest_offset(conn: &mut AsyncPgConnection, channel: &Channel) -> QueryResult<i64> {
    Ok(channel_offsets::table
        .find(channel.to_string())
        .select(channel_offsets::last_offset)
        .first(conn)
        .await
        .optional()?
        .unwrap_or(0))
}

/// A recoverable channel's latest offset (0 when it has none) and the oldest
/// offset still retained (`None` when nothing is).
pub async fn channel_bounds(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
) -> QueryResult<(i64, Option<i64>)> {
    let latest = latest_offset(conn, channel).await?;
    let first: Option<i64> = match channel {
        Channel::Feed(scope) => {
            events::table
                .filter(events::scope.eq(scope))
                .select(diesel::dsl::min(events::feed_offset))
                .get_result(conn)
                .await?
        }
        _ => {
            notifications::table
                .filter(notifications::channel.eq(channel.to_string()))
                .select(diesel::dsl::min(notifications::channel_offset))
                .get_result(conn)
                .await?
        }
    };
    Ok((latest, first))
}

/// Which items of a recoverable channel to send for a given `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Everything after this offset, and the history reaches back to it.
    After(i64),
    /// The last items only: no `since`, or history does not reach back.
    Recent,
}

/// Decides how to answer `since` given a channel's bounds. Returns the plan
/// and whether it is a recovery (`recovered` in PROTOCOL.md).
pub fn plan_replay(since: Option<i64>, latest: i64, first: Option<i64>) -> (Replay, bool) {
    match since {
        None => (Replay::Recent, false),
        Some(s) if s > latest => (Replay::Recent, false),
        Some(s) if s == latest => (Replay::After(s), true),
        Some(s) => match first {
            Some(f) if s + 1 >= f => (Replay::After(s), true),
            _ => (Replay::Recent, false),
        },
    }
}

/// Up to `limit` frames of a recoverable channel with offset > `after`, in
/// order, as (offset, frame).
pub async fn history_after(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    after: i64,
    limit: i64,
) -> QueryResult<Vec<(i64, ByteString)>> {
    history(conn, channel, Some(after), limit).await
}

/// The last `limit` frames of a recoverable channel, oldest first.
pub async fn history_recent(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    limit: i64,
) -> QueryResult<Vec<(i64, ByteString)>> {
    let mut items = history(conn, channel, None, limit).await?;
    items.reverse();
    Ok(items)
}

type EventTuple = (
    i64,
    Uuid,
    String,
    Option<Value>,
    Option<Value>,
    Value,
    DateTime<Utc>,
);
type NoteTuple = (i64, Uuid, String, String, String, DateTime<Utc>);

/// `after: Some(n)` pages forward from n; `None` reads newest first.
async fn history(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<(i64, ByteString)>> {
    let name = channel.to_string();
    if let Channel::Feed(scope) = channel {
        let mut q = events::table
            .filter(events::scope.eq(scope))
            .select((
                events::feed_offset,
                events::event_id,
                events::kind,
                events::actor,
                events::subject,
                events::data,
                events::at,
            ))
            .limit(limit)
            .into_boxed();
        q = match after {
            Some(a) => q
                .filter(events::feed_offset.gt(a))
                .order(events::feed_offset.asc()),
            None => q.order(events::feed_offset.desc()),
        };
        let rows: Vec<EventTuple> = q.load(conn).await?;
        return Ok(rows
            .into_iter()
            .map(|(offset, id, kind, actor, subject, data, at)| {
                let frame = event_frame(
                    scope,
                    offset,
                    &EventView {
                        id: &id,
                        kind: &kind,
                        actor: actor.as_ref(),
                        subject: subject.as_ref(),
                        data: &data,
                        at: &at,
                    },
                );
                (offset, frame)
            })
            .collect());
    }
    let mut q = notifications::table
        .filter(notifications::channel.eq(&name))
        .select((
            notifications::channel_offset,
            notifications::id,
            notifications::level,
            notifications::title,
            notifications::body,
            notifications::at,
        ))
        .limit(limit)
        .into_boxed();
    q = match after {
        Some(a) => q
            .filter(notifications::channel_offset.gt(a))
            .order(notifications::channel_offset.asc()),
        None => q.order(notifications::channel_offset.desc()),
    };
    let rows: Vec<NoteTuple> = q.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(offset, id, level, title, body, at)| {
            (
                offset,
                notification_frame(&name, offset, &id, &level, &title, &body, &at),
            )
        })
        .collect())
}

/// Deletes history and idempotency keys older than `cutoff`; returns rows deleted.
pub async fn prune(conn: &mut AsyncPgConnection, cutoff: DateTime<Utc>) -> QueryResult<usize> {
    let e = diesel::delete(events::table.filter(events::received_at.lt(cutoff)))
        .execute(conn)
        .await?;
    let n = diesel::delete(notifications::table.filter(notifications::at.lt(cutoff)))
        .execute(conn)
        .await?;
    let k = diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(cutoff)))
        .execute(conn)
        .await?;
    Ok(e + n + k)
}

/// Cheap liveness query for `/ready`.
pub async fn ping(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_plans() {
        // No since: recent items.
        assert_eq!(plan_replay(None, 10, Some(1)), (Replay::Recent, false));
        // Up to date.
        assert_eq!(
            plan_replay(Some(10), 10, Some(1)),
            (Replay::After(10), true)
        );
        // Missed a few, all retained.
        assert_eq!(plan_replay(Some(4), 10, Some(1)), (Replay::After(4), true));
        assert_eq!(plan_replay(Some(0), 10, Some(1)), (Replay::After(0), true));
        // History pruned below since + 1.
        assert_eq!(plan_replay(Some(4), 10, Some(6)), (Replay::Recent, false));
        assert_eq!(plan_replay(Some(5), 10, Some(6)), (Replay::After(5), true));
        // since from the future (e.g. another database).
        assert_eq!(plan_replay(Some(11), 10, Some(1)), (Replay::Recent, false));
        // Empty channel.
        assert_eq!(plan_replay(Some(0), 0, None), (Replay::After(0), true));
        // Everything pruned.
        assert_eq!(plan_replay(Some(3), 10, None), (Replay::Recent, false));
    }
}
