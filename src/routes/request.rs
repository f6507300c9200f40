//! What every handler needs from a request: who is calling (a browser's JWT
//! or a service's ingest key) and a bounded, timed JSON body.

use crate::auth::{check_ingest_key, request_token, Claims};
use crate::error::HubError;
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// Largest request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// Authenticates a browser read (the Origin was checked by `origin::guard`).
pub fn reader(req: &HttpRequest, state: &AppState) -> Result<Claims, HubError> {
    let token = request_token(req).ok_or_else(|| {
        HubError::Unauthorized("missing token (Authorization: Bearer or ?token=)".into())
    })?;
    state.tokens.verify(&token)
}

/// Authenticates a service write (the Origin was checked by `origin::guard`).
pub fn writer(req: &HttpRequest, state: &AppState) -> Result<(), HubError> {
    check_ingest_key(req, &state.ingest_key)
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes, which must arrive
/// within `timeout` (a client trickling its body would hold a worker's
/// connection forever).
pub async fn json_body(mut payload: web::Payload, timeout: Duration) -> Result<Value, HubError> {
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
