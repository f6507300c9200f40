//! Redis pub/sub broker and presence manager: fan-out across replicas.
//!
//! - Frames are delivered to the local hub at once and, when their channel
//!   is relayed, published to Redis once, on `{prefix}:c:{channel}`, encoded
//!   once ([`wire`]). A replica drops its own messages.
//! - A replica subscribes only to relayed channels with local interest, plus
//!   `{prefix}:gossip` for everything else between replicas: notices, shared
//!   presence, and the `hello` a replica sends each time its subscription
//!   comes up, which the others answer by sharing their whole presence
//!   (delivered to them as [`RemotePresence::ViewWanted`]).
//! - Writes are queued (bounded; a full queue drops and counts) and sent by
//!   one task as pipelines. Both connections reconnect by themselves with
//!   backoff; while Redis is down, local delivery, ingest and commits go on,
//!   `/ready` reports it, and after the reconnection the hub is told to
//!   resync so sessions read what they missed from PostgreSQL.
//! - [`Target`] picks the Redis: one (`REDIS_URL`: `PUBLISH`/`SUBSCRIBE`,
//!   the writer and subscriber below) or a Redis Cluster
//!   (`PULSEHUB_REDIS_CLUSTER_NODES`: sharded pub/sub, [`cluster`]). The
//!   broker's side (`publish`, `interest`, claims, gossip) is the same for
//!   both; only the two tasks differ, so one Redis pays nothing for the
//!   cluster.
//!
//! [`RemotePresence::ViewWanted`]: super::presence::RemotePresence::ViewWanted

mod cluster;
mod ops;
mod relay;
pub mod slots;
pub mod wire;

use super::presence::PresenceManager;
use super::{Broker, Health, Inbound, Notice};
use crate::frame::{Frames, Publish};
use crate::metrics::Metrics;
use crate::protocol::{Channel, PresenceUser};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use ops::{
    call, drop_batch, send_batch, Op, Shared, BACKOFF_MAX, BACKOFF_MIN, PING_EVERY, PIPELINE,
    QUEUE, TIMEOUT,
};
use relay::Relay;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wire::{encode_frames, Envelope, Gossip};

/// Where the broker's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One Redis (or a proxy in front of several): `PUBLISH`/`SUBSCRIBE`.
    Single(String),
    /// A Redis Cluster, by seed URLs: `SPUBLISH`/`SSUBSCRIBE` (see
    /// [`cluster`]).
    Cluster(Vec<String>),
}

pub struct RedisBroker {
    instance: Arc<str>,
    prefix: Arc<str>,
    hub: actix::Recipient<Publish>,
    ops: mpsc::Sender<Op>,
    interest: mpsc::UnboundedSender<(String, bool)>,
    shared: Arc<Shared>,
}

impl RedisBroker {
    /// Starts the writer and subscriber tasks on the current (actix) runtime.
    /// Never fails on an unreachable Redis: it keeps trying.
    pub fn start(
        target: &Target,
        prefix: &str,
        instance: &str,
        inbound: Inbound,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let (ops, ops_rx) = mpsc::channel(QUEUE);
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            subscribed: AtomicBool::new(false),
            writable: AtomicBool::new(false),
            error: Mutex::new(String::new()),
            metrics,
        });
        let broker = RedisBroker {
            instance: instance.into(),
            prefix: prefix.into(),
            hub: inbound.hub.clone(),
            ops,
            interest,
            shared: shared.clone(),
        };
        let relay = Relay {
            prefix: broker.prefix.clone(),
            instance: broker.instance.clone(),
            gossip_channel: format!("{prefix}:gossip"),
            inbound,
            shared: shared.clone(),
            ops: broker.ops.clone(),
        };
        match target {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                actix::spawn(writer(
                    client.clone(),
                    ops_rx,
                    shared,
                    broker.instance.clone(),
                ));
                actix::spawn(subscriber(Subscriber {
                    client,
                    relay,
                    interest: interest_rx,
                    wanted: HashSet::new(),
                }));
            }
            Target::Cluster(seeds) => {
                let topology = Arc::new(slots::Topology::new(seeds)?);
                actix::spawn(cluster::writer(
                    topology.clone(),
                    ops_rx,
                    shared,
                    broker.instance.clone(),
                    relay.gossip_channel.clone(),
                ));
                actix::spawn(cluster::Subscriber::new(topology, relay, interest_rx).run());
            }
        }
        Ok(broker)
    }

    fn send(&self, op: Op) {
        if self.ops.try_send(op).is_err() {
            self.shared.metrics.broker_dropped.inc();
        }
    }

    fn gossip(&self, gossip: Gossip) {
        if let Some(payload) = Envelope::encode(&self.instance, gossip) {
            self.send(Op::Publish(
                format!("{}:gossip", self.prefix),
                payload,
                None,
            ));
        }
    }
}

/// Whether frames of `channel` go through Redis. Presence frames do not:
/// every replica makes its own from the merged view.
fn relayed(channel: &str) -> bool {
    Channel::parse(channel).map_or(true, |c| c.relayed())
}

impl Broker for RedisBroker {
    fn publish(&self, channel: &str, frames: Frames) {
        let payload = relayed(channel).then(|| encode_frames(&self.instance, &frames));
        let publish = Publish::new(channel.into(), frames);
        let at = publish.at;
        self.hub.do_send(publish);
        if let Some(payload) = payload {
            self.send(Op::Publish(
                format!("{}:c:{channel}", self.prefix),
                payload,
                Some(at),
            ));
        }
    }

    fn interest(&self, channel: &str, interested: bool) {
        if !relayed(channel) {
            return;
        }
        let _ = self
            .interest
            .send((format!("{}:c:{channel}", self.prefix), interested));
    }

    fn notify(&self, notice: Notice) {
        match notice {
            Notice::Committed { scopes } => self.gossip(Gossip::Committed { scopes }),
        }
    }

    fn claim(&self, key: &str, ttl: Duration) -> BoxFuture<'static, bool> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Claim(format!("{}:claim:{key}", self.prefix), ttl, tx));
        // No answer (queue full, Redis down): do the work here.
        Box::pin(async move { rx.await.unwrap_or(true) })
    }

    fn health(&self) -> Health {
        if self.shared.subscribed.load(Ordering::Acquire)
            && self.shared.writable.load(Ordering::Acquire)
        {
            Health::Up
        } else {
            let e = self
                .shared
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Health::Down(if e.is_empty() { "connecting".into() } else { e })
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

impl PresenceManager for RedisBroker {
    fn share_user(&self, scope: String, id: String, user: Option<PresenceUser>) {
        self.gossip(Gossip::User { scope, id, user });
    }

    fn share_view(&self, scopes: HashMap<String, Vec<PresenceUser>>) {
        self.gossip(Gossip::View { scopes });
    }
}

/// Sends queued writes as pipelines over one connection. When the connection
/// breaks it reconnects at once (with backoff), whether or not anything is
/// waiting, so `/ready` recovers with Redis; writes queued meanwhile are
/// dropped (clients recover by offset) and claims are granted.
async fn writer(
    client: redis::Client,
    mut ops: mpsc::Receiver<Op>,
    shared: Arc<Shared>,
    instance: Arc<str>,
) {
    let mut batch = Vec::with_capacity(PIPELINE);
    loop {
        let mut conn = connect_writer(&client, &mut ops, &shared).await;
        loop {
            if ops.recv_many(&mut batch, PIPELINE).await == 0 {
                return;
            }
            if !send_batch(&mut conn, &mut batch, "PUBLISH", &shared, &instance).await {
                shared.writable.store(false, Ordering::Release);
                break;
            }
        }
    }
}

async fn connect_writer(
    client: &redis::Client,
    ops: &mut mpsc::Receiver<Op>,
    shared: &Shared,
) -> redis::aio::MultiplexedConnection {
    let mut backoff = BACKOFF_MIN;
    let mut dropped = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => {
                shared.writable.store(true, Ordering::Release);
                return c;
            }
            Ok(Err(e)) => shared.fail("connecting", e),
            Err(_) => shared.fail("connecting", "timed out"),
        }
        while let Ok(op) = ops.try_recv() {
            dropped.push(op);
        }
        drop_batch(&mut dropped, shared);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

struct Subscriber {
    client: redis::Client,
    relay: Relay,
    interest: mpsc::UnboundedReceiver<(String, bool)>,
    wanted: HashSet<String>,
}

/// Keeps one subscription connection up, subscribed to what is wanted.
async fn subscriber(mut s: Subscriber) {
    let mut backoff = BACKOFF_MIN;
    loop {
        while let Ok((channel, on)) = s.interest.try_recv() {
            s.want(channel, on);
        }
        match s.session().await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => s.relay.shared.fail("subscription", e),
        }
        s.relay.shared.subscribed.store(false, Ordering::Release);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Subscriber {
    fn want(&mut self, channel: String, on: bool) {
        if on {
            self.wanted.insert(channel);
        } else {
            self.wanted.remove(&channel);
        }
    }

    /// One connection's life; returns when it breaks.
    async fn session(&mut self) -> Result<(), String> {
        let pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();
        let mut all: Vec<String> = self.wanted.iter().cloned().collect();
        all.push(self.relay.gossip_channel.clone());
        call(sink.subscribe(all)).await?;
        self.relay.shared.subscribed.store(true, Ordering::Release);
        tracing::info!(channels = self.wanted.len(), "redis subscription up");
        self.relay.up();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return Err("connection closed".into()) };
                    self.relay.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
                }
                change = self.interest.recv() => {
                    let Some((channel, on)) = change else { return Ok(()) };
                    if on {
                        call(sink.subscribe(&channel)).await?;
                    } else {
                        call(sink.unsubscribe(&channel)).await?;
                    }
                    self.want(channel, on);
                }
                _ = ping.tick() => {
                    call(sink.ping::<redis::Value>()).await?;
                }
            }
        }
    }
}
