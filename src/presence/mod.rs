//! The PresenceHub actor: who is online per scope on this replica.
//!
//! Sessions report entering and leaving scopes and their activity; the actor
//! keeps the [`registry::Registry`], publishes `join`/`leave`/`update` frames
//! on `presence:{scope}` through the broker, answers `sync` snapshots, and
//! reports each scope's user count to the stats aggregator (`online_users`).
//!
//! Every frame carries a per-scope sequence number (`Outbound::seq`) so a
//! subscribing session can drop diffs already contained in its `sync`.

pub mod registry;

use crate::broker::Broker;
use crate::hub::{Outbound, SessionId};
use crate::protocol::{encode, Channel, PresenceOp, PresenceUser, ServerFrame, UserRef};
use crate::stats::Online;
use actix::prelude::*;
use registry::{Change, Registry};
use std::collections::HashMap;
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

pub struct PresenceHub {
    registry: Registry,
    seqs: HashMap<String, i64>,
    broker: Arc<dyn Broker>,
    stats: Recipient<Online>,
    grace: Duration,
    idle: Duration,
}

impl PresenceHub {
    pub fn new(
        broker: Arc<dyn Broker>,
        stats: Recipient<Online>,
        grace: Duration,
        idle: Duration,
    ) -> Self {
        PresenceHub {
            registry: Registry::default(),
            seqs: HashMap::new(),
            broker,
            stats,
            grace,
            idle,
        }
    }

    fn next_seq(&mut self, scope: &str) -> i64 {
        let seq = self.seqs.entry(scope.to_string()).or_insert(0);
        *seq += 1;
        *seq
    }

    fn announce(&mut self, change: Change) {
        let channel = Channel::Presence(change.scope.clone()).to_string();
        let user = match change.op {
            PresenceOp::Leave => serde_json::json!({"id": change.user.id}),
            _ => serde_json::to_value(&change.user).unwrap_or_default(),
        };
        let text = encode(&ServerFrame::Presence {
            channel: &channel,
            op: change.op,
            count: change.count,
            users: None,
            user: Some(&user),
        });
        let seq = self.next_seq(&change.scope);
        self.broker
            .publish(&channel, Arc::new([Outbound { seq, text }]));
        self.stats.do_send(Online {
            scope: change.scope,
            count: change.count,
        });
    }

    fn announce_all(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.announce(c);
        }
    }
}

impl Actor for PresenceHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(every, |act, _| {
            let now = Instant::now();
            let mut changes = act.registry.expire(act.grace, now);
            changes.extend(act.registry.mark_idle(act.idle, now));
            act.announce_all(changes);
        });
    }
}

impl Handler<Enter> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: Enter, _: &mut Context<Self>) {
        let change = self
            .registry
            .join(&msg.scope, &msg.session, &msg.user, Instant::now());
        self.announce_all(change.into_iter().collect());
    }
}

impl Handler<Exit> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: Exit, _: &mut Context<Self>) {
        let change = self
            .registry
            .leave(&msg.scope, &msg.session, Instant::now());
        self.announce_all(change.into_iter().collect());
    }
}

impl Handler<ExitAll> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: ExitAll, _: &mut Context<Self>) {
        let now = Instant::now();
        for scope in self.registry.scopes_of(&msg.session) {
            let change = self.registry.leave(&scope, &msg.session, now);
            self.announce_all(change.into_iter().collect());
        }
    }
}

impl Handler<Activity> for PresenceHub {
    type Result = ();
    fn handle(&mut self, msg: Activity, _: &mut Context<Self>) {
        let changes = self
            .registry
            .activity(&msg.session, msg.action.as_deref(), Instant::now());
        self.announce_all(changes);
    }
}

impl Handler<Sync> for PresenceHub {
    type Result = MessageResult<Sync>;
    fn handle(&mut self, msg: Sync, _: &mut Context<Self>) -> Self::Result {
        let channel = Channel::Presence(msg.scope.clone()).to_string();
        let users = self.registry.users(&msg.scope);
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
        let users = self.registry.users(&msg.scope);
        MessageResult((users.len(), users))
    }
}
