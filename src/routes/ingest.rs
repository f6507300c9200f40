//! `POST /api/events` and `POST /api/notifications`: validated here, then
//! queued for the group commit; the 202 is sent only after the commit.
//!
//! `POST /api/events` is one source among others ([`crate::source`]): the
//! same validation and the same commit as the bus consumers, but all or
//! nothing (one invalid item refuses the request), and its acknowledgement
//! is the 202 with the counts.

use super::request::{json_body, writer};
use crate::error::HubError;
use crate::events::{validate_batch, validate_notification};
use crate::ingest::Notify;
use crate::source::batch::commit;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use std::time::Instant;

pub async fn events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let received = Instant::now();
    writer(&req, &state)?;
    let events = validate_batch(&json_body(payload, state.config.request_timeout()).await?)?;
    let stored = commit(&state.ingest.clone().recipient(), events, received).await?;
    Ok(HttpResponse::Accepted().json(stored.accepted()))
}

pub async fn notification(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    writer(&req, &state)?;
    let notification =
        validate_notification(&json_body(payload, state.config.request_timeout()).await?)?;
    let (reply, done) = tokio::sync::oneshot::channel();
    state
        .ingest
        .send(Notify {
            notification,
            reply,
        })
        .await?;
    let notified = done.await.map_err(HubError::internal)??;
    Ok(HttpResponse::Accepted().json(notified))
}
