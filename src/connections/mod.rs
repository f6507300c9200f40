//! Admission of WebSocket connections before the upgrade, and the [`Slot`]
//! each session holds for the life of its connection.
//!
//! `/ws` calls [`Connections::acquire`] once the token is verified. The
//! limits, in the order they are checked (0 turns one off):
//! 1. this replica's total (`PULSEHUB_MAX_CONNECTIONS`): 503 `unavailable`
//!    with `Retry-After`, because it says nothing about the client: a load
//!    balancer (nginx `proxy_next_upstream http_503`) or the client tries
//!    another replica;
//! 2. the client's address on this replica
//!    (`PULSEHUB_MAX_CONNECTIONS_PER_ADDRESS`; the address is found by
//!    [`address`], IPv6 counted per /64): 429 `limit_reached`;
//! 3. the user (`PULSEHUB_MAX_CONNECTIONS_PER_USER`): in the whole cluster
//!    when Redis is configured ([`cluster`]), else on this replica: 429
//!    `limit_reached`. While Redis cannot answer, the user is counted on
//!    this replica only (so nobody is locked out by a Redis outage; a user
//!    may then hold up to replicas × limit), logged once and counted in
//!    `pulsehub_connection_limit_fallbacks_total`.
//!
//! A refusal never yields a socket. The slot gives everything back when it
//! is dropped (the session ends, or the upgrade fails), so local counts
//! cannot leak and a user or address with no connection has no entry; a
//! connection counted in Redis is removed there too, and would otherwise
//! expire with `PULSEHUB_CONNECTION_TTL_SECS`.

pub mod address;
pub mod cluster;

use crate::error::HubError;
use crate::metrics::Metrics;
use address::AddressKey;
use cluster::{ClusterCounts, Member, Verdict};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The limits in force; 0 means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Connections on this replica.
    pub total: usize,
    /// Connections per client address on this replica.
    pub per_address: usize,
    /// Connections per user (in the cluster with Redis).
    pub per_user: usize,
}

/// Which limit refused a connection (the `limit` label of
/// `pulsehub_connections_refused_by_limit_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Replica,
    Address,
    User,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Replica => "replica",
            Limit::Address => "address",
            Limit::User => "user",
        }
    }
}

pub struct Connections {
    limits: Limits,
    local: Mutex<Local>,
    cluster: Option<Arc<ClusterCounts>>,
    metrics: Arc<Metrics>,
}

/// This replica's counts.
#[derive(Default)]
struct Local {
    total: usize,
    users: HashMap<String, usize>,
    addresses: HashMap<AddressKey, usize>,
}

/// One admitted connection; gives its counts back on drop.
pub struct Slot {
    owner: Arc<Connections>,
    user: String,
    address: AddressKey,
    member: Option<Member>,
}

impl Connections {
    /// `cluster`: the Redis count of users, when Redis is configured.
    pub fn new(
        limits: Limits,
        cluster: Option<Arc<ClusterCounts>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            local: Mutex::new(Local::default()),
            cluster,
            metrics,
        })
    }

    /// Admits one more connection of `user` from `address`, or refuses it.
    pub async fn acquire(self: &Arc<Self>, user: &str, address: IpAddr) -> Result<Slot, HubError> {
        let address = AddressKey::of(address);
        let limits = self.limits;
        let counted_in_redis = self.cluster.as_ref().filter(|_| limits.per_user > 0);
        let held_here = {
            let mut local = self.local();
            if limits.total > 0 && local.total >= limits.total {
                return Err(self.refused(
                    Limit::Replica,
                    HubError::Unavailable(format!(
                        "this replica is at its connection limit ({}); try another",
                        limits.total
                    )),
                ));
            }
            let from_address = local.addresses.get(&address).copied().unwrap_or(0);
            if limits.per_address > 0 && from_address >= limits.per_address {
                return Err(self.refused(
                    Limit::Address,
                    HubError::LimitReached(format!(
                        "too many connections from this address: it already holds {from_address} (limit {})",
                        limits.per_address
                    )),
                ));
            }
            let held = local.users.get(user).copied().unwrap_or(0);
            if limits.per_user > 0 && counted_in_redis.is_none() && held >= limits.per_user {
                return Err(self.refused(Limit::User, user_limit(held, limits.per_user, "")));
            }
            local.total += 1;
            *local.addresses.entry(address).or_insert(0) += 1;
            *local.users.entry(user.to_string()).or_insert(0) += 1;
            held
        };
        // From here the slot owns the local counts: any refusal below
        // drops it, which gives them back.
        let mut slot = Slot {
            owner: self.clone(),
            user: user.to_string(),
            address,
            member: None,
        };
        if let Some(cluster) = counted_in_redis {
            let member = cluster.member(user);
            match cluster.acquire(&member, limits.per_user).await {
                Ok(Verdict::Admitted) => {}
                Ok(Verdict::Refused(held)) => {
                    return Err(self.refused(
                        Limit::User,
                        user_limit(held as usize, limits.per_user, " in the cluster"),
                    ));
                }
                Err(_) => {
                    // Redis cannot tell: this replica's count decides.
                    self.metrics.connection_limit_fallbacks.inc();
                    if held_here >= limits.per_user {
                        return Err(self.refused(
                            Limit::User,
                            user_limit(held_here, limits.per_user, " on this replica"),
                        ));
                    }
                }
            }
            // Refreshed from now on; added to Redis by the next refresh if
            // it was admitted while Redis could not answer.
            cluster.hold(&member);
            slot.member = Some(member);
        }
        Ok(slot)
    }

    /// Connections `user` holds on this replica.
    pub fn held(&self, user: &str) -> usize {
        self.local().users.get(user).copied().unwrap_or(0)
    }

    /// Users holding at least one connection on this replica.
    pub fn users(&self) -> usize {
        self.local().users.len()
    }

    /// Addresses holding at least one connection on this replica.
    pub fn addresses(&self) -> usize {
        self.local().addresses.len()
    }

    /// Connections admitted on this replica and not yet given back.
    pub fn total(&self) -> usize {
        self.local().total
    }

    /// The replica is stopping: its connections stop counting in Redis now
    /// rather than after the TTL (nothing to do without Redis).
    pub async fn forget_all(&self, limit: std::time::Duration) {
        if let Some(cluster) = &self.cluster {
            cluster.forget_all(limit).await;
        }
    }

    /// Connections of this replica counted in Redis (0 without Redis).
    pub fn in_cluster(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.held())
    }

    fn refused(&self, limit: Limit, error: HubError) -> HubError {
        self.metrics.refused(limit.label());
        error
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        // The counts stay consistent even if a holder panicked: every
        // update is a few integer steps under the lock.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn user_limit(held: usize, limit: usize, where_: &str) -> HubError {
    HubError::LimitReached(format!(
        "too many connections: this user already holds {held}{where_} (limit {limit})"
    ))
}

/// One less in a count; the entry goes when it reaches zero.
fn give_back<K, Q>(counts: &mut HashMap<K, usize>, key: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut local = self.owner.local();
            local.total -= 1;
            give_back(&mut local.users, self.user.as_str());
            give_back(&mut local.addresses, &self.address);
        }
        if let (Some(cluster), Some(member)) = (&self.owner.cluster, &self.member) {
            cluster.release(member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(total: usize, per_address: usize, per_user: usize) -> Arc<Connections> {
        Connections::new(
            Limits {
                total,
                per_address,
                per_user,
            },
            None,
            Arc::new(Metrics::new()),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[actix_web::test]
    async fn refuses_a_user_at_the_limit_and_gives_back_on_drop() {
        let conns = limited(0, 0, 2);
        let here = ip("192.0.2.1");
        let a1 = conns.acquire("alice", here).await.unwrap();
        let a2 = conns.acquire("alice", here).await.unwrap();
        let err = conns.acquire("alice", here).await.err().unwrap();
        assert_eq!(err.code(), "limit_reached");
        assert_eq!(conns.held("alice"), 2);
        let b = conns.acquire("bob", here).await.unwrap();
        drop(a1);
        let a3 = conns.acquire("alice", here).await.unwrap();
        assert_eq!(conns.held("alice"), 2);
        drop((a2, a3, b));
        assert_eq!(
            (conns.users(), conns.addresses(), conns.total()),
            (0, 0, 0),
            "no entry is left once nobody is connected"
        );
    }

    #[actix_web::test]
    async fn zero_means_no_limit() {
        let conns = limited(0, 0, 0);
        let mut slots = Vec::new();
        for _ in 0..1000 {
            slots.push(conns.acquire("alice", ip("192.0.2.1")).await.unwrap());
        }
        assert_eq!((conns.held("alice"), conns.total()), (1000, 1000));
        drop(slots);
        assert_eq!(conns.users(), 0);
    }

    #[actix_web::test]
    async fn the_replica_total_is_unavailable_and_addresses_are_limit_reached() {
        let conns = limited(3, 2, 0);
        let a = conns.acquire("alice", ip("192.0.2.1")).await.unwrap();
        let b = conns.acquire("bob", ip("192.0.2.1")).await.unwrap();
        let err = conns.acquire("carol", ip("192.0.2.1")).await.err().unwrap();
        assert_eq!(err.code(), "limit_reached", "{err}");
        assert!(err.to_string().contains("address"), "{err}");
        let c = conns.acquire("carol", ip("192.0.2.2")).await.unwrap();
        let err = conns.acquire("dave", ip("192.0.2.3")).await.err().unwrap();
        assert_eq!(err.code(), "unavailable", "{err}");
        // A refusal takes nothing: after one slot is back, one more fits.
        drop(a);
        let d = conns.acquire("dave", ip("192.0.2.3")).await.unwrap();
        // IPv6 addresses of one /64 are one address.
        drop((b, c, d));
        let v6 = limited(0, 1, 0);
        let _e = v6.acquire("erin", ip("2001:db8:0:1::1")).await.unwrap();
        assert!(v6.acquire("erin", ip("2001:db8:0:1::2")).await.is_err());
        assert!(v6.acquire("erin", ip("2001:db8:0:2::1")).await.is_ok());
    }

    #[actix_web::test]
    async fn refusals_are_counted_by_limit() {
        let metrics = Arc::new(Metrics::new());
        let conns = Connections::new(
            Limits {
                total: 2,
                per_address: 1,
                per_user: 1,
            },
            None,
            metrics.clone(),
        );
        let _a = conns.acquire("alice", ip("192.0.2.1")).await.unwrap();
        let _ = conns.acquire("alice", ip("192.0.2.2")).await;
        let _ = conns.acquire("bob", ip("192.0.2.1")).await;
        let _b = conns.acquire("bob", ip("192.0.2.2")).await.unwrap();
        let _ = conns.acquire("carol", ip("192.0.2.3")).await;
        let text = metrics.render();
        for line in [
            "pulsehub_connections_refused_total 3",
            r#"pulsehub_connections_refused_by_limit_total{limit="user"} 1"#,
            r#"pulsehub_connections_refused_by_limit_total{limit="address"} 1"#,
            r#"pulsehub_connections_refused_by_limit_total{limit="replica"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
