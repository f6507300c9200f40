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

mod cluster;
pub mod slots;
pub mod wire;

use super::presence::{PresenceManager, RemotePresence};
use super::{Broker, Health, Inbound, Notice};
use crate::frame::{Frames, Publish, Resync};
use crate::metrics::Metrics;
use crate::protocol::{Channel, PresenceUser};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use wire::{decode_frames, encode_frames, unix_micros, Envelope, Gossip};

/// Writes waiting for Redis; beyond this they are dropped (and counted).
const QUEUE: usize = 65_536;
/// Writes sent in one pipeline at most.
const PIPELINE: usize = 512;
/// Every Redis call gives up after this.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle subscription connection is checked.
const PING_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Where the broker's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One Redis (or a proxy in front of several): `PUBLISH`/`SUBSCRIBE`.
    Single(String),
    /// A Redis Cluster, by seed URLs: `SPUBLISH`/`SSUBSCRIBE` (see
    /// [`cluster`]).
    Cluster(Vec<String>),
}

enum Op {
    /// Channel, payload, and for frames when they were handed over
    /// (the `publish` stage; gossip is not timed).
    Publish(String, Bytes, Option<Instant>),
    Claim(String, Duration, oneshot::Sender<bool>),
}

struct Shared {
    subscribed: AtomicBool,
    writable: AtomicBool,
    error: Mutex<String>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        self.metrics.broker_errors.inc();
        let msg = format!("{what}: {e}");
        tracing::warn!(error = %msg, "redis");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }
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

/// One pipeline, publishing with `publish` (`PUBLISH`, or `SPUBLISH` on a
/// cluster node); `false` when the connection must be replaced.
async fn send_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &mut Vec<Op>,
    publish: &'static str,
    shared: &Shared,
    instance: &str,
) -> bool {
    let mut pipe = redis::pipe();
    let mut claims = Vec::new();
    let mut publishes = 0u64;
    let mut handed = Vec::new();
    for op in batch.drain(..) {
        match op {
            Op::Publish(channel, payload, at) => {
                pipe.cmd(publish)
                    .arg(channel)
                    .arg(payload.as_ref())
                    .ignore();
                publishes += 1;
                handed.extend(at);
            }
            Op::Claim(key, ttl, reply) => {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64);
                claims.push(reply);
            }
        }
    }
    match tokio::time::timeout(TIMEOUT, pipe.query_async::<Vec<redis::Value>>(conn)).await {
        Ok(Ok(values)) => {
            shared.metrics.broker_published.inc_by(publishes);
            for at in handed {
                shared
                    .metrics
                    .stages
                    .publish
                    .observe(at.elapsed().as_secs_f64());
            }
            for (reply, value) in claims.into_iter().zip(values) {
                let _ = reply.send(!matches!(value, redis::Value::Nil));
            }
            true
        }
        outcome => {
            match outcome {
                Ok(Err(e)) => shared.fail("publishing", e),
                _ => shared.fail("publishing", "timed out"),
            }
            shared.metrics.broker_dropped.inc_by(publishes);
            for reply in claims {
                let _ = reply.send(true);
            }
            false
        }
    }
}

fn drop_batch(batch: &mut Vec<Op>, shared: &Shared) {
    for op in batch.drain(..) {
        match op {
            Op::Publish(..) => {
                shared.metrics.broker_dropped.inc();
            }
            Op::Claim(_, _, reply) => {
                let _ = reply.send(true);
            }
        }
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

/// What both subscribers (one Redis, a cluster) do with what arrives:
/// frames to the hub, gossip to presence and stats, and the resync.
struct Relay {
    prefix: Arc<str>,
    instance: Arc<str>,
    gossip_channel: String,
    inbound: Inbound,
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
}

impl Relay {
    /// The subscription (re)covers everything wanted: anything published
    /// while it did not is in PostgreSQL, and the other replicas are asked
    /// for their presence.
    fn up(&self) {
        self.resync();
        self.hello();
    }

    /// Frames may have been missed: sessions read the gap from PostgreSQL.
    fn resync(&self) {
        self.inbound.resync.do_send(Resync);
    }

    /// Asks the other replicas for their whole presence.
    fn hello(&self) {
        self.gossip(Gossip::Hello);
    }

    fn gossip(&self, gossip: Gossip) {
        if let Some(payload) = Envelope::encode(&self.instance, gossip) {
            let _ = self.ops.try_send(Op::Publish(
                format!("{}:gossip", self.prefix),
                payload,
                None,
            ));
        }
    }

    fn dispatch(&self, channel: &str, payload: &[u8]) {
        self.shared.metrics.broker_received.inc();
        if channel == self.gossip_channel {
            let Some(Envelope {
                i: instance,
                gossip,
            }) = Envelope::decode(payload)
            else {
                return;
            };
            if *instance == *self.instance {
                return;
            }
            let presence = &self.inbound.presence;
            match gossip {
                Gossip::Hello => presence.do_send(RemotePresence::ViewWanted),
                Gossip::User { scope, id, user } => presence.do_send(RemotePresence::User {
                    instance,
                    scope,
                    id,
                    user,
                }),
                Gossip::View { scopes } => {
                    presence.do_send(RemotePresence::View { instance, scopes })
                }
                Gossip::Committed { scopes } => {
                    self.inbound.notices.do_send(Notice::Committed { scopes })
                }
                Gossip::Dropped => self.resync(),
            }
            return;
        }
        let Some(name) = channel
            .strip_prefix(&*self.prefix)
            .and_then(|c| c.strip_prefix(":c:"))
        else {
            return;
        };
        match decode_frames(Bytes::copy_from_slice(payload)) {
            Some(relay) if *relay.origin != *self.instance => {
                if let Some(sent) = relay.sent_us {
                    let us = unix_micros().saturating_sub(sent);
                    self.shared.metrics.stages.relay.observe(us as f64 / 1e6);
                }
                self.inbound
                    .hub
                    .do_send(Publish::new(name.into(), relay.frames.into()))
            }
            Some(_) => {}
            None => tracing::warn!(channel = name, "malformed frames from redis"),
        }
    }
}

async fn call<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}
