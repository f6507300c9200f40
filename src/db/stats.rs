//! The reads behind a scope's stats, all bounded by per-scope indexes (no
//! scan of the event table), and the scope's stats version, shared by every
//! replica so it only grows.

use super::schema::{counters, events, scopes, subject_states};
use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A scope's stats as rows; [`crate::stats`] makes the body of them.
#[derive(Debug, Default)]
pub struct ScopeRows {
    /// (kind, events of that kind, all time)
    pub counts: Vec<(String, i64)>,
    /// (subject type, state, subjects in that state now)
    pub states: Vec<(String, Option<String>, i64)>,
    /// (subject type, distinct subjects with an event in the active window)
    pub active: Vec<(String, i64)>,
    pub last_minute: i64,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// What the stats body of a scope is made of, read from the small per-scope
/// tables (and the last minute of `events`, by index).
pub async fn scope_rows(
    conn: &mut AsyncPgConnection,
    scope: &str,
    active_window: chrono::Duration,
) -> QueryResult<ScopeRows> {
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

    Ok(ScopeRows {
        counts,
        states,
        active,
        last_minute,
        last_event_at,
    })
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
