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

mod fragments;
mod subscription;
#[cfg(test)]
mod subscription_props;

use crate::auth::Claims;
use crate::connections::Slot;
use crate::error::HubError;
use crate::frame::{Outbound, Resync};
use crate::hub::outbox::{Outbox, Socket};
use crate::hub::{self, Close, Deliver, SessionId};
use crate::presence;
use crate::protocol::{encode, error_frame, parse_command, Channel, Command, Request, ServerFrame};
use crate::replay;
use crate::state::AppState;
use crate::stats::GetStats;
use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subscription::{Accept, Sub};

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
    subs: HashMap<Arc<str>, Sub>,
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
            subs: HashMap::new(),
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

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if self.limiter.check().is_err() {
            if self.abuse.check().is_err() {
                return self.close(ctx, 1008, "repeated abuse: command rate exceeded");
            }
            return self.reply_error(
                ctx,
                None,
                &HubError::RateLimited("too many commands; slow down".into()),
            );
        }
        if text.len() > self.state.config.max_frame_bytes {
            return self.reply_error(
                ctx,
                None,
                &HubError::TooLarge(format!(
                    "frame of {} bytes; the limit is {}",
                    text.len(),
                    self.state.config.max_frame_bytes
                )),
            );
        }
        match parse_command(text) {
            Ok(req) => self.on_command(req, ctx),
            Err(rejected) => self.reply_error(ctx, rejected.reference, &rejected.error),
        }
    }

    fn on_command(&mut self, req: Request, ctx: &mut ws::WebsocketContext<Self>) {
        let reference = req.reference;
        let ok = encode(&ServerFrame::Ok { reference });
        match req.command {
            Command::Ping => self.send(ctx, encode(&ServerFrame::Pong { reference })),
            Command::Subscribe { channel, since } => {
                if let Err(e) = self.subscribe(&channel, since, reference, ctx) {
                    self.reply_error(ctx, reference, &e);
                }
            }
            Command::Unsubscribe { channel } => {
                if let Some(name) = self.subs.keys().find(|k| ***k == *channel).cloned() {
                    self.drop_sub(&name);
                }
                self.send(
                    ctx,
                    encode(&ServerFrame::Unsubscribed {
                        reference,
                        channel: &channel,
                    }),
                );
            }
            Command::Activity { action, target: _ } => {
                self.state.presence.do_send(presence::Activity {
                    session: self.id.clone(),
                    action,
                });
                if reference.is_some() {
                    self.send(ctx, ok);
                }
            }
            Command::Refresh { token } => match self.refresh(&token, ctx) {
                Ok(()) if reference.is_some() => self.send(ctx, ok),
                Ok(()) => {}
                Err(e) => self.reply_error(ctx, reference, &e),
            },
        }
    }

    /// Replaces the token: same user only; subscriptions the new token does
    /// not allow are ended with a server-initiated `unsubscribed`.
    fn refresh(
        &mut self,
        token: &str,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), HubError> {
        let claims = self.state.tokens.verify(token)?;
        if claims.sub != self.claims.sub {
            return Err(HubError::Forbidden(
                "a refreshed token must be for the same user".into(),
            ));
        }
        self.claims = claims;
        self.schedule_expiry(ctx);
        let revoked: Vec<Arc<str>> = self
            .subs
            .iter()
            .filter(|(_, s)| self.claims.may_read(&s.channel).is_err())
            .map(|(k, _)| k.clone())
            .collect();
        for name in revoked {
            self.drop_sub(&name);
            self.send(
                ctx,
                encode(&ServerFrame::Unsubscribed {
                    reference: None,
                    channel: &name,
                }),
            );
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        name: &str,
        since: Option<i64>,
        reference: Option<i64>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), HubError> {
        let channel = Channel::parse(name)?;
        self.claims.may_read(&channel)?;
        let existing = self.subs.keys().find(|k| ***k == *name).cloned();
        if existing.is_none() && self.subs.len() >= self.state.config.max_subscriptions {
            return Err(HubError::LimitReached(format!(
                "at most {} subscriptions per connection",
                self.state.config.max_subscriptions
            )));
        }
        // Count the scope before dropping an existing subscription, so a
        // re-subscription never looks like leaving the scope.
        if let Some(scope) = channel.scope() {
            let n = self.scopes.entry(scope.to_string()).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.state.presence.do_send(presence::Enter {
                    scope: scope.to_string(),
                    session: self.id.clone(),
                    user: self.claims.user(),
                });
            }
        }
        // Subscribing again restarts the subscription (e.g. with a new `since`).
        if let Some(existing) = existing {
            self.drop_sub(&existing);
        }
        let name: Arc<str> = name.into();
        self.generation += 1;
        let generation = self.generation;
        self.subs.insert(
            name.clone(),
            Sub::new(channel.clone(), generation, self.state.config.outbox_frames),
        );
        // Register first: every frame published after this reaches us, and
        // what the initial load already contains is dropped by position.
        let registered = self.state.hub.send(hub::Subscribe {
            session: self.id.clone(),
            channel: name.clone(),
        });
        ctx.spawn(registered.into_actor(self).map(move |res, act, ctx| {
            if res.is_err() {
                act.fail_sub(
                    &name,
                    generation,
                    reference,
                    HubError::internal("hub unavailable"),
                    ctx,
                );
                return;
            }
            act.load_initial(name, channel, since, reference, generation, ctx);
        }));
        Ok(())
    }

    fn load_initial(
        &mut self,
        name: Arc<str>,
        channel: Channel,
        since: Option<i64>,
        reference: Option<i64>,
        generation: u64,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        match channel {
            Channel::Stats(scope) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.state.stats.do_send(GetStats { scope, reply: tx });
                let fut = async move { rx.await.map_err(HubError::internal)? };
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(snap) => {
                        let subscribed = encode(&ServerFrame::Subscribed {
                            reference,
                            channel: &name,
                            offset: None,
                            recovered: None,
                        });
                        act.start_live(
                            &name,
                            generation,
                            subscribed,
                            vec![snap.frame.clone()],
                            ctx,
                        );
                    }
                    Err(e) => act.fail_sub(&name, generation, reference, e, ctx),
                }));
            }
            Channel::Presence(scope) => {
                let sync = self.state.presence.send(presence::Sync { scope });
                ctx.spawn(sync.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(frame) => {
                        let subscribed = encode(&ServerFrame::Subscribed {
                            reference,
                            channel: &name,
                            offset: None,
                            recovered: None,
                        });
                        act.start_live(&name, generation, subscribed, vec![frame], ctx);
                    }
                    Err(e) => act.fail_sub(&name, generation, reference, HubError::from(e), ctx),
                }));
            }
            recoverable => {
                let pool = self.state.pool.clone();
                let recent = self.state.config.recent_items;
                let fut = async move {
                    let mut conn = pool.get().await?;
                    let opening =
                        replay::open(&mut conn, &recoverable, since, PAGE, recent).await?;
                    Ok::<_, HubError>(opening)
                };
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(opening) => {
                        let subscribed = encode(&ServerFrame::Subscribed {
                            reference,
                            channel: &name,
                            offset: Some(opening.latest),
                            recovered: Some(opening.recovered),
                        });
                        let Some(sub) = act.live_sub(&name, generation) else {
                            return;
                        };
                        sub.set_position(opening.from);
                        act.send(ctx, subscribed);
                        act.write_page(&name, generation, opening.items, opening.more, ctx);
                    }
                    Err(e) => act.fail_sub(&name, generation, reference, e, ctx),
                }));
            }
        }
    }

    /// The subscription `name` if it is still the one of `generation`.
    fn live_sub(&mut self, name: &str, generation: u64) -> Option<&mut Sub> {
        self.subs
            .get_mut(name)
            .filter(|s| s.generation == generation)
    }

    /// Non-recoverable channels: `subscribed`, the snapshot, then anything
    /// newer that arrived meanwhile.
    fn start_live(
        &mut self,
        name: &Arc<str>,
        generation: u64,
        subscribed: bytestring::ByteString,
        initial: Vec<Outbound>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some(sub) = self.live_sub(name, generation) else {
            return;
        };
        let mut out = Vec::new();
        for frame in initial {
            sub.set_position(frame.seq);
            out.push(frame);
        }
        // Snapshots never gap: `drain` only drops what the snapshot contains.
        out.extend(sub.drain().0);
        self.send(ctx, subscribed);
        for frame in out {
            self.send(ctx, frame.text);
        }
    }

    /// Writes one replay page, then either reads the next page (after this
    /// one has gone to the socket) or switches the subscription to live.
    fn write_page(
        &mut self,
        name: &Arc<str>,
        generation: u64,
        items: Vec<Outbound>,
        more: bool,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some(sub) = self.live_sub(name, generation) else {
            return;
        };
        let mut out = Vec::new();
        for frame in items {
            if sub.accept(&frame) == Accept::Send {
                out.push(frame.text);
            }
        }
        let next = if more {
            Some(sub.position())
        } else {
            // Caught up with the database: flush what arrived meanwhile, or
            // read on if it does not start right after what was sent.
            let (buffered, gap) = sub.drain();
            out.extend(buffered.into_iter().map(|f| f.text));
            gap.then(|| sub.position())
        };
        for text in out {
            self.send(ctx, text);
        }
        if let Some(after) = next {
            self.fetch_page(name.clone(), generation, after, ctx);
        }
    }

    /// Reads the page after `after`. Spawned from the actor, it runs only when
    /// the actor is polled, i.e. once the socket took the previous page.
    fn fetch_page(
        &mut self,
        name: Arc<str>,
        generation: u64,
        after: i64,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some(sub) = self.live_sub(&name, generation) else {
            return;
        };
        sub.start_catch_up();
        let channel = sub.channel.clone();
        let pool = self.state.pool.clone();
        let fut = async move {
            let mut conn = pool.get().await?;
            let items = replay::page(&mut conn, &channel, after, PAGE).await?;
            Ok::<_, HubError>(items)
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(items) => {
                let more = items.len() as i64 == PAGE;
                act.write_page(&name, generation, items, more, ctx);
            }
            Err(e) => {
                tracing::warn!(error = %e, channel = %name, "replay failed");
                act.fail_sub(&name, generation, None, e, ctx);
            }
        }));
    }

    /// The initial load failed: the subscription is dropped and the client told.
    fn fail_sub(
        &mut self,
        name: &Arc<str>,
        generation: u64,
        reference: Option<i64>,
        e: HubError,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if self.live_sub(name, generation).is_some() {
            self.drop_sub(name);
            self.reply_error(ctx, reference, &e);
        }
    }

    fn drop_sub(&mut self, name: &Arc<str>) {
        let Some(sub) = self.subs.remove(name) else {
            return;
        };
        self.state.hub.do_send(hub::Unsubscribe {
            session: self.id.clone(),
            channel: name.clone(),
        });
        if let Some(scope) = sub.channel.scope() {
            if let Some(n) = self.scopes.get_mut(scope) {
                *n -= 1;
                if *n == 0 {
                    self.scopes.remove(scope);
                    self.state.presence.do_send(presence::Exit {
                        scope: scope.to_string(),
                        session: self.id.clone(),
                    });
                }
            }
        }
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
                if !last && !self.within_rate(ctx) {
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
                if self.within_rate(ctx) {
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

impl WsSession {
    /// Counts a frame that gets no reply of its own against the command
    /// rate; repeated abuse closes the connection (1008).
    fn within_rate(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        if self.limiter.check().is_ok() {
            return true;
        }
        if self.abuse.check().is_err() {
            self.close(ctx, 1008, "repeated abuse: command rate exceeded");
        }
        false
    }

    fn on_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.on_text_rejected(
            ctx,
            HubError::BadRequest("binary frames are not supported; send JSON text".into()),
        );
    }

    /// A frame that is not a command still counts against the rate limit.
    fn on_text_rejected(&mut self, ctx: &mut ws::WebsocketContext<Self>, e: HubError) {
        if self.limiter.check().is_err() {
            if self.abuse.check().is_err() {
                return self.close(ctx, 1008, "repeated abuse: command rate exceeded");
            }
            return self.reply_error(
                ctx,
                None,
                &HubError::RateLimited("too many commands; slow down".into()),
            );
        }
        self.reply_error(ctx, None, &e);
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let bytes: usize = msg.frames.iter().map(|f| f.text.len()).sum();
        self.outbox.release(msg.frames.len(), bytes);
        self.state
            .metrics
            .delivery_seconds
            .observe(msg.sent.elapsed().as_secs_f64());
        let Some(sub) = self.subs.get_mut(&msg.channel) else {
            return;
        };
        let mut out = Vec::new();
        let mut gap_after = None;
        for frame in msg.frames.iter() {
            match sub.offer(frame) {
                Accept::Send => out.push(frame.text.clone()),
                Accept::Skip => {}
                Accept::Gap => gap_after = Some(sub.position()),
            }
        }
        let generation = sub.generation;
        for text in out {
            ctx.text(text);
        }
        if let Some(after) = gap_after {
            self.fetch_page(msg.channel, generation, after, ctx);
        }
    }
}

impl Handler<Resync> for WsSession {
    type Result = ();
    /// Frames may have been missed (the broker reconnected): read every live
    /// recoverable channel from its position; what is already sent is skipped.
    fn handle(&mut self, _: Resync, ctx: &mut Self::Context) {
        let due: Vec<(Arc<str>, u64, i64)> = self
            .subs
            .iter()
            .filter(|(_, s)| s.can_resync())
            .map(|(name, s)| (name.clone(), s.generation, s.position()))
            .collect();
        for (name, generation, after) in due {
            self.fetch_page(name, generation, after, ctx);
        }
    }
}

impl Handler<Close> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        self.close(ctx, msg.code, msg.reason);
    }
}
