//! The HTTP surface: `/ws`, the ingest and read API, health, the dashboard.
//!
//! Every error is `{"error":{"code","message","details"?}}` with a 4xx/5xx
//! status; handlers only authenticate, validate and hand work to the actors.

use crate::auth::{check_ingest_key, check_origin, request_token, Claims};
use crate::broker::Health;
use crate::db::queries;
use crate::error::HubError;
use crate::events::{validate_batch, validate_notification};
use crate::presence;
use crate::protocol::{valid_scope, Channel};
use crate::session;
use crate::startup::{AppState, ConnFd};
use crate::stats::{GetStats, Ingest, Notify};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Largest request body.
pub const MAX_BODY: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| HubError::BadRequest(format!("bad query: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| HubError::BadRequest(format!("bad path: {e}")).into()),
    )
    .route("/ws", web::get().to(ws))
    .route("/api/events", web::post().to(ingest_events))
    .route("/api/notifications", web::post().to(ingest_notification))
    .route("/api/scopes/{scope}/stats", web::get().to(stats))
    .route("/api/scopes/{scope}/presence", web::get().to(presence_of))
    .route("/api/channels/{channel}/history", web::get().to(history))
    .route("/health", web::get().to(health))
    .route("/ready", web::get().to(ready))
    .route("/", web::get().to(dashboard))
    .default_service(web::to(not_found));
}

async fn ws(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    check_origin(&req, &state.config.allowed_origins)?;
    let token = request_token(&req).ok_or_else(|| {
        HubError::Unauthorized("missing token (?token= or Authorization: Bearer)".into())
    })?;
    let claims = state.tokens.verify(&token)?;
    let fd = req.conn_data::<ConnFd>().map(|c| c.0);
    session::start(&req, stream, state, claims, fd)
}

/// Authenticates a browser read: Origin and JWT.
fn reader(req: &HttpRequest, state: &AppState) -> Result<Claims, HubError> {
    check_origin(req, &state.config.allowed_origins)?;
    let token = request_token(req).ok_or_else(|| {
        HubError::Unauthorized("missing token (Authorization: Bearer or ?token=)".into())
    })?;
    state.tokens.verify(&token)
}

/// Authenticates a service write: Origin and ingest key.
fn writer(req: &HttpRequest, state: &AppState) -> Result<(), HubError> {
    check_origin(req, &state.config.allowed_origins)?;
    check_ingest_key(req, &state.ingest_key)
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn json_body(mut payload: web::Payload) -> Result<Value, HubError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| HubError::BadRequest(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HubError::TooLarge(format!("body over {MAX_BODY} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| HubError::BadRequest(format!("malformed JSON: {e}")))
}

async fn ingest_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    writer(&req, &state)?;
    let events = validate_batch(&json_body(payload).await?)?;
    let (reply, done) = tokio::sync::oneshot::channel();
    state.stats.send(Ingest { events, reply }).await?;
    let accepted = done.await.map_err(HubError::internal)??;
    Ok(HttpResponse::Accepted().json(accepted))
}

async fn ingest_notification(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    writer(&req, &state)?;
    let notification = validate_notification(&json_body(payload).await?)?;
    let (reply, done) = tokio::sync::oneshot::channel();
    state
        .stats
        .send(Notify {
            notification,
            reply,
        })
        .await?;
    let notified = done.await.map_err(HubError::internal)??;
    Ok(HttpResponse::Accepted().json(notified))
}

fn readable_scope(claims: &Claims, scope: &str) -> Result<(), HubError> {
    if !valid_scope(scope) {
        return Err(HubError::BadRequest(format!(
            "malformed scope '{}'",
            scope.chars().take(80).collect::<String>()
        )));
    }
    claims.may_read(&Channel::Stats(scope.to_string()))
}

async fn stats(
    req: HttpRequest,
    scope: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let claims = reader(&req, &state)?;
    readable_scope(&claims, &scope)?;
    let (reply, done) = tokio::sync::oneshot::channel();
    state
        .stats
        .send(GetStats {
            scope: scope.into_inner(),
            reply,
        })
        .await?;
    let snap = done.await.map_err(HubError::internal)??;
    let mut body = snap.stats.clone();
    body["version"] = snap.version.into();
    Ok(HttpResponse::Ok().json(body))
}

async fn presence_of(
    req: HttpRequest,
    scope: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let claims = reader(&req, &state)?;
    readable_scope(&claims, &scope)?;
    let (count, users) = state
        .presence
        .send(presence::Snapshot {
            scope: scope.into_inner(),
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"count": count, "users": users})))
}

#[derive(Deserialize)]
struct HistoryQuery {
    since: Option<i64>,
    limit: Option<i64>,
}

async fn history(
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
    let mut conn = state.pool.get().await?;
    let (latest, first) = queries::channel_bounds(&mut conn, &channel).await?;
    let (plan, recovered) = queries::plan_replay(query.since, latest, first);
    let items = match plan {
        queries::Replay::After(after) => {
            queries::history_after(&mut conn, &channel, after, limit).await?
        }
        queries::Replay::Recent => queries::history_recent(&mut conn, &channel, limit).await?,
    };
    // Frames are already JSON: splice them in rather than re-parse them.
    let items: Vec<&str> = items.iter().map(|(_, f)| &**f).collect();
    let body = format!(
        r#"{{"offset":{latest},"recovered":{recovered},"items":[{}]}}"#,
        items.join(",")
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let postgres = async {
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        queries::ping(&mut conn).await.map_err(|e| e.to_string())
    };
    let postgres = match tokio::time::timeout(Duration::from_secs(2), postgres).await {
        Ok(Ok(())) => "up".to_string(),
        Ok(Err(e)) => format!("down: {e}"),
        Err(_) => "down: timed out".to_string(),
    };
    let broker = match state.broker.health() {
        Health::Up => "up".to_string(),
        Health::Down(why) => format!("down: {why}"),
    };
    let ok = postgres == "up" && broker == "up";
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "instance": state.instance,
        "components": {"postgres": postgres, state.broker.name(): broker},
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

const DASHBOARD: &str = include_str!("../static/index.html");

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DASHBOARD)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, HubError> {
    Err(HubError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
