//! `GET /ws`: authenticates before the upgrade (401 on a bad token, 429
//! over the per-user connection limit), then hands the connection to a
//! [`crate::session`].

use crate::auth::request_token;
use crate::error::HubError;
use crate::session;
use crate::state::{AppState, ConnFd};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn upgrade(
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
