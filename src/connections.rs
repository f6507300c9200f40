//! How many WebSocket connections each user holds on this replica, and the
//! per-user limit (`PULSEHUB_MAX_CONNECTIONS_PER_USER`).
//!
//! `/ws` takes a [`Slot`] after the token is verified and before the
//! upgrade, so a user at the limit gets HTTP 429 (`limit_reached`) and never
//! a socket. The session owns its slot; dropping it (the session actor ends,
//! or the upgrade fails) gives it back, so counts cannot leak and a user
//! with no connection has no entry. The limit is per replica: behind a load
//! balancer a user can hold up to replicas × limit connections.

use crate::error::HubError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub struct UserConnections {
    /// Most connections per user; 0 means no limit.
    limit: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One connection counted against its user; given back on drop.
pub struct Slot {
    owner: Arc<UserConnections>,
    user: String,
}

impl UserConnections {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(UserConnections {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection for `user`, or refuses it at the limit.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot, HubError> {
        let mut counts = self.counts();
        let held = counts.get(user).copied().unwrap_or(0);
        if self.limit > 0 && held >= self.limit {
            return Err(HubError::LimitReached(format!(
                "too many connections: this user already holds {held} (limit {})",
                self.limit
            )));
        }
        counts.insert(user.to_string(), held + 1);
        Ok(Slot {
            owner: self.clone(),
            user: user.to_string(),
        })
    }

    /// Connections `user` holds now.
    pub fn held(&self, user: &str) -> usize {
        self.counts().get(user).copied().unwrap_or(0)
    }

    /// Users holding at least one connection.
    pub fn users(&self) -> usize {
        self.counts().len()
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // The map stays consistent even if a holder panicked: every update is
        // one insert or remove.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        if let Some(held) = counts.get_mut(&self.user) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_the_limit_and_gives_back_on_drop() {
        let conns = UserConnections::new(2);
        let a1 = conns.acquire("alice").unwrap();
        let a2 = conns.acquire("alice").unwrap();
        let err = conns.acquire("alice").err().unwrap();
        assert_eq!(err.code(), "limit_reached");
        assert_eq!(conns.held("alice"), 2);
        let b = conns.acquire("bob").unwrap();
        drop(a1);
        let a3 = conns.acquire("alice").unwrap();
        assert_eq!(conns.held("alice"), 2);
        drop((a2, a3, b));
        assert_eq!(
            conns.users(),
            0,
            "no entry is left for users with no connection"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let conns = UserConnections::new(0);
        let slots: Vec<_> = (0..1000).map(|_| conns.acquire("alice").unwrap()).collect();
        assert_eq!(conns.held("alice"), 1000);
        drop(slots);
        assert_eq!(conns.users(), 0);
    }
}
