//! Subscribing: checks (channel name, authorization, the per-connection
//! limit), presence membership per scope, then registration with the hub
//! *first* and the channel's initial content second (stats snapshot,
//! presence `sync`, or replay / recent items), so nothing published in
//! between is lost; what the initial content already holds is dropped by
//! position ([`super::subscription`]).

use super::subscription::Sub;
use super::{WsSession, PAGE};
use crate::error::HubError;
use crate::frame::Outbound;
use crate::hub;
use crate::presence;
use crate::protocol::{encode, Channel, ServerFrame};
use crate::replay;
use crate::stats::GetStats;
use actix::prelude::*;
use actix_web_actors::ws;
use bytestring::ByteString;
use std::sync::Arc;

/// The `subscribed` reply; recoverable channels say their latest offset and
/// whether `since` was recovered.
fn subscribed(reference: Option<i64>, channel: &str, recovery: Option<(i64, bool)>) -> ByteString {
    encode(&ServerFrame::Subscribed {
        reference,
        channel,
        offset: recovery.map(|r| r.0),
        recovered: recovery.map(|r| r.1),
    })
}

impl WsSession {
    pub(super) fn subscribe(
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
                        let subscribed = subscribed(reference, &name, None);
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
                        let subscribed = subscribed(reference, &name, None);
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
                        let recovery = (opening.latest, opening.recovered);
                        let subscribed = subscribed(reference, &name, Some(recovery));
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
    pub(super) fn live_sub(&mut self, name: &str, generation: u64) -> Option<&mut Sub> {
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

    /// The initial load failed: the subscription is dropped and the client told.
    pub(super) fn fail_sub(
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

    pub(super) fn drop_sub(&mut self, name: &Arc<str>) {
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
