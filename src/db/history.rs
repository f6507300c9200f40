//! The history of recoverable channels as rows: a channel's bounds (latest
//! offset, oldest retained) and pages of its items by offset, read by index
//! (`events (scope, feed_offset)`, `notifications (channel, channel_offset)`,
//! one probe per day partition). Retention is [`super::partitions`].
//!
//! Rows, not frames: [`crate::replay`] renders them, so live and replayed
//! frames come from one encoder.

use super::schema::{channel_offsets, events, notifications};
use crate::protocol::Channel;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

/// A stored event of a `feed:` channel.
#[derive(Debug, Queryable)]
pub struct EventRow {
    pub offset: i64,
    pub id: Uuid,
    pub kind: String,
    pub actor: Option<Value>,
    pub subject: Option<Value>,
    pub data: Value,
    pub at: DateTime<Utc>,
}

/// A stored notification of a `user:` or `system` channel.
#[derive(Debug, Queryable)]
pub struct NoteRow {
    pub offset: i64,
    pub id: Uuid,
    pub level: String,
    pub title: String,
    pub body: String,
    pub at: DateTime<Utc>,
}

/// Items of one recoverable channel, in the order asked for.
#[derive(Debug)]
pub enum Rows {
    Events(Vec<EventRow>),
    Notes(Vec<NoteRow>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Events(r) => r.len(),
            Rows::Notes(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reverse(&mut self) {
        match self {
            Rows::Events(r) => r.reverse(),
            Rows::Notes(r) => r.reverse(),
        }
    }
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
pub async fn bounds(
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

/// Up to `limit` items with offset > `after`, oldest first.
pub async fn after(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    after: i64,
    limit: i64,
) -> QueryResult<Rows> {
    read(conn, channel, Some(after), limit).await
}

/// The last `limit` items, oldest first.
pub async fn recent(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    limit: i64,
) -> QueryResult<Rows> {
    let mut rows = read(conn, channel, None, limit).await?;
    rows.reverse();
    Ok(rows)
}

/// `after: Some(n)` pages forward from n; `None` reads newest first.
async fn read(
    conn: &mut AsyncPgConnection,
    channel: &Channel,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Rows> {
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
        return Ok(Rows::Events(q.load(conn).await?));
    }
    let mut q = notifications::table
        .filter(notifications::channel.eq(channel.to_string()))
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
    Ok(Rows::Notes(q.load(conn).await?))
}
