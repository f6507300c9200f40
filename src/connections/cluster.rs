//! The per-user connection count across replicas, kept in Redis.
//!
//! Contract:
//! - Each user has one sorted set, `{prefix}:conns:{user}`, whose members are
//!   this cluster's connections of that user (`{instance}:{n}`), each scored
//!   by the time (Redis's clock, ms) after which it no longer counts.
//! - [`ClusterCounts::acquire`] runs one Lua script, atomic in Redis: drop
//!   the expired members, refuse at the limit, else add the new member. Two
//!   replicas racing for a user's last slot cannot both win.
//! - Every third of the TTL the replica re-scores all its live members,
//!   one script call per user, all in one pipeline (one per master on a
//!   cluster); members of a replica
//!   that died are not refreshed and stop counting after the TTL. The same
//!   refresh adds members that are missing (Redis restarted or was
//!   unreachable when they were admitted), so the count heals by itself.
//! - Releasing removes the member (`ZREM`, queued and pipelined; a release
//!   that cannot be sent expires with the TTL). A replica that stops
//!   gracefully removes all its members at once ([`ClusterCounts::forget_all`]),
//!   so its users can reconnect elsewhere without waiting for the TTL.
//! - Unreachable Redis is an `Err` for the caller to fall back on (the
//!   replica's own count); after a failure Redis is not asked again for
//!   [`RETRY_AFTER`], so connecting does not wait on a timeout each time.
//!   Going down and coming back are logged once each.
//! - On a Redis Cluster ([`ClusterCounts::start_on_cluster`]) the same
//!   keys and scripts are used: each script and each `ZREM` touches one
//!   key, so it goes to the master serving that key's slot (the slot map of
//!   [`crate::broker::redis::slots`], read by this module's own
//!   [`Topology`]). A refresh or a batch of releases is one pipeline per
//!   master, sent concurrently. A `MOVED`/`ASK` reply or a connection error
//!   reads the slot map again and retries once (a handshake's `ASK` at the
//!   node it names, after `ASKING`; a pipeline's at the new map's master,
//!   which may fail again while the slot migrates); a second failure is
//!   the fallback above. The map is this module's own, not the broker's:
//!   it is read only when a call needs it, and costs one `CLUSTER SLOTS`.

use crate::broker::redis::slots::{Node, SlotMap, Topology};
use futures_util::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A Redis call for a handshake gives up after this (then: fall back).
const TIMEOUT: Duration = Duration::from_millis(500);
/// After a failure, handshakes do not ask Redis for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Releases sent in one pipeline at most.
const RELEASES: usize = 512;

/// KEYS[1]: the user's set. ARGV: ttl ms, limit, member.
/// Returns {admitted (0|1), members counted after the call}.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, held + 1}
";

/// KEYS[1]: the user's set. ARGV: ttl ms, then the members to keep.
const REFRESH: &str = r"
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], until_ms, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
";

/// What the upkeep task is told, in order.
enum Upkeep {
    /// Remove one member: (key, member).
    Release(String, String),
    /// Remove every member this replica holds; answer when sent.
    ForgetAll(tokio::sync::oneshot::Sender<()>),
}

/// What Redis said about a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted: the member is in the user's set.
    Admitted,
    /// The user already holds this many connections in the cluster.
    Refused(u64),
}

/// A connection counted in Redis (or to be counted once Redis answers).
#[derive(Debug)]
pub struct Member {
    user: String,
    id: String,
}

/// Where the sets live.
enum Store {
    /// One Redis: one connection that reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: each key at its slot's master.
    Sharded(Shards),
}

pub struct ClusterCounts {
    prefix: String,
    instance: String,
    ttl: Duration,
    store: Store,
    next: AtomicU64,
    /// This replica's live members: id → user.
    live: Mutex<HashMap<String, String>>,
    releases: mpsc::UnboundedSender<Upkeep>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Set after a failure: handshakes skip Redis until then.
    skip_until: Option<Instant>,
    down: bool,
}

impl ClusterCounts {
    /// Connects lazily (an unreachable Redis at start is a fallback, not an
    /// error) and starts the refresh/release task on the current runtime.
    pub fn start(
        url: &str,
        prefix: &str,
        instance: &str,
        ttl: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self::with_store(Store::Single(conn), prefix, instance, ttl))
    }

    /// The same on a Redis Cluster reached through `seeds`; nothing is
    /// connected until the first call (the slot map is read then).
    pub fn start_on_cluster(
        seeds: &[String],
        prefix: &str,
        instance: &str,
        ttl: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let shards = Shards {
            topology: Topology::new(seeds)?,
            conns: Mutex::new(HashMap::new()),
        };
        Ok(Self::with_store(
            Store::Sharded(shards),
            prefix,
            instance,
            ttl,
        ))
    }

    fn with_store(store: Store, prefix: &str, instance: &str, ttl: Duration) -> Arc<Self> {
        let (releases, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(ClusterCounts {
            prefix: prefix.to_string(),
            instance: instance.to_string(),
            ttl,
            store,
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            releases,
            health: Mutex::new(Health::default()),
        });
        actix::spawn(upkeep(Arc::downgrade(&counts), rx));
        counts
    }

    /// How long one call may take: on a cluster, a retry after reading the
    /// slot map again fits in it too.
    fn patience(&self, one: Duration) -> Duration {
        match self.store {
            Store::Single(_) => one,
            Store::Sharded(_) => one * 2,
        }
    }

    fn key(&self, user: &str) -> String {
        format!("{}:conns:{user}", self.prefix)
    }

    /// A new member id for `user`, not yet counted anywhere.
    pub fn member(&self, user: &str) -> Member {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Member {
            user: user.to_string(),
            id: format!("{}:{n}", self.instance),
        }
    }

    /// Counts `member` against `limit` in the cluster. `Err`: Redis cannot
    /// tell now (down, slow, or recently failed).
    pub async fn acquire(&self, member: &Member, limit: usize) -> Result<Verdict, String> {
        if self.skipping() {
            return Err("redis recently unreachable".into());
        }
        let key = self.key(&member.user);
        let mut eval = redis::cmd("EVAL");
        eval.arg(ACQUIRE)
            .arg(1)
            .arg(&key)
            .arg(self.ttl.as_millis() as u64)
            .arg(limit)
            .arg(&member.id);
        let call = async {
            match &self.store {
                Store::Single(conn) => eval
                    .query_async::<(u8, u64)>(&mut conn.clone())
                    .await
                    .map_err(|e| e.to_string()),
                Store::Sharded(shards) => shards.query::<(u8, u64)>(&key, &eval).await,
            }
        };
        match tokio::time::timeout(self.patience(TIMEOUT), call).await {
            Ok(Ok((1, _))) => {
                self.up();
                Ok(Verdict::Admitted)
            }
            Ok(Ok((_, held))) => {
                self.up();
                Ok(Verdict::Refused(held))
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("timed out")),
        }
    }

    /// `member` is one of this replica's live connections: refreshed from
    /// now on (and added to Redis by the next refresh if it is not there).
    pub fn hold(&self, member: &Member) {
        self.live().insert(member.id.clone(), member.user.clone());
    }

    /// The connection ended: no longer refreshed, removed from Redis.
    pub fn release(&self, member: &Member) {
        self.live().remove(&member.id);
        let _ = self
            .releases
            .send(Upkeep::Release(self.key(&member.user), member.id.clone()));
    }

    /// The replica is stopping: removes every member it holds from Redis
    /// (after the releases queued before), within `limit`. Connections
    /// that close later release members already gone, which is harmless.
    pub async fn forget_all(&self, limit: Duration) {
        let (done, sent) = tokio::sync::oneshot::channel();
        if self.releases.send(Upkeep::ForgetAll(done)).is_ok()
            && tokio::time::timeout(limit, sent).await.is_err()
        {
            tracing::warn!("connections not removed from redis in time: they expire with the TTL");
        }
    }

    /// Members this replica holds (its live connections counted in Redis).
    pub fn held(&self) -> usize {
        self.live().len()
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn skipping(&self) -> bool {
        self.health().skip_until.is_some_and(|t| Instant::now() < t)
    }

    fn up(&self) {
        let mut h = self.health();
        h.skip_until = None;
        if std::mem::take(&mut h.down) {
            tracing::info!(
                "redis answers again: the per-user connection limit holds for the cluster"
            );
        }
    }

    fn failed(&self, e: impl std::fmt::Display) -> String {
        let mut h = self.health();
        h.skip_until = Some(Instant::now() + RETRY_AFTER);
        if !std::mem::replace(&mut h.down, true) {
            tracing::warn!(error = %e, "redis unreachable: the per-user connection limit is counted per replica until it answers");
        }
        e.to_string()
    }

    /// One pipeline re-scoring every live member (one script call per user).
    async fn refresh_all(&self) {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        for (id, user) in self.live().iter() {
            by_user.entry(user.clone()).or_default().push(id.clone());
        }
        if by_user.is_empty() {
            return;
        }
        // EVAL, not EVALSHA: nothing to reload after a Redis restart, and
        // Redis keeps the compiled script in its cache anyway.
        let ttl = self.ttl.as_millis() as u64;
        let calls: Vec<(String, Cmd)> = by_user
            .into_iter()
            .map(|(user, ids)| {
                let key = self.key(&user);
                let mut eval = redis::cmd("EVAL");
                eval.arg(REFRESH).arg(1).arg(&key).arg(ttl).arg(ids);
                (key, eval)
            })
            .collect();
        match tokio::time::timeout(self.ttl / 3, self.send_all(calls)).await {
            Ok(Ok(())) => self.up(),
            Ok(Err(e)) => {
                self.failed(e);
            }
            Err(_) => {
                self.failed("refresh timed out");
            }
        }
    }

    /// Sends `calls` (each on its key), ignoring the replies: one pipeline
    /// on one Redis, one per master on a cluster.
    async fn send_all(&self, calls: Vec<(String, Cmd)>) -> Result<(), String> {
        match &self.store {
            Store::Single(conn) => {
                let mut pipe = redis::pipe();
                for (_, cmd) in calls {
                    pipe.add_command(cmd).ignore();
                }
                pipe.query_async::<()>(&mut conn.clone())
                    .await
                    .map_err(|e| e.to_string())
            }
            Store::Sharded(shards) => shards.send_all(calls).await,
        }
    }

    async fn send_releases(&self, batch: &mut Vec<Upkeep>) {
        let mut calls = Vec::new();
        let mut answers = Vec::new();
        let zrem = |key: String, id: String| {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&key).arg(id);
            (key, cmd)
        };
        for op in batch.drain(..) {
            match op {
                Upkeep::Release(key, id) => calls.push(zrem(key, id)),
                Upkeep::ForgetAll(done) => {
                    for (id, user) in self.live().drain() {
                        calls.push(zrem(self.key(&user), id));
                    }
                    answers.push(done);
                }
            }
        }
        // A release lost here expires with the TTL.
        match tokio::time::timeout(self.patience(TIMEOUT), self.send_all(calls)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.failed(e);
            }
            Err(_) => {
                self.failed("release timed out");
            }
        }
        for done in answers {
            let _ = done.send(());
        }
    }
}

/// The cluster's slot map and one multiplexed connection per master,
/// opened when first needed and dropped when it fails.
struct Shards {
    topology: Topology,
    conns: Mutex<HashMap<Node, MultiplexedConnection>>,
}

/// Worth reading the slot map again and retrying: the slot moved (`MOVED`,
/// `ASK`, `TRYAGAIN`, `CLUSTERDOWN`) or the node could not be talked to.
fn worth_a_retry(e: &RedisError) -> bool {
    e.is_cluster_error()
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
}

/// The node an `ASK` reply sends the command to (`host:port`).
fn asked_node(e: &RedisError) -> Option<Node> {
    if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::Ask) {
        return None;
    }
    let (addr, _) = e.redirect_node()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some(Node {
        host: host.to_string(),
        port: port.parse().ok()?,
    })
}

/// Why a call to one node failed: `retry` when another map may help.
struct Failure {
    error: String,
    retry: bool,
    asked: Option<Node>,
}

impl Failure {
    fn fatal(error: String) -> Failure {
        Failure {
            error,
            retry: false,
            asked: None,
        }
    }
}

impl Shards {
    /// The map read last, or a first one.
    async fn map(&self) -> Result<Arc<SlotMap>, String> {
        match self.topology.current() {
            Some(map) => Ok(map),
            None => self.topology.refresh().await,
        }
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<Node, MultiplexedConnection>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn conn(&self, node: &Node) -> Result<MultiplexedConnection, Failure> {
        if let Some(conn) = self.conns().get(node) {
            return Ok(conn.clone());
        }
        let unreachable = |e: String| Failure {
            error: format!("{node}: {e}"),
            retry: true,
            asked: None,
        };
        let client = redis::Client::open(self.topology.node_info(node, false))
            .map_err(|e| Failure::fatal(format!("{node}: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        self.conns().insert(node.clone(), conn.clone());
        Ok(conn)
    }

    /// Sends `pipe` to `node`; a broken connection is dropped.
    async fn send<T: FromRedisValue>(&self, node: &Node, pipe: &Pipeline) -> Result<T, Failure> {
        let mut conn = self.conn(node).await?;
        pipe.query_async::<T>(&mut conn).await.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                self.conns().remove(node);
            }
            Failure {
                error: format!("{node}: {e}"),
                retry: worth_a_retry(&e),
                asked: asked_node(&e),
            }
        })
    }

    /// One command on `key`, at its slot's master; retried once.
    async fn query<T: FromRedisValue>(&self, key: &str, cmd: &Cmd) -> Result<T, String> {
        let master = |map: &SlotMap| {
            map.master_of(key.as_bytes())
                .cloned()
                .ok_or_else(|| format!("no master serves the slot of {key}"))
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        let failure = match self
            .send::<(T,)>(&master(&*self.map().await?)?, &pipe)
            .await
        {
            Ok((t,)) => return Ok(t),
            Err(f) if !f.retry => return Err(f.error),
            Err(f) => f,
        };
        let (node, pipe) = match failure.asked {
            // The key is being migrated: the target answers after ASKING.
            Some(node) => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").ignore().add_command(cmd.clone());
                (node, asking)
            }
            None => (master(&*self.topology.refresh().await?)?, pipe),
        };
        match self.send::<(T,)>(&node, &pipe).await {
            Ok((t,)) => Ok(t),
            Err(f) => Err(f.error),
        }
    }

    /// `calls` grouped by their key's master, one pipeline per master sent
    /// concurrently; the groups that fail for a retryable reason are
    /// grouped again on a new map and sent once more (whole: the commands
    /// here, `ZADD` of a score and `ZREM`, may run twice harmlessly).
    async fn send_all(&self, calls: Vec<(String, Cmd)>) -> Result<(), String> {
        let mut pending = calls;
        let mut map = self.map().await?;
        let mut retried = false;
        loop {
            let mut groups: HashMap<Node, Vec<(String, Cmd)>> = HashMap::new();
            for (key, cmd) in pending.drain(..) {
                let node = map
                    .master_of(key.as_bytes())
                    .cloned()
                    .ok_or_else(|| format!("no master serves the slot of {key}"))?;
                groups.entry(node).or_default().push((key, cmd));
            }
            let sent = join_all(groups.into_iter().map(|(node, calls)| async move {
                let mut pipe = redis::pipe();
                for (_, cmd) in &calls {
                    pipe.add_command(cmd.clone()).ignore();
                }
                (self.send::<()>(&node, &pipe).await, calls)
            }))
            .await;
            // A failure that a retry cannot help is the answer, whatever
            // the retried groups do.
            let mut fatal = None;
            for (result, calls) in sent {
                match result {
                    Ok(()) => {}
                    Err(f) if f.retry && !retried => pending.extend(calls),
                    Err(f) => fatal = Some(f.error),
                }
            }
            if pending.is_empty() {
                return fatal.map_or(Ok(()), Err);
            }
            retried = true;
            map = self.topology.refresh().await?;
        }
    }
}

/// Refreshes every third of the TTL and sends releases as they come, in
/// that one order (a release queued during a refresh is sent after it, so a
/// refresh never re-adds a member released before it). Ends with the
/// [`ClusterCounts`].
async fn upkeep(
    counts: std::sync::Weak<ClusterCounts>,
    mut releases: mpsc::UnboundedReceiver<Upkeep>,
) {
    let every = match counts.upgrade() {
        Some(c) => c.ttl / 3,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(RELEASES);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(c) = counts.upgrade() else { return };
                c.refresh_all().await;
            }
            n = releases.recv_many(&mut batch, RELEASES) => {
                if n == 0 {
                    return;
                }
                let Some(c) = counts.upgrade() else { return };
                c.send_releases(&mut batch).await;
            }
        }
    }
}
