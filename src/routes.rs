//! The HTTP surface: `/ws`, the ingest and read API, health, the dashboard.
//!
//! Every error is `{"error":{"code","message","details"?}}` with a 4xx/5xx
//! status; handlers only authenticate, validate and hand work to the actors.

use crate::auth::{check_ingest_key, claims_for, request_token, Claims};
use crate::broker::Health;
use crate::db::queries;
use crate::error::HubError;
use crate::events::{validate_batch, validate_notification};
use crate::presence;
use crate::protocol::{valid_scope, valid_user_id, Channel};
use crate::session;
use crate::startup::{AppState, ConnFd};
use crate::stats::{GetStats, Ingest, Notify};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::OnceLock;
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
    .route("/api/dev/token", web::get().to(dev_token))
    .route("/", web::get().to(dashboard))
    .route("/static/{path:.*}", web::get().to(asset))
    .default_service(web::to(not_found));
}

async fn ws(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let token = request_token(&req).ok_or_else(|| {
        HubError::Unauthorized("missing token (?token= or Authorization: Bearer)".into())
    })?;
    let claims = state.tokens.verify(&token)?;
    let slot = state.connections.acquire(&claims.sub).inspect_err(|_| {
        state.metrics.connections_refused.inc();
    })?;
    let fd = req.conn_data::<ConnFd>().map(|c| c.0);
    session::start(&req, stream, state, claims, slot, fd)
}

/// Authenticates a browser read (the Origin was checked by `origin::guard`).
fn reader(req: &HttpRequest, state: &AppState) -> Result<Claims, HubError> {
    let token = request_token(req).ok_or_else(|| {
        HubError::Unauthorized("missing token (Authorization: Bearer or ?token=)".into())
    })?;
    state.tokens.verify(&token)
}

/// Authenticates a service write (the Origin was checked by `origin::guard`).
fn writer(req: &HttpRequest, state: &AppState) -> Result<(), HubError> {
    check_ingest_key(req, &state.ingest_key)
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes, which must arrive
/// within `timeout` (a client trickling its body would hold a worker's
/// connection forever).
async fn json_body(mut payload: web::Payload, timeout: Duration) -> Result<Value, HubError> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| HubError::BadRequest(format!("reading body: {e}")))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HubError::TooLarge(format!("body over {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, read).await.map_err(|_| {
        HubError::Timeout(format!(
            "request body not received within {} s",
            timeout.as_secs()
        ))
    })??;
    serde_json::from_slice(&body).map_err(|e| HubError::BadRequest(format!("malformed JSON: {e}")))
}

async fn ingest_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    writer(&req, &state)?;
    let events = validate_batch(&json_body(payload, state.config.request_timeout()).await?)?;
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
    let notification =
        validate_notification(&json_body(payload, state.config.request_timeout()).await?)?;
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
    /// Long-poll: seconds to hold the request until something newer than
    /// `since` exists (capped at [`MAX_WAIT_SECS`]).
    wait: Option<u64>,
}

/// Longest `wait` of a history long-poll; larger values are capped.
pub const MAX_WAIT_SECS: u64 = 30;
/// How often a waiting history request re-reads the channel's latest offset.
const WAIT_CHECK_EVERY: Duration = Duration::from_millis(250);

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
    let (mut latest, mut first) = queries::channel_bounds(&mut conn, &channel).await?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    if query.since == Some(latest) && !wait.is_zero() {
        // Long-poll. The channel's latest offset lives in PostgreSQL, so
        // re-reading it finds messages committed by any replica. No
        // connection is held between checks, and dropping this future (the
        // client went away) cancels the wait. A graceful stop ends it early
        // with the usual answer, so it does not hold the stop.
        drop(conn);
        let mut stopping = state.stopping.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        while latest == query.since.unwrap_or_default()
            && tokio::time::Instant::now() < deadline
            && !*stopping.borrow()
        {
            let next = deadline.min(tokio::time::Instant::now() + WAIT_CHECK_EVERY);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stopping.changed() => {}
            }
            let mut conn = state.pool.get().await?;
            latest = queries::latest_offset(&mut conn, &channel).await?;
        }
        conn = state.pool.get().await?;
        (latest, first) = queries::channel_bounds(&mut conn, &channel).await?;
    }
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
        .insert_header((header::CACHE_CONTROL, "no-store"))
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

#[derive(Deserialize)]
struct DevTokenQuery {
    user: Option<String>,
    name: Option<String>,
    scopes: Option<String>,
}

/// Lifetime of a dev token; the dashboard fetches a new one before it ends.
const DEV_TOKEN_TTL_SECS: i64 = 3600;

/// `GET /api/dev/token?user=&name=&scopes=`: a browser token for anyone,
/// only in demo mode (404 otherwise). Stands in for the login of a real
/// application, which mints tokens in its own backend.
async fn dev_token(
    query: web::Query<DevTokenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    if !state.config.demo {
        return Err(HubError::NotFound(
            "the dev token endpoint exists only in demo mode (serve --demo)".into(),
        ));
    }
    let user = match query.user.as_deref() {
        Some(u) if valid_user_id(u) => u.to_string(),
        Some(_) => {
            return Err(HubError::BadRequest(
                "'user' must be 1-128 characters without whitespace".into(),
            ))
        }
        None => format!("guest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    let name = query
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 64) {
        return Err(HubError::BadRequest(
            "'name' is longer than 64 characters".into(),
        ));
    }
    let scopes: Vec<&str> = match query.scopes.as_deref() {
        None => vec!["demo"],
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if scopes.is_empty() || scopes.iter().any(|s| *s != "*" && !valid_scope(s)) {
        return Err(HubError::BadRequest(
            "'scopes' must be a comma-separated list of scope names or '*'".into(),
        ));
    }
    let claims = claims_for(&user, name, &scopes, DEV_TOKEN_TTL_SECS);
    let token = state.tokens.mint(&claims)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "token": token,
            "user": claims.user(),
            "scopes": claims.scopes,
            "exp": claims.exp,
        })))
}

/// The dashboard's files, embedded in the binary (`static/`, see
/// `static/index.html`). Every file of `static/` must be listed here; a unit
/// test checks it.
macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/static/", $path)) as &[u8])),*]
    };
}
const ASSETS: &[(&str, &[u8])] = assets![
    "index.html",
    "app.css",
    "favicon.svg",
    "icons.svg",
    "js/main.js",
    "js/token.js",
    "js/transport.js",
    "js/ui.js",
    "js/sentences.js",
    "js/notifications.js",
    "js/sparkline.js",
    "js/util.js",
];

/// The page's Content-Security-Policy: only its own scripts, styles and
/// connections (`'self'` covers same-origin `ws:`/`wss:` in current browsers).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "webmanifest") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Strong validators of the embedded files (FNV-1a of the bytes), computed
/// once: a browser revalidates every file (`no-cache`) and gets a 304 while
/// the binary is unchanged, and the new file right after a deploy.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, bytes)| {
                let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

fn serve_asset(req: &HttpRequest, path: &str) -> Result<HttpResponse, HubError> {
    let Some(i) = ASSETS.iter().position(|(p, _)| *p == path) else {
        return Err(HubError::NotFound(format!(
            "no dashboard file '{}'",
            path.chars().take(100).collect::<String>()
        )));
    };
    let etag = &etags()[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if path.ends_with(".html") {
        res.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .insert_header((header::REFERRER_POLICY, "no-referrer"));
    }
    if fresh {
        return Ok(res.finish());
    }
    Ok(res.content_type(content_type(path)).body(ASSETS[i].1))
}

async fn dashboard(req: HttpRequest) -> Result<HttpResponse, HubError> {
    serve_asset(&req, "index.html")
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, HubError> {
    serve_asset(&req, &path)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, HubError> {
    Err(HubError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_static_file_is_embedded() {
        let base = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/static"));
        let mut found = Vec::new();
        files(base, base, &mut found);
        let mut listed: Vec<String> = ASSETS.iter().map(|(p, _)| p.to_string()).collect();
        found.sort();
        listed.sort();
        assert_eq!(
            found, listed,
            "static/ and ASSETS in routes.rs must list the same files"
        );
        for (path, _) in ASSETS {
            assert_ne!(content_type(path), "application/octet-stream", "{path}");
        }
    }
}
