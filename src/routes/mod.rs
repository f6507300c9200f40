//! The HTTP surface: which handler answers which path. Handlers live in
//! submodules by what they serve; none of them knows another.
//!
//! Every error is `{"error":{"code","message","details"?}}` with a 4xx/5xx
//! status; handlers only authenticate, validate and hand work to the actors.

mod dashboard;
mod ingest;
mod ops;
mod read;
mod request;
mod ws;

use crate::error::HubError;
use actix_web::{web, HttpRequest, HttpResponse};

pub use read::MAX_WAIT_SECS;
pub use request::MAX_BODY;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| HubError::BadRequest(format!("bad query: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| HubError::BadRequest(format!("bad path: {e}")).into()),
    )
    .route("/ws", web::get().to(ws::upgrade))
    .route("/api/events", web::post().to(ingest::events))
    .route("/api/notifications", web::post().to(ingest::notification))
    .route("/api/scopes/{scope}/stats", web::get().to(read::stats))
    .route(
        "/api/scopes/{scope}/presence",
        web::get().to(read::presence),
    )
    .route(
        "/api/channels/{channel}/history",
        web::get().to(read::history),
    )
    .route("/health", web::get().to(ops::health))
    .route("/ready", web::get().to(ops::ready))
    .route("/metrics", web::get().to(ops::metrics))
    .route("/api/dev/token", web::get().to(dashboard::dev_token))
    .route("/", web::get().to(dashboard::page))
    .route("/static/{path:.*}", web::get().to(dashboard::asset))
    .route("/sdk/{path:.*}", web::get().to(dashboard::sdk))
    .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, HubError> {
    Err(HubError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
