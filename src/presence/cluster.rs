//! Presence as seen across replicas, free of actors so it can be tested.
//!
//! Every replica gossips its local presence (a full snapshot every third of
//! the TTL, and each user's changes as they happen). This keeps the last
//! word of every other replica, forgets a replica not heard from for a TTL
//! (so the users of a replica that died leave), and merges a user's entries
//! from all replicas into one: sessions add up, `since` is the earliest,
//! `last_active` the latest, and the user is `online` if any replica says so.

use crate::protocol::{PresenceStatus, PresenceUser};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// (scope, user id): what a change touched.
pub type Touched = Vec<(String, String)>;

#[derive(Debug)]
struct Remote {
    heard: Instant,
    scopes: HashMap<String, BTreeMap<String, PresenceUser>>,
}

#[derive(Debug, Default)]
pub struct Cluster {
    remotes: HashMap<String, Remote>,
}

impl Cluster {
    fn remote(&mut self, instance: &str, now: Instant) -> &mut Remote {
        let r = self
            .remotes
            .entry(instance.to_string())
            .or_insert_with(|| Remote {
                heard: now,
                scopes: HashMap::new(),
            });
        r.heard = now;
        r
    }

    /// A replica's full local presence replaces what we knew of it.
    pub fn full(
        &mut self,
        instance: &str,
        scopes: HashMap<String, Vec<PresenceUser>>,
        now: Instant,
    ) -> Touched {
        let r = self.remote(instance, now);
        let mut touched: Touched = r
            .scopes
            .iter()
            .flat_map(|(s, users)| users.keys().map(move |u| (s.clone(), u.clone())))
            .collect();
        r.scopes = scopes
            .into_iter()
            .map(|(s, users)| (s, users.into_iter().map(|u| (u.id.clone(), u)).collect()))
            .collect();
        touched.extend(
            r.scopes
                .iter()
                .flat_map(|(s, users)| users.keys().map(move |u| (s.clone(), u.clone()))),
        );
        touched.sort();
        touched.dedup();
        touched
    }

    /// One user of a scope changed on a replica.
    pub fn user(
        &mut self,
        instance: &str,
        scope: &str,
        id: &str,
        user: Option<PresenceUser>,
        now: Instant,
    ) -> Touched {
        let r = self.remote(instance, now);
        let users = r.scopes.entry(scope.to_string()).or_default();
        match user {
            Some(u) => {
                users.insert(id.to_string(), u);
            }
            None => {
                users.remove(id);
                if users.is_empty() {
                    r.scopes.remove(scope);
                }
            }
        }
        vec![(scope.to_string(), id.to_string())]
    }

    /// Forgets a replica (it said goodbye, or its TTL passed).
    pub fn forget(&mut self, instance: &str) -> Touched {
        self.remotes
            .remove(instance)
            .map(|r| {
                r.scopes
                    .into_iter()
                    .flat_map(|(s, users)| users.into_keys().map(move |u| (s.clone(), u)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets every replica not heard from within `ttl`.
    pub fn expire(&mut self, ttl: Duration, now: Instant) -> Touched {
        let dead: Vec<String> = self
            .remotes
            .iter()
            .filter(|(_, r)| now.duration_since(r.heard) >= ttl)
            .map(|(i, _)| i.clone())
            .collect();
        dead.iter().flat_map(|i| self.forget(i)).collect()
    }

    /// Other replicas' entries for a user.
    pub fn entries<'a>(
        &'a self,
        scope: &'a str,
        id: &'a str,
    ) -> impl Iterator<Item = &'a PresenceUser> + 'a {
        self.remotes
            .values()
            .filter_map(move |r| r.scopes.get(scope).and_then(|u| u.get(id)))
    }

    /// Every user id other replicas list in a scope.
    pub fn ids(&self, scope: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .remotes
            .values()
            .filter_map(|r| r.scopes.get(scope))
            .flat_map(|u| u.keys().cloned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// One user from the entries of several replicas; `None` when there are none.
pub fn merge<'a>(entries: impl IntoIterator<Item = &'a PresenceUser>) -> Option<PresenceUser> {
    let mut out: Option<PresenceUser> = None;
    for e in entries {
        match &mut out {
            None => out = Some(e.clone()),
            Some(m) => {
                m.sessions += e.sessions;
                if e.since < m.since {
                    m.since = e.since.clone();
                }
                if e.last_active > m.last_active {
                    m.last_active = e.last_active.clone();
                    if e.activity.is_some() {
                        m.activity = e.activity.clone();
                    }
                }
                if e.status == PresenceStatus::Online {
                    m.status = PresenceStatus::Online;
                }
                if m.name.is_none() {
                    m.name = e.name.clone();
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(
        id: &str,
        sessions: usize,
        status: PresenceStatus,
        since: &str,
        active: &str,
    ) -> PresenceUser {
        PresenceUser {
            id: id.into(),
            name: Some(id.to_uppercase()),
            status,
            sessions,
            since: since.into(),
            last_active: active.into(),
            activity: Some(format!("at {active}")),
        }
    }

    #[test]
    fn merging_adds_sessions_and_keeps_the_freshest() {
        let a = user(
            "al",
            2,
            PresenceStatus::Idle,
            "2026-01-01T10:00:00.000Z",
            "2026-01-01T10:05:00.000Z",
        );
        let b = user(
            "al",
            1,
            PresenceStatus::Online,
            "2026-01-01T09:00:00.000Z",
            "2026-01-01T10:09:00.000Z",
        );
        let m = merge([&a, &b]).unwrap();
        assert_eq!(m.sessions, 3);
        assert_eq!(m.status, PresenceStatus::Online);
        assert_eq!(m.since, "2026-01-01T09:00:00.000Z");
        assert_eq!(m.last_active, "2026-01-01T10:09:00.000Z");
        assert_eq!(m.activity.as_deref(), Some("at 2026-01-01T10:09:00.000Z"));
        assert!(merge([]).is_none());
    }

    #[test]
    fn replicas_come_and_go() {
        let mut c = Cluster::default();
        let t = Instant::now();
        let al = user("al", 1, PresenceStatus::Online, "a", "a");
        let touched = c.full(
            "hub-b",
            HashMap::from([("demo".into(), vec![al.clone()])]),
            t,
        );
        assert_eq!(touched, vec![("demo".to_string(), "al".to_string())]);
        assert_eq!(c.entries("demo", "al").count(), 1);
        assert_eq!(c.ids("demo"), ["al"]);
        // A user update, then gone from that replica.
        c.user(
            "hub-b",
            "demo",
            "bo",
            Some(user("bo", 1, PresenceStatus::Online, "a", "a")),
            t,
        );
        assert_eq!(c.ids("demo"), ["al", "bo"]);
        c.user("hub-b", "demo", "bo", None, t);
        assert_eq!(c.ids("demo"), ["al"]);
        // Not heard from for the TTL: its users are touched and gone.
        let ttl = Duration::from_secs(15);
        assert!(c.expire(ttl, t + Duration::from_secs(14)).is_empty());
        assert_eq!(c.expire(ttl, t + Duration::from_secs(15)).len(), 1);
        assert!(c.ids("demo").is_empty());
    }

    #[test]
    fn a_full_snapshot_touches_who_left_too() {
        let mut c = Cluster::default();
        let t = Instant::now();
        let al = user("al", 1, PresenceStatus::Online, "a", "a");
        let bo = user("bo", 1, PresenceStatus::Online, "a", "a");
        c.full(
            "hub-b",
            HashMap::from([("demo".into(), vec![al.clone(), bo])]),
            t,
        );
        let touched = c.full("hub-b", HashMap::from([("demo".into(), vec![al])]), t);
        assert_eq!(touched.len(), 2);
        assert_eq!(c.ids("demo"), ["al"]);
        assert_eq!(c.forget("hub-b").len(), 1);
    }
}
