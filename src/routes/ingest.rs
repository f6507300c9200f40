//! `POST /api/events` and `POST /api/notifications`: validated here, then
//! queued for the group commit; the 202 is sent only after the commit.

use super::request::{json_body, writer};
use crate::error::HubError;
use crate::events::{validate_batch, validate_notification};
use crate::ingest::{Ingest, Notify};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    writer(&req, &state)?;
    let events = validate_batch(&json_body(payload, state.config.request_timeout()).await?)?;
    let (reply, done) = tokio::sync::oneshot::channel();
    state.ingest.send(Ingest { events, reply }).await?;
    let accepted = done.await.map_err(HubError::internal)??;
    Ok(HttpResponse::Accepted().json(accepted))
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
