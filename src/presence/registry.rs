//! Presence bookkeeping, free of actors and I/O so it can be tested alone.
//!
//! A user is present in a scope while at least one of their sessions is in
//! it. `join` and `leave` are per user: a second session is an `update`; the
//! last session leaving starts a grace period, and only a user still without
//! sessions when it ends is removed (`leave`), so a page refresh does not
//! flap. A user in grace is still listed and counted.

use crate::protocol::{PresenceOp, PresenceStatus, PresenceUser, UserRef};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// A change to announce on `presence:{scope}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub scope: String,
    pub op: PresenceOp,
    pub user: PresenceUser,
    /// Users present in the scope after the change.
    pub count: usize,
}

#[derive(Debug)]
struct Present {
    name: Option<String>,
    sessions: HashSet<String>,
    since: DateTime<Utc>,
    last_active: DateTime<Utc>,
    active_at: Instant,
    activity: Option<String>,
    status: PresenceStatus,
    /// When the last session left; the user leaves once the grace has passed.
    left_at: Option<Instant>,
}

impl Present {
    fn view(&self, id: &str) -> PresenceUser {
        PresenceUser {
            id: id.to_string(),
            name: self.name.clone(),
            status: self.status,
            sessions: self.sessions.len(),
            since: crate::events::timestamp(&self.since),
            last_active: crate::events::timestamp(&self.last_active),
            activity: self.activity.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    /// scope → user id → presence. BTreeMap: `sync` lists users in id order.
    scopes: HashMap<String, BTreeMap<String, Present>>,
    /// session → (user id, scopes it is in).
    sessions: HashMap<String, (String, HashSet<String>)>,
}

impl Registry {
    pub fn count(&self, scope: &str) -> usize {
        self.scopes.get(scope).map_or(0, BTreeMap::len)
    }

    /// A local user of a scope, as gossiped to other replicas.
    pub fn user(&self, scope: &str, id: &str) -> Option<PresenceUser> {
        self.scopes.get(scope)?.get(id).map(|p| p.view(id))
    }

    /// Every scope's local users.
    pub fn all(&self) -> HashMap<String, Vec<PresenceUser>> {
        self.scopes
            .keys()
            .map(|s| (s.clone(), self.users(s)))
            .collect()
    }

    pub fn users(&self, scope: &str) -> Vec<PresenceUser> {
        self.scopes
            .get(scope)
            .map(|users| users.iter().map(|(id, p)| p.view(id)).collect())
            .unwrap_or_default()
    }

    fn change(&self, scope: &str, op: PresenceOp, id: &str) -> Option<Change> {
        let user = self.scopes.get(scope)?.get(id)?.view(id);
        Some(Change {
            scope: scope.to_string(),
            op,
            user,
            count: self.count(scope),
        })
    }

    /// A session entered a scope.
    pub fn join(
        &mut self,
        scope: &str,
        session: &str,
        user: &UserRef,
        now: Instant,
    ) -> Option<Change> {
        let (_, scopes) = self
            .sessions
            .entry(session.to_string())
            .or_insert_with(|| (user.id.clone(), HashSet::new()));
        if !scopes.insert(scope.to_string()) {
            return None;
        }
        let users = self.scopes.entry(scope.to_string()).or_default();
        let wall = Utc::now();
        let op = match users.get_mut(&user.id) {
            Some(p) => {
                p.sessions.insert(session.to_string());
                p.left_at = None;
                if user.name.is_some() {
                    p.name = user.name.clone();
                }
                PresenceOp::Update
            }
            None => {
                users.insert(
                    user.id.clone(),
                    Present {
                        name: user.name.clone(),
                        sessions: HashSet::from([session.to_string()]),
                        since: wall,
                        last_active: wall,
                        active_at: now,
                        activity: None,
                        status: PresenceStatus::Online,
                        left_at: None,
                    },
                );
                PresenceOp::Join
            }
        };
        self.change(scope, op, &user.id)
    }

    /// A session left a scope. The user stays (in grace) when it was their
    /// last session; [`Registry::expire`] announces the leave.
    pub fn leave(&mut self, scope: &str, session: &str, now: Instant) -> Option<Change> {
        let (user, scopes) = self.sessions.get_mut(session)?;
        if !scopes.remove(scope) {
            return None;
        }
        let user = user.clone();
        if scopes.is_empty() {
            self.sessions.remove(session);
        }
        let p = self.scopes.get_mut(scope)?.get_mut(&user)?;
        p.sessions.remove(session);
        if p.sessions.is_empty() {
            p.left_at = Some(now);
        }
        self.change(scope, PresenceOp::Update, &user)
    }

    /// All scopes a session is in (for a disconnect).
    pub fn scopes_of(&self, session: &str) -> Vec<String> {
        self.sessions
            .get(session)
            .map(|(_, s)| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Users whose grace has passed leave; returns the `leave` changes.
    pub fn expire(&mut self, grace: Duration, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for (scope, users) in &mut self.scopes {
            let gone: Vec<String> = users
                .iter()
                .filter(|(_, p)| p.left_at.is_some_and(|t| now.duration_since(t) >= grace))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(p) = users.remove(&id) {
                    let mut user = p.view(&id);
                    user.sessions = 0;
                    changes.push(Change {
                        scope: scope.clone(),
                        op: PresenceOp::Leave,
                        user,
                        count: users.len(),
                    });
                }
            }
        }
        self.scopes.retain(|_, users| !users.is_empty());
        changes
    }

    /// The session's user did something: online again, `last_active` now.
    pub fn activity(&mut self, session: &str, action: Option<&str>, now: Instant) -> Vec<Change> {
        let Some((user, scopes)) = self.sessions.get(session) else {
            return Vec::new();
        };
        let (user, scopes) = (user.clone(), scopes.clone());
        let wall = Utc::now();
        let mut changes = Vec::new();
        for scope in scopes {
            if let Some(p) = self.scopes.get_mut(&scope).and_then(|u| u.get_mut(&user)) {
                p.status = PresenceStatus::Online;
                p.last_active = wall;
                p.active_at = now;
                if let Some(a) = action {
                    p.activity = Some(a.to_string());
                }
                changes.extend(self.change(&scope, PresenceOp::Update, &user));
            }
        }
        changes
    }

    /// Online users inactive for `idle` become idle; returns the updates.
    pub fn mark_idle(&mut self, idle: Duration, now: Instant) -> Vec<Change> {
        let mut marked = Vec::new();
        for (scope, users) in &mut self.scopes {
            for (id, p) in users.iter_mut() {
                if p.status == PresenceStatus::Online && now.duration_since(p.active_at) >= idle {
                    p.status = PresenceStatus::Idle;
                    marked.push((scope.clone(), id.clone()));
                }
            }
        }
        marked
            .iter()
            .filter_map(|(scope, id)| self.change(scope, PresenceOp::Update, id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserRef {
        UserRef {
            id: "alice".into(),
            name: Some("Alice".into()),
        }
    }

    #[test]
    fn two_tabs_are_one_user() {
        let mut r = Registry::default();
        let t = Instant::now();
        let c = r.join("demo", "s1", &alice(), t).unwrap();
        assert_eq!((c.op, c.count, c.user.sessions), (PresenceOp::Join, 1, 1));
        let c = r.join("demo", "s2", &alice(), t).unwrap();
        assert_eq!((c.op, c.count, c.user.sessions), (PresenceOp::Update, 1, 2));
        // Closing one tab is not a leave.
        let c = r.leave("demo", "s1", t).unwrap();
        assert_eq!((c.op, c.count, c.user.sessions), (PresenceOp::Update, 1, 1));
        assert!(r.expire(Duration::ZERO, t).is_empty());
        assert_eq!(r.count("demo"), 1);
    }

    #[test]
    fn last_session_leaves_after_grace_unless_it_comes_back() {
        let mut r = Registry::default();
        let t = Instant::now();
        let grace = Duration::from_secs(2);
        r.join("demo", "s1", &alice(), t);
        r.leave("demo", "s1", t);
        assert!(r.expire(grace, t + Duration::from_secs(1)).is_empty());
        // A refresh: back within the grace, no leave and no join.
        let c = r
            .join("demo", "s2", &alice(), t + Duration::from_secs(1))
            .unwrap();
        assert_eq!(c.op, PresenceOp::Update);
        assert!(r.expire(grace, t + Duration::from_secs(5)).is_empty());
        r.leave("demo", "s2", t + Duration::from_secs(5));
        let gone = r.expire(grace, t + Duration::from_secs(7));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].op, gone[0].count), (PresenceOp::Leave, 0));
        assert_eq!(r.count("demo"), 0);
        assert!(r.scopes_of("s2").is_empty());
    }

    #[test]
    fn scopes_are_independent() {
        let mut r = Registry::default();
        let t = Instant::now();
        r.join("a", "s1", &alice(), t);
        r.join("b", "s1", &alice(), t);
        let bob = UserRef {
            id: "bob".into(),
            name: None,
        };
        r.join("a", "s9", &bob, t);
        assert_eq!((r.count("a"), r.count("b")), (2, 1));
        assert_eq!(
            r.users("a")
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        let mut scopes = r.scopes_of("s1");
        scopes.sort();
        assert_eq!(scopes, ["a", "b"]);
    }

    #[test]
    fn idle_and_back() {
        let mut r = Registry::default();
        let t = Instant::now();
        r.join("demo", "s1", &alice(), t);
        let idle = Duration::from_secs(300);
        assert!(r.mark_idle(idle, t + Duration::from_secs(10)).is_empty());
        let c = r.mark_idle(idle, t + Duration::from_secs(301));
        assert_eq!(c[0].user.status, PresenceStatus::Idle);
        // Marked once, not on every sweep.
        assert!(r.mark_idle(idle, t + Duration::from_secs(400)).is_empty());
        let c = r.activity("s1", Some("viewing"), t + Duration::from_secs(401));
        assert_eq!(c[0].user.status, PresenceStatus::Online);
        assert_eq!(c[0].user.activity.as_deref(), Some("viewing"));
    }

    #[test]
    fn duplicate_join_and_unknown_leave_are_ignored() {
        let mut r = Registry::default();
        let t = Instant::now();
        assert!(r.join("demo", "s1", &alice(), t).is_some());
        assert!(r.join("demo", "s1", &alice(), t).is_none());
        assert!(r.leave("demo", "nope", t).is_none());
        assert!(r.leave("other", "s1", t).is_none());
    }
}
