//! The read API for browsers (JWT): stats and presence snapshots (the
//! polling fallback) and a recoverable channel's history, with long-poll
//! (whose user counts in the scope's presence while the poll is held).

use super::request::reader;
use crate::db::history;
use crate::error::HubError;
use crate::presence;
use crate::protocol::{valid_scope, Channel};
use crate::replay;
use crate::state::AppState;
use crate::stats::GetStats;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// Authenticates a read of `scope`'s stats or presence and returns the scope.
fn readable_scope(
    req: &HttpRequest,
    state: &AppState,
    scope: web::Path<String>,
) -> Result<String, HubError> {
    let claims = reader(req, state)?;
    let scope = scope.into_inner();
    if !valid_scope(&scope) {
        return Err(HubError::BadRequest(format!(
            "malformed scope '{}'",
            scope.chars().take(80).collect::<String>()
        )));
    }
    claims.may_read(&Channel::Stats(scope.clone()))?;
    Ok(scope)
}

pub async fn stats(
    req: HttpRequest,
    scope: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let scope = readable_scope(&req, &state, scope)?;
    let (reply, done) = tokio::sync::oneshot::channel();
    state.stats.send(GetStats { scope, reply }).await?;
    let snap = done.await.map_err(HubError::internal)??;
    let mut body = snap.stats.clone();
    body["version"] = snap.version.into();
    Ok(HttpResponse::Ok().json(body))
}

pub async fn presence(
    req: HttpRequest,
    scope: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let scope = readable_scope(&req, &state, scope)?;
    let (count, users) = state.presence.send(presence::Snapshot { scope }).await?;
    Ok(HttpResponse::Ok().json(json!({"count": count, "users": users})))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    since: Option<i64>,
    limit: Option<i64>,
    /// Long-poll: seconds to hold the request until something newer than
    /// `since` exists (capped at [`MAX_WAIT_SECS`]).
    wait: Option<u64>,
}

/// Longest `wait` of a history long-poll; larger values are capped.
pub const MAX_WAIT_SECS: u64 = 30;
/// How often a waiting history request re-reads the channel's latest offset.
const WAIT_CHECK_EVERY: Duration = Duration::from_millis(250);

pub async fn history(
    req: HttpRequest,
    channel: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let claims = reader(&req, &state)?;
    let channel = Channel::parse(&channel)?;
    claims.may_read(&channel)?;
    if !channel.recoverable() {
        return Err(HubError::BadRequest(format!(
            "channel '{channel}' keeps no history; use the stats or presence endpoint"
        )));
    }
    if query.since.is_some_and(|s| s < 0) {
        return Err(HubError::BadRequest("'since' must not be negative".into()));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HubError::BadRequest(
            "'limit' must be between 1 and 1000".into(),
        ));
    }
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    // A long-poll on a scope's channel makes its user present in the scope
    // while it is held (and for the grace after: `presence::polls`), like
    // a WebSocket session subscribed there.
    let _present = match (query.since, channel.scope()) {
        (Some(_), Some(scope)) if !wait.is_zero() => Some(presence::PollPresence::hold(
            &state.presence,
            scope,
            claims.user(),
        )),
        _ => None,
    };
    if let (Some(since), false) = (query.since, wait.is_zero()) {
        wait_for_newer(&state, &channel, since, wait).await?;
    }
    let mut conn = state.pool.get().await?;
    let opening = replay::open(&mut conn, &channel, query.since, limit, limit).await?;
    let (latest, recovered, items) = (opening.latest, opening.recovered, opening.items);
    // Frames are already JSON: splice them in rather than re-parse them.
    let items: Vec<&str> = items.iter().map(|f| &*f.text).collect();
    let body = format!(
        r#"{{"offset":{latest},"recovered":{recovered},"items":[{}]}}"#,
        items.join(",")
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// Long-poll: holds the request until the channel has something newer than
/// `since`, `wait` passes, or a graceful stop begins. The channel's latest
/// offset lives in PostgreSQL, so re-reading it finds messages committed by
/// any replica. No connection is held between checks, and dropping this
/// future (the client went away) cancels the wait.
async fn wait_for_newer(
    state: &AppState,
    channel: &Channel,
    since: i64,
    wait: Duration,
) -> Result<(), HubError> {
    let mut stopping = state.stopping.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let latest = {
            let mut conn = state.pool.get().await?;
            history::latest_offset(&mut conn, channel).await?
        };
        if latest != since || tokio::time::Instant::now() >= deadline || *stopping.borrow() {
            return Ok(());
        }
        let next = deadline.min(tokio::time::Instant::now() + WAIT_CHECK_EVERY);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stopping.changed() => {}
        }
    }
}
