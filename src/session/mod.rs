//! `WsSession`: one actor per WebSocket connection. This module is the only
//! code that knows actix-web-actors, so a move to actix-ws stays here.
//!
//! Contract (PROTOCOL.md):
//! - Authentication happened before the upgrade; the session starts with
//!   `welcome` and closes with 1008 when its token expires unrefreshed.
//! - Commands are rate limited (token bucket); a malformed or refused frame
//!   gets an `error` frame and never closes the connection by itself, but a
//!   connection that keeps hitting the rate limit is closed with 1008.
//! - Subscribing registers with the hub *first*, then loads the channel's
//!   initial content (stats snapshot, presence sync, replay or recent items);
//!   frames arriving meanwhile are buffered. Every frame has a position
//!   (`Outbound::seq`), so nothing is sent twice and, on recoverable
//!   channels, a gap is filled from PostgreSQL before later frames go out.
//! - Replays are read in pages, each fetched after the previous one was
//!   handed to the socket, so they advance only as fast as the client reads.
//! - The session deregisters from the hub and presence in one place: `stopped`.
//!
//! This file holds the actor's life (start, heartbeat, token expiry, socket
//! input, close); [`commands`] the rate limit and the commands, [`subscribe`]
//! the subscription's start, [`delivery`] live frames and replay pages.

mod commands;
mod delivery;
mod fragments;
mod subscribe;
mod subscription;
#[cfg(test)]
mod subscription_props;

use crate::auth::Claims;
use crate::connections::Slot;
use crate::error::HubError;
use crate::hub::outbox::{Outbox, Socket};
use crate::hub::{self, Close, SessionId};
use crate::presence;
use crate::protocol::{encode, error_frame, ServerFrame};
use crate::state::AppState;
use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subscription::Sub;

/// Items read from PostgreSQL per replay page.
const PAGE: i64 = 200;

/// Starts a session for an authenticated request (see `routes::ws`).
pub fn start(
    req: &HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    claims: Claims,
    slot: Slot,
    socket: Option<std::os::fd::RawFd>,
) -> Result<HttpResponse, actix_web::Error> {
    let session = WsSession::new(state.into_inner(), claims, slot, socket);
    let cap = hard_cap(&session.state.config);
    ws::WsResponseBuilder::new(session, req, stream)
        .frame_size(cap)
        .start()
}

/// Messages (a frame, or fragments joined) up to 16× the limit are read and
/// answered `too_large`; larger ones close the connection with 1009.
fn hard_cap(config: &crate::config::Config) -> usize {
    config.max_frame_bytes.saturating_mul(16)
}

pub struct WsSession {
    id: SessionId,
    state: Arc<AppState>,
    claims: Claims,
    /// This connection, counted against the user's limit until the session ends.
    _slot: Slot,
    /// A fragmented message being received.
    fragments: fragments::Fragments,
    subs: HashMap<Arc<str>, Sub, foldhash::fast::RandomState>,
    /// Channels per scope this session holds: presence membership.
    scopes: HashMap<String, usize>,
    last_heard: Instant,
    limiter: DefaultDirectRateLimiter,
    abuse: DefaultDirectRateLimiter,
    outbox: Arc<Outbox>,
    socket: Arc<Socket>,
    expiry: Option<SpawnHandle>,
    /// Generation of subscriptions, so late results of an old one are dropped.
    generation: u64,
    /// `session{id, user}`: entered while the actor handles socket input.
    span: tracing::Span,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl WsSession {
    fn new(
        state: Arc<AppState>,
        claims: Claims,
        slot: Slot,
        socket: Option<std::os::fd::RawFd>,
    ) -> Self {
        let c = &state.config;
        let limiter = RateLimiter::direct(
            Quota::per_second(nz(c.command_rate)).allow_burst(nz(c.command_burst)),
        );
        let abuse = RateLimiter::direct(Quota::per_minute(nz(c.abuse_limit)));
        let outbox = Arc::new(Outbox::new(c.outbox_frames, c.outbox_bytes));
        let id: SessionId = format!("s_{}", uuid::Uuid::new_v4().simple()).into();
        WsSession {
            span: tracing::info_span!("session", id = %id, user = %claims.sub),
            id,
            claims,
            _slot: slot,
            fragments: fragments::Fragments::new(hard_cap(c)),
            subs: HashMap::default(),
            scopes: HashMap::new(),
            last_heard: Instant::now(),
            limiter,
            abuse,
            outbox,
            socket: Arc::new(Socket::new(socket)),
            expiry: None,
            generation: 0,
            state,
        }
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, text: bytestring::ByteString) {
        ctx.text(text);
    }

    fn reply_error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        reference: Option<i64>,
        e: &HubError,
    ) {
        self.send(ctx, error_frame(reference, e));
    }

    fn close(&self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        self.span
            .in_scope(|| tracing::info!(code, reason, "closing session"));
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code),
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn schedule_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(h) = self.expiry.take() {
            ctx.cancel_future(h);
        }
        let left = (self.claims.exp * 1000 - chrono::Utc::now().timestamp_millis()).max(0) as u64;
        self.expiry = Some(ctx.run_later(Duration::from_millis(left), |act, ctx| {
            act.close(ctx, 1008, "token expired");
        }));
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Mailbox messages each carry ≥ 1 frame, so the outbox frame limit
        // binds before the mailbox fills.
        ctx.set_mailbox_capacity(self.state.config.outbox_frames.max(16));
        self.state.metrics.connections_total.inc();
        self.state.hub.do_send(hub::Connect {
            session: self.id.clone(),
            peer: hub::Peer {
                deliver: ctx.address().recipient(),
                close: ctx.address().recipient(),
                resync: ctx.address().recipient(),
                outbox: self.outbox.clone(),
                socket: self.socket.clone(),
            },
        });
        let user = self.claims.user();
        self.send(
            ctx,
            encode(&ServerFrame::Welcome {
                session: &self.id,
                user: &user,
                instance: &self.state.instance,
                heartbeat: self.state.config.heartbeat_secs,
            }),
        );
        self.schedule_expiry(ctx);
        let every = self.state.config.heartbeat();
        ctx.run_interval(every, move |act, ctx| {
            if act.last_heard.elapsed() > every * 3 {
                act.close(ctx, 1008, "heartbeat timeout");
                return;
            }
            ctx.ping(b"");
        });
        self.span.in_scope(|| tracing::debug!("session started"));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.socket.forget();
        self.state.hub.do_send(hub::Disconnect {
            session: self.id.clone(),
        });
        self.state.presence.do_send(presence::ExitAll {
            session: self.id.clone(),
        });
        self.span.in_scope(|| tracing::debug!("session stopped"));
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let span = self.span.clone();
        let _entered = span.enter();
        self.last_heard = Instant::now();
        self.state.metrics.frames_in.inc();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => self.on_binary(ctx),
            Ok(ws::Message::Continuation(item)) => {
                // Every fragment but the last counts against the command
                // rate here; the whole message counts as one command.
                let last = matches!(item, actix_http::ws::Item::Last(_));
                if !last && !self.admit(ctx, None) {
                    return;
                }
                match self.fragments.push(item) {
                    Ok(None) => {}
                    Ok(Some(fragments::Message::Text(text))) => self.on_text(&text, ctx),
                    Ok(Some(fragments::Message::Binary)) => self.on_binary(ctx),
                    Err(fragments::Refused::TooLarge) => self.close(ctx, 1009, "message too big"),
                    Err(fragments::Refused::InvalidUtf8) => {
                        self.close(ctx, 1007, "text is not UTF-8")
                    }
                    Err(fragments::Refused::OutOfOrder) => self.close(ctx, 1002, "protocol error"),
                }
            }
            // Pings count against the command rate too; over it, no pong.
            Ok(ws::Message::Ping(p)) => {
                if self.admit(ctx, None) {
                    ctx.pong(&p);
                }
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => self.close(ctx, 1009, "frame too big"),
            // actix-web-actors reports a text frame that is not UTF-8 only
            // as an I/O error carrying `Utf8Error`'s message.
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                self.close(ctx, 1007, "text is not UTF-8")
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket protocol error");
                self.close(ctx, 1002, "protocol error");
            }
        }
    }
}

impl Handler<Close> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        self.close(ctx, msg.code, msg.reason);
    }
}
