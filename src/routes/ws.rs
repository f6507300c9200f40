//! `GET /ws`: authenticates before the upgrade (401 on a bad token), then
//! takes a connection slot (503 when this replica is full, 429 over the
//! per-address or per-user limit: [`crate::connections`]), then hands the
//! connection to a [`crate::session`].

use crate::auth::request_token;
use crate::error::HubError;
use crate::session;
use crate::state::{AppState, ConnFd};
use actix_web::{web, HttpRequest, HttpResponse};
use std::net::{IpAddr, Ipv4Addr};

pub async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let token = request_token(&req).ok_or_else(|| {
        HubError::Unauthorized("missing token (?token= or Authorization: Bearer)".into())
    })?;
    let claims = state.tokens.verify(&token)?;
    // No peer address only for connections that are not TCP (tests'
    // in-memory requests): they count as one unspecified address.
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let address = state.proxies.client(peer, req.headers());
    let slot = state.connections.acquire(&claims.sub, address).await?;
    let fd = req.conn_data::<ConnFd>().map(|c| c.0);
    session::start(&req, stream, state, claims, slot, fd)
}
