//! The PresenceHub actor: who is online per scope, across replicas.
//!
//! Sessions report entering and leaving scopes and their activity; the local
//! [`registry::Registry`] keeps this replica's sessions (with the leave grace
//! and idle marking). Each local change is shared with the other replicas
//! through the [`PresenceManager`], and the whole local view every third of
//! the TTL and whenever a replica asks; [`cluster::Cluster`] keeps theirs
//! ([`RemotePresence`]) and forgets a replica not heard from for the TTL.
//! The merged view decides what clients see: `join` on a user's first
//! session anywhere, `leave` when the last one is gone everywhere, `update`
//! otherwise.
//!
//! Every replica computes the same merged view, so presence frames are
//! published through [`Broker::publish`] like every other frame, on
//! `presence:{scope}`, a channel that is not relayed: they reach local
//! subscribers only. Each carries a per-scope sequence number
//! (`Outbound::seq`) so a subscribing session can drop diffs already
//! contained in its `sync`. User counts go to the stats aggregator.
//!
//! Clients on the HTTP long-poll fallback are present too: a
//! [`PollPresence`] held by the history request makes its user a session
//! of the scope while the poll is held and for the grace after it
//! ([`polls`]).

pub mod cluster;
pub mod polls;
pub mod registry;
#[cfg(test)]
mod registry_props;

use crate::broker::presence::{PresenceManager, RemotePresence};
use crate::broker::Broker;
use crate::frame::Outbound;
use crate::hub::SessionId;
use crate::protocol::{encode, Channel, PresenceOp, PresenceUser, ServerFrame, UserRef};
use crate::stats::Online;
use actix::prelude::*;
use cluster::{merge, Cluster, Touched};
use polls::Polls;
use registry::{Change, Registry};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Message)]
#[rtype(result = "()")]
pub struct Enter {
    pub scope: String,
    pub session: SessionId,
    pub user: UserRef,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Exit {
    pub scope: String,
    pub session: SessionId,
}

/// The session is gone: it leaves every scope.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExitAll {
    pub session: SessionId,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Activity {
    pub session: SessionId,
    pub action: Option<String>,
}

/// A long-poll of `user` on a channel of `scope` started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollStart {
    pub scope: String,
    pub user: UserRef,
}

/// A long-poll of `user` on a channel of `scope` ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollEnd {
    pub scope: String,
    pub user: String,
}

/// Keeps a long-polling user present in a scope while it lives: created
/// when the poll starts, dropped when its answer is sent or the client
/// goes away.
pub struct PollPresence {
    presence: Addr<PresenceHub>,
    scope: String,
    user: String,
}

impl PollPresence {
    pub fn hold(presence: &Addr<PresenceHub>, scope: &str, user: UserRef) -> Self {
        let id = user.id.clone();
        presence.do_send(PollStart {
            scope: scope.to_string(),
            user,
        });
        PollPresence {
            presence: presence.clone(),
            scope: scope.to_string(),
            user: id,
        }
    }
}

impl Drop for PollPresence {
    fn drop(&mut self) {
        self.presence.do_send(PollEnd {
            scope: std::mem::take(&mut self.scope),
            user: std::mem::take(&mut self.user),
        });
    }
}

/// The `sync` frame for a new subscriber of `presence:{scope}`.
#[derive(Message)]
#[rtype(result = "Outbound")]
pub struct Sync {
    pub scope: String,
}

/// `{"count","users"}` for the HTTP API.
#[derive(Message)]
#[rtype(result = "(usize, Vec<PresenceUser>)")]
pub struct Snapshot {
    pub scope: String,
}

/// Timers of presence.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Before a user's last local session leaving counts as leaving.
    pub grace: Duration,
    /// Without activity before a user is idle.
    pub idle: Duration,
    /// Before another replica's unrefreshed presence is forgotten.
    pub ttl: Duration,
}

pub struct PresenceHub {
    registry: Registry,
    polls: Polls,
    cluster: Cluster,
    /// The merged view clients have been told about: scope → user → state.
    view: HashMap<String, BTreeMap<String, PresenceUser>>,
    seqs: HashMap<String, i64>,
    /// Where the frames go (to local subscribers only: not relayed).
    broker: Arc<dyn Broker>,
    /// Where this replica's presence goes (the other replicas).
    replicas: Arc<dyn PresenceManager>,
    stats: Recipient<Online>,
    timers: Timers,
}

impl PresenceHub {
    pub fn new(
        broker: Arc<dyn Broker>,
        replicas: Arc<dyn PresenceManager>,
        stats: Recipient<Online>,
        timers: Timers,
    ) -> Self {
        PresenceHub {
            registry: Registry::default(),
            polls: Polls::default(),
            cluster: Cluster::default(),
            view: HashMap::new(),
            seqs: HashMap::new(),
            broker,
            replicas,
            stats,
            timers,
        }
    }

    /// Local changes: share them, then show what they change.
    fn local(&mut self, changes: Vec<Change>) {
        let touched: Touched = changes.into_iter().map(|c| (c.scope, c.user.id)).collect();
        for (scope, id) in &touched {
            let user = self.registry.user(scope, id);
            self.replicas.share_user(scope.clone(), id.clone(), user);
        }
        self.show(touched);
    }

    /// Recomputes the merged state of touched users and announces changes.
    fn show(&mut self, touched: Touched) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (scope, id) in touched {
            let local = self.registry.user(&scope, &id);
            let mut merged = merge(local.iter().chain(self.cluster.entries(&scope, &id)));
            let users = self.view.entry(scope.clone()).or_default();
            // Still present: `since` and `last_active` do not go back when
            // the replica that held the earliest or latest entry drops out.
            if let (Some(m), Some(before)) = (merged.as_mut(), users.get(&id)) {
                if before.since < m.since {
                    m.since = before.since.clone();
                }
                if before.last_active > m.last_active {
                    m.last_active = before.last_active.clone();
                    m.activity = before.activity.clone();
                }
            }
            let op = match (users.get(&id), &merged) {
                (None, Some(_)) => PresenceOp::Join,
                (Some(_), None) => PresenceOp::Leave,
                (Some(before), Some(now)) if before != now => PresenceOp::Update,
                _ => continue,
            };
            let user = match merged {
                Some(m) => {
                    let value = serde_json::to_value(&m).unwrap_or_default();
                    users.insert(id.clone(), m);
                    value
                }
                None => {
                    users.remove(&id);
                    serde_json::json!({ "id": id })
                }
            };
            let count = users.len();
            if users.is_empty() {
                self.view.remove(&scope);
            }
            self.announce(&scope, op, count, &user);
            counts.insert(scope, count);
        }
        for (scope, count) in counts {
            self.stats.do_send(Online { scope, count });
        }
    }

    fn announce(&mut self, scope: &str, op: PresenceOp, count: usize, user: &serde_json::Value) {
        let channel = Channel::Presence(scope.to_string()).to_string();
        let text = encode(&ServerFrame::Presence {
            channel: &channel,
            op,
            count,
            users: None,
            user: Some(user),
        });
        let seq = self.seqs.entry(scope.to_string()).or_insert(0);
        *seq += 1;
        self.broker
            .publish(&channel, Arc::new([Outbound { seq: *seq, text }]));
    }

    fn users(&self, scope: &str) -> Vec<PresenceUser> {
        self.view
            .get(scope)
            .map(|u| u.values().cloned().collect())
            .unwrap_or_default()
    }

    fn share_view(&self) {
        self.replicas.share_view(self.registry.all());
    }
}

impl Actor for PresenceHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every =
            (self.timers.grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(every, |act, _| {
            let now = Instant::now();
            // Poll sessions with no poll for the grace leave as of their
            // last poll, so the sweep just below already ends them.
            let mut changes: Vec<Change> = act
                .polls
                .expire(act.timers.grace, now)
                .into_iter()
                .filter_map(|(scope, user, ended_at)| {
                    act.registry
                        .leave(&scope, &polls::session_id(&user), ended_at)
                })
                .collect();
            changes.extend(act.registry.expire(act.timers.grace, now));
            changes.extend(act.registry.mark_idle(act.timers.idle, now));
            act.local(changes);
            let gone = act.cluster.expire(act.timers.ttl, now);
            act.show(gone);
        });
        ctx.run_interval(self.timers.ttl / 3, |act, _| act.share_view());
    }
}

impl Handler<Enter> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: Enter, _: &mut Context<Self>) {
        let change = self
            .registry
            .join(&msg.scope, &msg.session, &msg.user, Instant::now());
        self.local(change.into_iter().collect());
    }
}

impl Handler<Exit> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: Exit, _: &mut Context<Self>) {
        let change = self
            .registry
            .leave(&msg.scope, &msg.session, Instant::now());
        self.local(change.into_iter().collect());
    }
}

impl Handler<ExitAll> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: ExitAll, _: &mut Context<Self>) {
        let now = Instant::now();
        let changes = self
            .registry
            .scopes_of(&msg.session)
            .into_iter()
            .filter_map(|scope| self.registry.leave(&scope, &msg.session, now))
            .collect();
        self.local(changes);
    }
}

impl Handler<PollStart> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: PollStart, _: &mut Context<Self>) {
        if !self.polls.start(&msg.scope, &msg.user.id) {
            return;
        }
        let session = polls::session_id(&msg.user.id);
        let change = self
            .registry
            .join(&msg.scope, &session, &msg.user, Instant::now());
        self.local(change.into_iter().collect());
    }
}

impl Handler<PollEnd> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: PollEnd, _: &mut Context<Self>) {
        self.polls.end(&msg.scope, &msg.user, Instant::now());
    }
}

impl Handler<Activity> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: Activity, _: &mut Context<Self>) {
        let changes = self
            .registry
            .activity(&msg.session, msg.action.as_deref(), Instant::now());
        self.local(changes);
    }
}

impl Handler<RemotePresence> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: RemotePresence, _: &mut Context<Self>) {
        let now = Instant::now();
        let touched = match msg {
            RemotePresence::View { instance, scopes } => self.cluster.full(&instance, scopes, now),
            RemotePresence::User {
                instance,
                scope,
                id,
                user,
            } => self.cluster.user(&instance, &scope, &id, user, now),
            RemotePresence::ViewWanted => {
                self.share_view();
                Vec::new()
            }
        };
        self.show(touched);
    }
}

impl Handler<Sync> for PresenceHub {
    type Result = MessageResult<Sync>;
    fn handle(&mut self, msg: Sync, _: &mut Context<Self>) -> Self::Result {
        let channel = Channel::Presence(msg.scope.clone()).to_string();
        let users = self.users(&msg.scope);
        let text = encode(&ServerFrame::Presence {
            channel: &channel,
            op: PresenceOp::Sync,
            count: users.len(),
            users: Some(&users),
            user: None,
        });
        let seq = self.seqs.get(&msg.scope).copied().unwrap_or(0);
        MessageResult(Outbound { seq, text })
    }
}

impl Handler<Snapshot> for PresenceHub {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, msg: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let users = self.users(&msg.scope);
        MessageResult((users.len(), users))
    }
}
