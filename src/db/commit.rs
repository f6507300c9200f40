//! The group commit: one transaction stores a batch of events and
//! notifications with gapless offsets, claims idempotency keys and updates
//! the per-scope aggregates (counters, subject states, scope summaries).
//!
//! Contract: every row several writers may touch is upserted in sorted key
//! order, so concurrent replicas cannot deadlock; nothing is visible before
//! the commit; offsets are handed out in input order.

use super::schema::{
    channel_offsets, counters, events, idempotency_keys, notifications, scopes, subject_states,
};
use crate::events::{NewEvent, NewNotification};
use crate::protocol::Channel;
use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Timestamptz};
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
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
                    .entry(Channel::Feed(e.0.scope.clone()).to_string())
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
                let offset = take(Channel::Feed(e.scope.clone()).to_string());
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
