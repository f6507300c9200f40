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
//!   one script call per user, all in one pipeline; members of a replica
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
//!
//! Scripts touch one key each, so they also work on Redis Cluster; the
//! refresh pipeline would have to be split by slot there.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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

pub struct ClusterCounts {
    prefix: String,
    instance: String,
    ttl: Duration,
    conn: ConnectionManager,
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
        let (releases, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(ClusterCounts {
            prefix: prefix.to_string(),
            instance: instance.to_string(),
            ttl,
            conn,
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            releases,
            health: Mutex::new(Health::default()),
        });
        actix::spawn(upkeep(Arc::downgrade(&counts), rx));
        Ok(counts)
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
        let mut conn = self.conn.clone();
        let mut eval = redis::cmd("EVAL");
        eval.arg(ACQUIRE)
            .arg(1)
            .arg(self.key(&member.user))
            .arg(self.ttl.as_millis() as u64)
            .arg(limit)
            .arg(&member.id);
        let call = eval.query_async::<(u8, u64)>(&mut conn);
        match tokio::time::timeout(TIMEOUT, call).await {
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
        let mut pipe = redis::pipe();
        // EVAL, not EVALSHA: nothing to reload after a Redis restart, and
        // Redis keeps the compiled script in its cache anyway.
        for (user, ids) in by_user {
            pipe.cmd("EVAL")
                .arg(REFRESH)
                .arg(1)
                .arg(self.key(&user))
                .arg(self.ttl.as_millis() as u64)
                .arg(ids)
                .ignore();
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.ttl / 3, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => self.up(),
            Ok(Err(e)) => {
                self.failed(e);
            }
            Err(_) => {
                self.failed("refresh timed out");
            }
        }
    }

    async fn send_releases(&self, batch: &mut Vec<Upkeep>) {
        let mut pipe = redis::pipe();
        let mut answers = Vec::new();
        for op in batch.drain(..) {
            match op {
                Upkeep::Release(key, id) => {
                    pipe.cmd("ZREM").arg(key).arg(id).ignore();
                }
                Upkeep::ForgetAll(done) => {
                    for (id, user) in self.live().drain() {
                        pipe.cmd("ZREM").arg(self.key(&user)).arg(id).ignore();
                    }
                    answers.push(done);
                }
            }
        }
        let mut conn = self.conn.clone();
        // A release lost here expires with the TTL.
        match tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
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
