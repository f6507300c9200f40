//! The Redis broker on a Redis Cluster (`PULSEHUB_REDIS_CLUSTER_NODES`):
//! sharded pub/sub, so a frame reaches only the shard that owns its
//! channel's slot instead of every node of the cluster.
//!
//! What changes against one Redis, and what does not:
//! - Same channels (`{prefix}:c:{channel}`, `{prefix}:gossip`), same
//!   payloads ([`super::wire`]), same queue and pipelines; but `SPUBLISH`
//!   and `SSUBSCRIBE` (Redis ≥ 7). Each channel hashes on its whole name
//!   (no hash tag), so channels spread over the shards; the gossip channel
//!   is one channel, so it lives on one shard (it carries presence and
//!   commit notices, not frames). Claims (`SET NX PX` on
//!   `{prefix}:claim:{key}`) are single keys and go to their slot's master.
//!   No operation touches two keys, so nothing needs a hash tag; a prefix
//!   must not contain `{`…`}` (it would put every channel in one slot).
//! - The slot map ([`super::slots`]: `CLUSTER SLOTS`, slots computed here
//!   with CRC16) is shared by the writer and the subscriber, read at start,
//!   after any failure, and every [`REFRESH_EVERY`].
//! - Writer: each batch is split by master, one pipeline per master, sent
//!   concurrently over one plain connection per master; the batches stay in
//!   order, so one channel's frames do too. A failed pipeline (node down,
//!   `MOVED` after a slot move, `CLUSTERDOWN`) drops its writes (counted;
//!   claims granted), as on one Redis, and the map is read again; until
//!   every master answers, the writer re-checks them with backoff and
//!   `/ready` reports the broker down. Once they do, it gossips `dropped`:
//!   the other replicas' subscriptions may never have broken (the shard
//!   that failed was not theirs to listen to, or came back before they
//!   noticed), so they resync on that word instead.
//! - Subscriber: one RESP3 connection per master (so a newly wanted
//!   channel is one `SSUBSCRIBE` away, as on one Redis), its push messages
//!   (`smessage`, `sunsubscribe`, disconnection) tagged with the node and
//!   the connection's generation. A connection
//!   that breaks (its master died), a `sunsubscribe` the server sent by
//!   itself (its slot moved), a failed `PING`, or a periodic map read that
//!   shows a channel's slot on another master, all lead to the same repair:
//!   read the map, connect to every master that has no link (all at once),
//!   subscribe each wanted channel at its slot's master (one channel per
//!   `SSUBSCRIBE`: channels of different slots cannot share one; whatever
//!   can be subscribed is, even while one master does not answer), and
//!   once everything wanted is
//!   subscribed again send [`Resync`](crate::frame::Resync) so sessions
//!   read what they missed from PostgreSQL by offset, exactly as after a
//!   single Redis comes back. When the gossip channel was subscribed anew,
//!   the other replicas are asked for their presence (`hello`).
//! - A shard's failover: its master's connections break at once; the
//!   cluster promotes a replica after `cluster-node-timeout` and an
//!   election; until then the map still names the dead master and
//!   connecting fails, so the repair is retried with backoff (at most
//!   [`RETRY_MAX`] apart). Writes to that shard meanwhile are dropped;
//!   every replica's clients get them back from PostgreSQL on the resync
//!   that follows the resubscription, or on the next frame of the channel
//!   (a gap).
//!
//! Why not redis-rs's cluster client (`cluster-async`, which has
//! `ssubscribe` with a RESP3 push sender and resubscribes by itself)? Read
//! in its source (1.8.1): it does not say when a resubscription is
//! complete, which is when `Resync` must be sent (sooner loses frames); we
//! found no handling of an unsolicited `sunsubscribe` (a slot move) beyond
//! recording it like a confirmation, so such a subscription is not made
//! again; and it reads the slot map only when a request fails, so a
//! replica that only listens to a shard would not notice its failover.
//! Owning the slot map and one connection per master makes each of these a
//! decision here. (An unsolicited `sunsubscribe` can also be taken by a
//! multiplexed connection as the reply to the request in flight; this is
//! why such a link is dropped whole rather than kept.)

use super::ops::{
    call, drop_batch, send_batch, Op, Shared, BACKOFF_MIN, PING_EVERY, PIPELINE, TIMEOUT,
};
use super::relay::Relay;
use super::slots::{Node, SlotMap, Topology};
use super::wire::{Envelope, Gossip};
use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A failed node is tried again at most this far apart: a failover takes a
/// second or more, and this bounds how long delivery waits after it (a
/// retry is a refused connection and a `CLUSTER SLOTS`: cheap).
const RETRY_MAX: Duration = Duration::from_millis(500);
/// The slot map is read this often even when nothing failed (a manual
/// failover or a slot move that no connection noticed).
const REFRESH_EVERY: Duration = Duration::from_secs(5);

async fn connect(
    topology: &Topology,
    node: &Node,
    resp3: bool,
    config: AsyncConnectionConfig,
) -> Result<MultiplexedConnection, String> {
    let client =
        redis::Client::open(topology.node_info(node, resp3)).map_err(|e| format!("{node}: {e}"))?;
    let config = config.set_connection_timeout(Some(TIMEOUT));
    match tokio::time::timeout(
        TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("{node}: {e}")),
        Err(_) => Err(format!("{node}: connect timed out")),
    }
}

async fn ping(mut conn: MultiplexedConnection) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async::<Value>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Sends queued writes, each batch as one pipeline per master.
pub async fn writer(
    topology: Arc<Topology>,
    mut ops: mpsc::Receiver<Op>,
    shared: Arc<Shared>,
    instance: Arc<str>,
    gossip_channel: String,
) {
    let mut conns: HashMap<Node, MultiplexedConnection> = HashMap::new();
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut healthy = false;
    let mut backoff = BACKOFF_MIN;
    // When the masters are checked again while not healthy.
    let mut check_at = Instant::now();
    // Writes were dropped and the other replicas not told yet.
    let mut owed = false;
    let dropped = Envelope::encode(&instance, Gossip::Dropped);
    loop {
        if !healthy && Instant::now() >= check_at {
            match check_masters(&topology, &mut conns).await {
                Ok(()) => {
                    healthy = true;
                    backoff = BACKOFF_MIN;
                    shared.writable.store(true, Ordering::Release);
                }
                Err(e) => {
                    shared.fail("publishing", e);
                    shared.writable.store(false, Ordering::Release);
                    check_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        if owed && healthy {
            // Frames were dropped while the subscribers elsewhere may have
            // stayed up (nothing tells them to resync): say so first.
            if let (Some(payload), Some(map)) = (&dropped, topology.current()) {
                let mut notice = vec![Op::Publish(gossip_channel.clone(), payload.clone(), None)];
                let sent =
                    send_by_master(&map, &topology, &mut conns, &mut notice, &shared, &instance)
                        .await;
                owed = !sent;
                healthy = sent;
            }
        }
        let n = if healthy {
            ops.recv_many(&mut batch, PIPELINE).await
        } else {
            // Keep publishing to the masters that answer; check them all
            // again when due, even when nothing is written.
            tokio::select! {
                n = ops.recv_many(&mut batch, PIPELINE) => n,
                _ = tokio::time::sleep_until(check_at.into()) => continue,
            }
        };
        if n == 0 {
            return;
        }
        let map = match topology.current() {
            Some(map) => map,
            None => {
                drop_batch(&mut batch, &shared);
                owed = true;
                continue;
            }
        };
        if !send_by_master(&map, &topology, &mut conns, &mut batch, &shared, &instance).await {
            healthy = false;
            owed = true;
            shared.writable.store(false, Ordering::Release);
        }
    }
}

/// Reads the slot map and `PING`s every master (connecting where needed).
async fn check_masters(
    topology: &Topology,
    conns: &mut HashMap<Node, MultiplexedConnection>,
) -> Result<(), String> {
    let map = topology.refresh().await?;
    let masters = map.masters();
    conns.retain(|node, _| masters.contains(node));
    let absent: Vec<&Node> = masters.iter().filter(|n| !conns.contains_key(*n)).collect();
    let opened = join_all(
        absent
            .iter()
            .map(|node| connect(topology, node, false, AsyncConnectionConfig::new())),
    )
    .await;
    let mut failed = None;
    for (node, conn) in absent.into_iter().zip(opened) {
        match conn {
            Ok(conn) => {
                conns.insert(node.clone(), conn);
            }
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let pings = masters.iter().map(|node| {
        let conn = conns.get(node).cloned();
        async move {
            match conn {
                Some(conn) => ping(conn).await.map_err(|e| format!("{node}: {e}")),
                None => Err(format!("{node}: not connected")),
            }
        }
    });
    for (node, result) in masters.iter().zip(join_all(pings).await) {
        if let Err(e) = result {
            conns.remove(node);
            return Err(e);
        }
    }
    Ok(())
}

/// One batch: split by the master of each write's key, one pipeline per
/// master, all sent at once. `false` when any write failed.
async fn send_by_master(
    map: &SlotMap,
    topology: &Topology,
    conns: &mut HashMap<Node, MultiplexedConnection>,
    batch: &mut Vec<Op>,
    shared: &Shared,
    instance: &str,
) -> bool {
    let mut ok = true;
    let mut groups: HashMap<Node, Vec<Op>> = HashMap::new();
    for op in batch.drain(..) {
        let key = match &op {
            Op::Publish(channel, ..) => channel.as_bytes(),
            Op::Claim(key, ..) => key.as_bytes(),
        };
        match map.master_of(key) {
            Some(node) => groups.entry(node.clone()).or_default().push(op),
            None => {
                ok = false;
                drop_batch(&mut vec![op], shared);
            }
        }
    }
    let mut sends = Vec::with_capacity(groups.len());
    for (node, mut ops) in groups {
        let conn = match conns.get(&node) {
            Some(conn) => conn.clone(),
            None => match connect(topology, &node, false, AsyncConnectionConfig::new()).await {
                Ok(conn) => {
                    conns.insert(node.clone(), conn.clone());
                    conn
                }
                Err(e) => {
                    shared.fail("connecting", e);
                    drop_batch(&mut ops, shared);
                    ok = false;
                    continue;
                }
            },
        };
        sends.push(async move {
            let mut conn = conn;
            let sent = send_batch(&mut conn, &mut ops, "SPUBLISH", shared, instance).await;
            (node, sent)
        });
    }
    for (node, sent) in join_all(sends).await {
        if !sent {
            conns.remove(&node);
            ok = false;
        }
    }
    ok
}

/// One subscription connection, to one master.
struct Link {
    generation: u64,
    conn: MultiplexedConnection,
    /// Subscribed here, as confirmed.
    channels: HashSet<String>,
}

/// Push messages of every link: from which node, which connection.
type Push = (Node, u64, PushInfo);

/// Keeps every wanted channel subscribed at the master owning its slot.
pub struct Subscriber {
    topology: Arc<Topology>,
    relay: Relay,
    interest: mpsc::UnboundedReceiver<(String, bool)>,
    wanted: HashSet<String>,
    links: HashMap<Node, Link>,
    pushes: mpsc::UnboundedSender<Push>,
    generation: u64,
    /// Something may have been published that no link received, since the
    /// last time everything wanted was subscribed: resync when it is again.
    lost: bool,
}

impl Subscriber {
    pub fn new(
        topology: Arc<Topology>,
        relay: Relay,
        interest: mpsc::UnboundedReceiver<(String, bool)>,
    ) -> Subscriber {
        let wanted = HashSet::from([relay.gossip_channel.clone()]);
        Subscriber {
            topology,
            relay,
            interest,
            wanted,
            links: HashMap::new(),
            pushes: mpsc::unbounded_channel().0,
            generation: 0,
            // The first subscription resyncs too, as on one Redis.
            lost: true,
        }
    }

    pub async fn run(mut self) {
        let (tx, mut pushes) = mpsc::unbounded_channel();
        self.pushes = tx;
        let mut broken = true;
        let mut backoff = BACKOFF_MIN;
        let mut retry = Instant::now();
        let mut checked = Instant::now();
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            if broken && Instant::now() >= retry {
                match self.repair().await {
                    Ok(()) => {
                        broken = false;
                        backoff = BACKOFF_MIN;
                        checked = Instant::now();
                    }
                    Err(e) => {
                        self.relay.shared.fail("subscription", e);
                        retry = Instant::now() + backoff;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
            tokio::select! {
                Some((node, generation, push)) = pushes.recv() => {
                    if self.on_push(&node, generation, push) {
                        broken = true;
                    }
                }
                change = self.interest.recv() => {
                    let Some((channel, on)) = change else { return };
                    if let Err(e) = self.want(channel, on, broken).await {
                        self.relay.shared.fail("subscription", e);
                        broken = true;
                    }
                }
                _ = tick.tick(), if !broken => {
                    if let Err(e) = self.ping_links().await {
                        self.relay.shared.fail("subscription", e);
                        broken = true;
                    } else if checked.elapsed() >= REFRESH_EVERY {
                        checked = Instant::now();
                        if self.misplaced().await {
                            broken = true;
                        }
                    }
                }
                _ = tokio::time::sleep_until(retry.into()), if broken => {}
            }
            if broken {
                self.relay.shared.subscribed.store(false, Ordering::Release);
            }
        }
    }

    /// `true` when the subscriptions need repair.
    fn on_push(&mut self, node: &Node, generation: u64, push: PushInfo) -> bool {
        match push.kind {
            PushKind::SMessage => {
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                {
                    if let Ok(channel) = std::str::from_utf8(channel) {
                        self.relay.dispatch(channel, payload);
                    }
                }
                false
            }
            PushKind::Disconnection => self.drop_link(node, generation, "connection lost"),
            PushKind::SUnsubscribe => {
                // Confirmations of our own SUNSUBSCRIBE come after the
                // channel left the link; one still on it was ended by the
                // server: its slot moved. The connection's replies may be
                // out of step after an unsolicited push, so drop it whole.
                let ended = match push.data.first() {
                    Some(Value::BulkString(c)) => std::str::from_utf8(c).ok(),
                    _ => None,
                };
                let ours = self.links.get(node).is_some_and(|l| {
                    l.generation == generation && ended.is_some_and(|c| l.channels.contains(c))
                });
                ours && self.drop_link(node, generation, "slot moved")
            }
            _ => false,
        }
    }

    /// Forgets the link to `node` if it is still connection `generation`.
    fn drop_link(&mut self, node: &Node, generation: u64, why: &str) -> bool {
        if self.links.get(node).map(|l| l.generation) != Some(generation) {
            return false;
        }
        self.links.remove(node);
        self.lost = true;
        self.relay
            .shared
            .fail("subscription", format!("{node}: {why}"));
        true
    }

    /// A change of local interest. Applied at once while nothing is
    /// broken (else the repair applies it).
    async fn want(&mut self, channel: String, on: bool, broken: bool) -> Result<(), String> {
        if on {
            if !self.wanted.insert(channel.clone()) || broken {
                return Ok(());
            }
            let node = self
                .topology
                .current()
                .and_then(|map| map.master_of(channel.as_bytes()).cloned())
                .ok_or_else(|| format!("no master for {channel}"))?;
            let Some(link) = self.links.get_mut(&node) else {
                // A master the last repair did not know (the map changed):
                // repair again, which connects to it.
                return Err(format!("{node}: not connected yet"));
            };
            match ssubscribe(&mut link.conn, std::slice::from_ref(&channel)).await {
                Ok(()) => {
                    link.channels.insert(channel);
                    Ok(())
                }
                Err(e) => {
                    // Maybe the slot moved: the repair reads the map again,
                    // and frames meanwhile come back by the resync.
                    let generation = link.generation;
                    self.drop_link(&node, generation, &e);
                    Err(format!("{node}: {e}"))
                }
            }
        } else {
            if !self.wanted.remove(&channel) {
                return Ok(());
            }
            let Some((node, link)) = self
                .links
                .iter_mut()
                .find(|(_, l)| l.channels.contains(&channel))
            else {
                return Ok(());
            };
            link.channels.remove(&channel);
            let result = call(
                redis::cmd("SUNSUBSCRIBE")
                    .arg(&channel)
                    .query_async::<Value>(&mut link.conn),
            )
            .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) => {
                    let (node, generation) = (node.clone(), link.generation);
                    self.drop_link(&node, generation, &e);
                    Err(format!("{node}: {e}"))
                }
            }
        }
    }

    /// Subscribes everything wanted at the masters that now own it; then
    /// resyncs if anything may have been missed.
    async fn repair(&mut self) -> Result<(), String> {
        let map = self.topology.refresh().await?;
        // A link to every master, even one that owns nothing wanted yet, so
        // a channel wanted later is one `SSUBSCRIBE` away, as on one Redis.
        let mut placed: HashMap<Node, HashSet<String>> = map
            .masters()
            .into_iter()
            .map(|node| (node, HashSet::new()))
            .collect();
        for channel in &self.wanted {
            let node = map
                .master_of(channel.as_bytes())
                .ok_or_else(|| format!("no master for {channel}"))?;
            placed
                .entry(node.clone())
                .or_default()
                .insert(channel.clone());
        }
        // Links to nodes that are no longer masters.
        let wanted = &self.wanted;
        let mut lost = false;
        self.links.retain(|node, link| {
            let keep = placed.contains_key(node);
            if !keep {
                lost |= link.channels.iter().any(|c| wanted.contains(c));
            }
            keep
        });
        // Channels whose slot is now elsewhere: off their old link.
        for (node, link) in &mut self.links {
            let stray: Vec<String> = link
                .channels
                .iter()
                .filter(|c| !placed.get(node).is_some_and(|p| p.contains(*c)))
                .cloned()
                .collect();
            for c in stray {
                lost |= wanted.contains(&c);
                link.channels.remove(&c);
                let _ = call(
                    redis::cmd("SUNSUBSCRIBE")
                        .arg(&c)
                        .query_async::<Value>(&mut link.conn),
                )
                .await;
            }
        }
        self.lost |= lost;
        // Connect to the masters without a link, all at once; subscribe
        // what can be subscribed even when one of them does not answer (a
        // failover elsewhere must not hold up a new channel here).
        let absent: Vec<Node> = placed
            .keys()
            .filter(|n| !self.links.contains_key(*n))
            .cloned()
            .collect();
        let opening: Vec<_> = absent.iter().map(|n| self.open_link(n)).collect();
        let mut failure = None;
        for (node, link) in absent.into_iter().zip(join_all(opening).await) {
            match link {
                Ok(link) => {
                    self.links.insert(node, link);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let mut gossip_anew = false;
        for (node, channels) in placed {
            let Some(link) = self.links.get_mut(&node) else {
                continue;
            };
            let missing: Vec<String> = channels.difference(&link.channels).cloned().collect();
            if missing.is_empty() {
                continue;
            }
            match ssubscribe(&mut link.conn, &missing).await {
                Ok(()) => {
                    gossip_anew |= missing.contains(&self.relay.gossip_channel);
                    link.channels.extend(missing);
                }
                Err(e) => {
                    self.links.remove(&node);
                    self.lost = true;
                    failure.get_or_insert(format!("{node}: {e}"));
                }
            }
        }
        if gossip_anew {
            self.relay.hello();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.relay.shared.subscribed.store(true, Ordering::Release);
        if self.lost {
            self.lost = false;
            tracing::info!(
                channels = self.wanted.len(),
                masters = self.links.len(),
                "redis cluster subscriptions up"
            );
            self.relay.resync();
        }
        Ok(())
    }

    /// A new RESP3 connection to `node`, its pushes tagged with a new
    /// generation.
    fn open_link(
        &mut self,
        node: &Node,
    ) -> impl std::future::Future<Output = Result<Link, String>> + 'static {
        self.generation += 1;
        let generation = self.generation;
        let (tx, tagged) = (self.pushes.clone(), node.clone());
        let (topology, node) = (self.topology.clone(), node.clone());
        async move {
            let config = AsyncConnectionConfig::new()
                .set_push_sender(move |push: PushInfo| tx.send((tagged.clone(), generation, push)));
            let conn = connect(&topology, &node, true, config).await?;
            Ok(Link {
                generation,
                conn,
                channels: HashSet::new(),
            })
        }
    }

    /// `PING`s every link; a link that does not answer is dropped.
    async fn ping_links(&mut self) -> Result<(), String> {
        let links: Vec<(Node, u64, MultiplexedConnection)> = self
            .links
            .iter()
            .map(|(n, l)| (n.clone(), l.generation, l.conn.clone()))
            .collect();
        let results = join_all(links.iter().map(|(_, _, c)| ping(c.clone()))).await;
        let mut failed = None;
        for ((node, generation, _), result) in links.into_iter().zip(results) {
            if let Err(e) = result {
                self.drop_link(&node, generation, &e);
                failed = Some(format!("{node}: {e}"));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Whether a wanted channel is not subscribed at its slot's master by
    /// the map as read now.
    async fn misplaced(&mut self) -> bool {
        let map = match self.topology.refresh().await {
            Ok(map) => map,
            Err(e) => {
                // The links answer PING: keep them, try again later.
                tracing::warn!(error = %e, "redis cluster: reading the slot map");
                return false;
            }
        };
        self.wanted.iter().any(|channel| {
            map.master_of(channel.as_bytes())
                .and_then(|node| self.links.get(node))
                .is_none_or(|link| !link.channels.contains(channel))
        })
    }
}

/// One `SSUBSCRIBE` per channel (channels of different slots cannot share
/// one), pipelined; every confirmation awaited.
async fn ssubscribe(conn: &mut MultiplexedConnection, channels: &[String]) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for channel in channels {
        pipe.cmd("SSUBSCRIBE").arg(channel);
    }
    let wait = TIMEOUT + Duration::from_millis(channels.len() as u64 / 10);
    match tokio::time::timeout(wait, pipe.query_async::<Vec<Value>>(conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("subscribing timed out".into()),
    }
}
