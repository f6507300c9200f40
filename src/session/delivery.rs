//! Frames on their way to the socket: live deliveries from the hub (each
//! frame offered to its subscription, which drops duplicates and finds
//! gaps), replay pages read from PostgreSQL after the previous page went to
//! the socket (so a replay moves only as fast as the client reads; read
//! again later while PostgreSQL is unavailable), and a resync after the
//! broker reconnected.

use super::subscription::Accept;
use super::{WsSession, PAGE};
use crate::error::HubError;
use crate::frame::{Outbound, Resync};
use crate::hub::Deliver;
use crate::replay;
use actix::prelude::*;
use actix_web_actors::ws;
use std::sync::Arc;
use std::time::Duration;

/// First wait before a page is read again after `unavailable`; it doubles
/// per attempt up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(4);

impl WsSession {
    /// Writes one replay page, then either reads the next page (after this
    /// one has gone to the socket) or switches the subscription to live.
    pub(super) fn write_page(
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
    pub(super) fn fetch_page(
        &mut self,
        name: Arc<str>,
        generation: u64,
        after: i64,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        self.read_page(name, generation, after, 0, ctx);
    }

    /// One attempt at reading a page. While PostgreSQL is unavailable the
    /// subscription is kept (catching up, live frames wait in its buffer)
    /// and the same page is read again later, with backoff: a restart of
    /// the database delays a gap's filling, it does not end subscriptions.
    /// Any other failure ends the subscription with an `error` frame.
    fn read_page(
        &mut self,
        name: Arc<str>,
        generation: u64,
        after: i64,
        attempt: u32,
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
            Err(HubError::Unavailable(why)) => {
                if attempt == 0 {
                    tracing::warn!(%why, channel = %name, "replay waits for the database");
                }
                let wait = (RETRY_FIRST * 2u32.saturating_pow(attempt.min(8))).min(RETRY_MAX);
                ctx.run_later(wait, move |act, ctx| {
                    act.read_page(name, generation, after, attempt + 1, ctx)
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, channel = %name, "replay failed");
                act.fail_sub(&name, generation, None, e, ctx);
            }
        }));
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let bytes: usize = msg.frames.iter().map(|f| f.text.len()).sum();
        self.outbox.release(msg.frames.len(), bytes);
        self.state
            .metrics
            .stages
            .write
            .observe(msg.sent.elapsed().as_secs_f64());
        let Some(sub) = self.subs.get_mut(&msg.channel) else {
            return;
        };
        let mut gap_after = None;
        for frame in msg.frames.iter() {
            match sub.offer(frame) {
                Accept::Send => ctx.text(frame.text.clone()),
                Accept::Skip => {}
                Accept::Gap => gap_after = Some(sub.position()),
            }
        }
        let generation = sub.generation;
        if let Some(after) = gap_after {
            self.state.metrics.gap_reads.inc();
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
