//! The local subscription registry: channel → sessions on this replica, and
//! delivery of pre-encoded frames to them.
//!
//! Contract:
//! - A frame is encoded once by its producer; the hub hands the same bytes
//!   (`Arc`) to every subscriber with `try_send`, never `do_send`.
//! - A session whose unsent output would pass the configured frames/bytes
//!   limit, or whose mailbox is full, is a slow consumer: it is dropped from
//!   the registry at once (nobody waits for it), told to close with 1008, and
//!   its socket is shut down shortly after in case it is frozen.
//! - The first local subscriber of a channel and the last one leaving are
//!   reported to the broker (interest) and, for `stats:` channels, to the
//!   stats aggregator (which scopes to keep fresh).
//! - A busy channel's publishes are coalesced for a few milliseconds
//!   ([`coalesce`]), in order; an isolated publish is delivered at once.
//!
//! Cost: a channel's entry holds each subscriber's handle, so a publish is
//! one lookup of the channel and then a walk over its subscribers; both maps
//! use foldhash (seeded per process) rather than SipHash.

pub mod coalesce;
pub mod outbox;
pub mod reorder;

use crate::broker::Broker;
use crate::frame::{Frames, Publish, Resync};
use crate::metrics::Metrics;
use crate::protocol::Channel;
use actix::prelude::*;
use coalesce::{Coalescer, Offer};
use foldhash::fast::RandomState;
use outbox::{Outbox, Socket};
use reorder::Reorder;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A session's id, `s_…`.
pub type SessionId = Arc<str>;

/// Frames for a session (hub → session).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub channel: Arc<str>,
    pub frames: Frames,
    /// When the hub handed it over (delivery latency).
    pub sent: std::time::Instant,
}

/// Ask a session to close (hub → session).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

/// A stats channel gained its first or lost its last local subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub scope: String,
    pub on: bool,
}

/// What the hub keeps of a connected session.
pub struct Peer {
    pub deliver: Recipient<Deliver>,
    pub close: Recipient<Close>,
    pub resync: Recipient<Resync>,
    pub outbox: Arc<Outbox>,
    pub socket: Arc<Socket>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session: SessionId,
    pub peer: Peer,
}

/// Registers a subscription; the reply means later publishes reach it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub session: SessionId,
    pub channel: Arc<str>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: SessionId,
    pub channel: Arc<str>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
}

/// Closes every session with 1001 (server shutting down); replies how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// Counts for `/metrics` and tests.
#[derive(Message)]
#[rtype(result = "HubCounts")]
pub struct Counts;

#[derive(Debug, Clone, Copy, Default)]
pub struct HubCounts {
    pub sessions: usize,
    pub subscriptions: usize,
    pub slow_consumers: u64,
}

const SHUTTING_DOWN: Close = Close {
    code: 1001,
    reason: "server shutting down",
};

/// How long a slow consumer has to close by itself before its socket is shut.
const KILL_DELAY: Duration = Duration::from_secs(1);

type Map<K, V> = HashMap<K, V, RandomState>;

struct Entry {
    peer: Arc<Peer>,
    channels: HashSet<Arc<str>, RandomState>,
}

pub struct Hub {
    sessions: Map<SessionId, Entry>,
    /// Channel → its local subscribers, each with its handle.
    channels: Map<Arc<str>, Map<SessionId, Arc<Peer>>>,
    broker: Arc<dyn Broker>,
    watcher: Recipient<Watch>,
    metrics: Arc<Metrics>,
    coalescer: Coalescer,
    reorder: Reorder,
    /// Set by `Shutdown`: sessions that connect afterwards are closed at once.
    closing: bool,
}

impl Hub {
    /// `coalesce`: the window of [`coalesce`] (zero: deliver every publish
    /// at once); `reorder`: how long [`reorder`] holds frames past a hole.
    pub fn new(
        broker: Arc<dyn Broker>,
        watcher: Recipient<Watch>,
        metrics: Arc<Metrics>,
        coalesce: Duration,
        reorder: Duration,
    ) -> Self {
        Hub {
            sessions: Map::default(),
            channels: Map::default(),
            broker,
            watcher,
            metrics,
            coalescer: Coalescer::new(coalesce),
            reorder: Reorder::new(reorder),
            closing: false,
        }
    }

    fn interest(&self, channel: &str, on: bool) {
        self.broker.interest(channel, on);
        if let Some(scope) = Channel::stats_scope(channel) {
            self.watcher.do_send(Watch {
                scope: scope.to_string(),
                on,
            });
        }
    }

    fn remove_channel(&mut self, session: &SessionId, channel: &Arc<str>) {
        if let Some(set) = self.channels.get_mut(channel) {
            set.remove(session);
            if set.is_empty() {
                self.channels.remove(channel);
                self.coalescer.forget(channel);
                self.reorder.forget(channel);
                self.interest(channel, false);
            }
        }
    }

    fn remove_session(&mut self, session: &SessionId) -> Option<Arc<Peer>> {
        let entry = self.sessions.remove(session)?;
        for channel in &entry.channels {
            self.remove_channel(session, channel);
        }
        Some(entry.peer)
    }

    fn slow_consumer(&mut self, session: &SessionId, ctx: &mut Context<Self>) {
        let Some(peer) = self.remove_session(session) else {
            return;
        };
        self.metrics.slow_consumers.inc();
        let (frames, bytes) = peer.outbox.pending();
        tracing::warn!(%session, frames, bytes, "slow consumer closed");
        let _ = peer.close.try_send(Close {
            code: 1008,
            reason: "slow consumer",
        });
        let socket = peer.socket.clone();
        ctx.run_later(KILL_DELAY, move |_, _| socket.shutdown());
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}

impl Handler<Connect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        if self.closing {
            msg.peer.close.do_send(SHUTTING_DOWN);
            return;
        }
        self.sessions.insert(
            msg.session,
            Entry {
                peer: Arc::new(msg.peer),
                channels: HashSet::default(),
            },
        );
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        let Some(entry) = self.sessions.get_mut(&msg.session) else {
            return;
        };
        if !entry.channels.insert(msg.channel.clone()) {
            return;
        }
        let set = self.channels.entry(msg.channel.clone()).or_default();
        set.insert(msg.session, entry.peer.clone());
        if set.len() == 1 {
            self.interest(&msg.channel, true);
        }
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&msg.session) {
            if entry.channels.remove(&msg.channel) {
                self.remove_channel(&msg.session, &msg.channel);
            }
        }
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.remove_session(&msg.session);
    }
}

impl Handler<Publish> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        if !self.channels.contains_key(&msg.channel) {
            return;
        }
        match self.reorder.offer(&msg.channel, msg.frames, Instant::now()) {
            reorder::Offer::Now(ready) => {
                for frames in ready {
                    self.dispatch(&msg.channel, frames, ctx);
                }
                self.metrics
                    .stages
                    .dispatch
                    .observe(msg.at.elapsed().as_secs_f64());
            }
            reorder::Offer::Held(check) => {
                self.metrics.reorder_held.inc();
                if let Some(after) = check {
                    self.check_reorder(msg.channel, after, ctx);
                }
            }
        }
    }
}

impl Hub {
    /// In order from [`reorder`]: on to the subscribers, through coalescing.
    fn dispatch(&mut self, channel: &Arc<str>, frames: Frames, ctx: &mut Context<Self>) {
        match self.coalescer.offer(channel, frames, Instant::now()) {
            Offer::Now(frames) => self.deliver(channel, frames, ctx),
            Offer::Held(Some(after)) => {
                let channel = channel.clone();
                ctx.run_later(after, move |hub, ctx| {
                    if let Some(frames) = hub.coalescer.flush(&channel, Instant::now()) {
                        hub.deliver(&channel, frames, ctx);
                    }
                });
            }
            Offer::Held(None) => {}
        }
    }

    /// The reorder window of `channel` ends: what waited for a hole that
    /// did not fill goes out, and the sessions read the hole themselves.
    fn check_reorder(&mut self, channel: Arc<str>, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, move |hub, ctx| {
            let (ready, again) = hub.reorder.due(&channel, Instant::now());
            if !ready.is_empty() {
                hub.metrics.reorder_expired.inc();
            }
            for frames in ready {
                hub.dispatch(&channel, frames, ctx);
            }
            if let Some(after) = again {
                hub.check_reorder(channel, after, ctx);
            }
        });
    }

    /// Hands `frames` to every local subscriber of `channel`.
    fn deliver(&mut self, channel: &Arc<str>, frames: Frames, ctx: &mut Context<Self>) {
        let Some(subscribers) = self.channels.get(channel) else {
            return;
        };
        let count = frames.len();
        let bytes: usize = frames.iter().map(|f| f.text.len()).sum();
        let mut slow = Vec::new();
        let sent = Instant::now();
        for (session, peer) in subscribers {
            if !peer.outbox.reserve(count, bytes) {
                slow.push(session.clone());
                continue;
            }
            let delivery = Deliver {
                channel: channel.clone(),
                frames: frames.clone(),
                sent,
            };
            if peer.deliver.try_send(delivery).is_err() {
                peer.outbox.release(count, bytes);
                slow.push(session.clone());
            }
        }
        let delivered = (subscribers.len() - slow.len()) as u64;
        self.metrics.frames_out.inc_by(delivered * count as u64);
        self.metrics
            .frames_dropped
            .inc_by((slow.len() * count) as u64);
        for session in slow {
            self.slow_consumer(&session, ctx);
        }
    }
}

impl Handler<Resync> for Hub {
    type Result = ();
    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        // Frames held for a hole go out first; the sessions then read
        // whatever is missing.
        for (channel, frames) in self.reorder.reset() {
            self.dispatch(&channel, frames, ctx);
        }
        for entry in self.sessions.values() {
            let _ = entry.peer.resync.try_send(Resync);
        }
    }
}

impl Handler<Shutdown> for Hub {
    type Result = usize;
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> usize {
        self.closing = true;
        // Frames held for a hole or by coalescing go out before the close
        // frames.
        for (channel, frames) in self.reorder.reset() {
            self.dispatch(&channel, frames, ctx);
        }
        for (channel, frames) in self.coalescer.flush_all(Instant::now()) {
            self.deliver(&channel, frames, ctx);
        }
        for entry in self.sessions.values() {
            // `do_send`: a full mailbox must not keep this one session open.
            entry.peer.close.do_send(SHUTTING_DOWN);
        }
        self.sessions.len()
    }
}

impl Handler<Counts> for Hub {
    type Result = MessageResult<Counts>;
    fn handle(&mut self, _: Counts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(HubCounts {
            sessions: self.sessions.len(),
            subscriptions: self.channels.values().map(HashMap::len).sum(),
            slow_consumers: self.metrics.slow_consumers.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Outbound;
    use std::sync::Mutex;

    /// Records what the hub hands a session.
    #[derive(Default)]
    struct Recorder(Arc<Mutex<Vec<i64>>>);
    impl Actor for Recorder {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
            let mut seen = self.0.lock().unwrap();
            seen.extend(msg.frames.iter().map(|f| f.seq));
        }
    }
    impl Handler<Close> for Recorder {
        type Result = ();
        fn handle(&mut self, _: Close, _: &mut Context<Self>) {}
    }
    impl Handler<Resync> for Recorder {
        type Result = ();
        fn handle(&mut self, _: Resync, _: &mut Context<Self>) {}
    }
    impl Handler<Watch> for Recorder {
        type Result = ();
        fn handle(&mut self, _: Watch, _: &mut Context<Self>) {}
    }

    struct NoBroker;
    impl Broker for NoBroker {
        fn publish(&self, _: &str, _: Frames) {}
        fn name(&self) -> &'static str {
            "none"
        }
    }

    fn publish(channel: &Arc<str>, seqs: &[i64]) -> Publish {
        let frames: Frames = seqs
            .iter()
            .map(|&seq| Outbound {
                seq,
                text: seq.to_string().into(),
            })
            .collect();
        Publish::new(channel.clone(), frames)
    }

    #[actix_web::test]
    async fn frames_past_a_hole_reach_sessions_in_order_or_after_the_window() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let session = Recorder(seen.clone()).start();
        let metrics = Arc::new(Metrics::new());
        let window = Duration::from_millis(40);
        let hub = Hub::new(
            Arc::new(NoBroker),
            session.clone().recipient(),
            metrics.clone(),
            Duration::ZERO,
            window,
        )
        .start();
        let id: SessionId = "s_test".into();
        let channel: Arc<str> = "feed:demo".into();
        hub.do_send(Connect {
            session: id.clone(),
            peer: Peer {
                deliver: session.clone().recipient(),
                close: session.clone().recipient(),
                resync: session.clone().recipient(),
                outbox: Arc::new(Outbox::new(100, 1 << 20)),
                socket: Arc::new(Socket::new(None)),
            },
        });
        hub.do_send(Subscribe {
            session: id,
            channel: channel.clone(),
        });
        // 2 (relayed) comes after 3 (local): the session still gets 1, 2, 3.
        for seqs in [&[1][..], &[3], &[2]] {
            hub.do_send(publish(&channel, seqs));
        }
        // 5 waits for 4, which never comes: it goes out when the window ends.
        hub.send(publish(&channel, &[5])).await.unwrap();
        actix::clock::sleep(Duration::from_millis(10)).await;
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        actix::clock::sleep(window * 2).await;
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 5]);
        assert_eq!(metrics.reorder_held.get(), 2);
        assert_eq!(metrics.reorder_expired.get(), 1);
    }
}
