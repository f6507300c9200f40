//! The StatsAggregator actor: live statistics per scope.
//!
//! A scope touched by a commit (here: [`Committed`], which is passed on to
//! the other replicas as a [`Notice`]; or on another replica: the [`Notice`]
//! it sent), or whose `online_users` changed,
//! is recomputed at most once per debounce window (trailing edge, bounded by
//! a maximum wait) from the small per-scope tables. A snapshot that differs
//! from the previous one gets the next `version` (kept in PostgreSQL, so it
//! only grows) and is published on `stats:{scope}` with `changed`. Scopes
//! with subscribers are also recomputed every tick so time windows slide.

pub mod body;
pub mod debounce;
pub mod diff;

use crate::broker::{Broker, Notice};
use crate::db::{self, Pool};
use crate::error::HubError;
use crate::frame::Outbound;
use crate::hub::Watch;
use crate::metrics::Metrics;
use crate::protocol::{encode, Channel, ServerFrame};
use actix::prelude::*;
use debounce::Debouncer;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Settings of the aggregator (from [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub debounce: Duration,
    pub max_wait: Duration,
    pub tick: Duration,
    pub active_window: Duration,
}

/// A stats snapshot as last computed.
#[derive(Debug)]
pub struct Snapshot {
    pub version: i64,
    /// The stats body (PROTOCOL.md) without `version`.
    pub stats: Value,
    /// The `stats` frame as published.
    pub frame: Outbound,
    computed_at: Instant,
}

type Reply<T> = oneshot::Sender<Result<T, HubError>>;

/// The current snapshot of a scope, computed if needed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetStats {
    pub scope: String,
    pub reply: Reply<Arc<Snapshot>>,
}

/// Ingest → stats: events were committed in these scopes on this replica.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub scopes: Vec<String>,
}

/// Presence → stats: a scope's number of present users changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Online {
    pub scope: String,
    pub count: usize,
}

pub struct StatsAggregator {
    pool: Pool,
    metrics: Arc<Metrics>,
    broker: Arc<dyn Broker>,
    settings: Settings,
    snapshots: HashMap<String, Arc<Snapshot>>,
    watched: HashSet<String>,
    online: HashMap<String, usize>,
    debouncer: Debouncer,
    computing: HashSet<String>,
    waiters: HashMap<String, Vec<Reply<Arc<Snapshot>>>>,
}

impl StatsAggregator {
    pub fn new(
        pool: Pool,
        broker: Arc<dyn Broker>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        StatsAggregator {
            pool,
            metrics,
            broker,
            debouncer: Debouncer::new(settings.debounce, settings.max_wait),
            settings,
            snapshots: HashMap::new(),
            watched: HashSet::new(),
            online: HashMap::new(),
            computing: HashSet::new(),
            waiters: HashMap::new(),
        }
    }

    /// A scope's data changed: recompute soon if anyone looks at it.
    fn touch(&mut self, scope: &str, now: Instant) {
        if self.watched.contains(scope) || self.snapshots.contains_key(scope) {
            self.debouncer.mark(scope, now);
        }
    }

    /// Recomputes a scope's stats now (one computation per scope at a time
    /// here, and, when nobody here is waiting for it, one per debounce window
    /// in the cluster: the replica that claims the window computes and
    /// publishes to all).
    fn refresh(&mut self, scope: String, ctx: &mut Context<Self>) {
        let waited_for = self.waiters.contains_key(&scope) || !self.snapshots.contains_key(&scope);
        if !waited_for && !self.computing.contains(&scope) {
            let claim = self.broker.claim(
                &Channel::Stats(scope.clone()).to_string(),
                self.settings.debounce,
            );
            ctx.spawn(claim.into_actor(self).map(move |won, act, ctx| {
                if won {
                    act.compute(scope, ctx);
                }
            }));
            return;
        }
        self.compute(scope, ctx);
    }

    fn compute(&mut self, scope: String, ctx: &mut Context<Self>) {
        if !self.computing.insert(scope.clone()) {
            // Running already: make sure a fresh one follows.
            self.debouncer.mark(&scope, Instant::now());
            return;
        }
        let pool = self.pool.clone();
        let previous = self.snapshots.get(&scope).cloned();
        let online = self.online.get(&scope).copied().unwrap_or(0);
        let window = chrono::Duration::from_std(self.settings.active_window)
            .unwrap_or(chrono::Duration::minutes(15));
        let key = scope.clone();
        let metrics = self.metrics.clone();
        let compute = async move {
            let mut conn = pool.get().await.map_err(HubError::from)?;
            let started = Instant::now();
            let rows = db::stats::scope_rows(&mut conn, &scope, window).await?;
            metrics
                .stats_query_seconds
                .observe(started.elapsed().as_secs_f64());
            let stats = body::body(&scope, rows, online);
            let changed = match &previous {
                Some(p) => {
                    let changed = diff::changed(&p.stats, &stats);
                    if changed.is_empty() {
                        return Ok(None);
                    }
                    changed
                }
                None => Vec::new(),
            };
            let version = db::stats::next_stats_version(&mut conn, &scope).await?;
            Ok::<_, HubError>(Some((version, stats, changed)))
        };
        ctx.spawn(compute.into_actor(self).map(move |result, act, _| {
            act.computing.remove(&key);
            let result = match result {
                Ok(Some((version, stats, changed))) => {
                    let channel = Channel::Stats(key.clone()).to_string();
                    let text = encode(&ServerFrame::Stats {
                        channel: &channel,
                        version,
                        changed: &changed,
                        stats: &stats,
                    });
                    let frame = Outbound { seq: version, text };
                    // A first snapshot (no previous) is only for the asker.
                    if !changed.is_empty() {
                        act.broker.publish(&channel, Arc::new([frame.clone()]));
                    }
                    let snap = Arc::new(Snapshot {
                        version,
                        stats,
                        frame,
                        computed_at: Instant::now(),
                    });
                    act.snapshots.insert(key.clone(), snap.clone());
                    Ok(snap)
                }
                Ok(None) => match act.snapshots.get_mut(&key) {
                    Some(snap) => {
                        if let Some(s) = Arc::get_mut(snap) {
                            s.computed_at = Instant::now();
                        }
                        Ok(snap.clone())
                    }
                    None => Err(HubError::internal("stats snapshot vanished")),
                },
                Err(e) => Err(e),
            };
            for waiter in act.waiters.remove(&key).unwrap_or_default() {
                let _ = waiter.send(match &result {
                    Ok(s) => Ok(s.clone()),
                    Err(e) => Err(e.clone()),
                });
            }
        }));
    }
}

impl Actor for StatsAggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Drives the debouncer.
        let every = (self.settings.debounce / 5)
            .clamp(Duration::from_millis(5), Duration::from_millis(100));
        ctx.run_interval(every, |act, ctx| {
            for scope in act.debouncer.take_due(Instant::now()) {
                act.refresh(scope, ctx);
            }
        });
        // Time windows slide: watched scopes are looked at every tick; idle
        // snapshots nobody watches are forgotten.
        ctx.run_interval(self.settings.tick, |act, _| {
            let now = Instant::now();
            for scope in act.watched.clone() {
                act.debouncer.mark(&scope, now);
            }
            let watched = &act.watched;
            act.snapshots.retain(|scope, s| {
                watched.contains(scope)
                    || now.duration_since(s.computed_at) < Duration::from_secs(60)
            });
        });
    }
}

impl Handler<GetStats> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: GetStats, ctx: &mut Context<Self>) {
        if let Some(snap) = self.snapshots.get(&msg.scope) {
            // A watched scope is kept fresh; any other is served from a
            // snapshot at most one debounce window old.
            let fresh = if self.watched.contains(&msg.scope) {
                !self.debouncer.is_pending(&msg.scope)
            } else {
                snap.computed_at.elapsed() < self.settings.debounce
            };
            if fresh {
                let _ = msg.reply.send(Ok(snap.clone()));
                return;
            }
        }
        self.waiters
            .entry(msg.scope.clone())
            .or_default()
            .push(msg.reply);
        self.refresh(msg.scope, ctx);
    }
}

impl Handler<Watch> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) {
        if msg.on {
            self.watched.insert(msg.scope);
        } else {
            self.watched.remove(&msg.scope);
        }
    }
}

impl Handler<Online> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Online, _: &mut Context<Self>) {
        let changed = self.online.get(&msg.scope) != Some(&msg.count);
        if msg.count == 0 {
            self.online.remove(&msg.scope);
        } else {
            self.online.insert(msg.scope.clone(), msg.count);
        }
        if changed {
            self.touch(&msg.scope, Instant::now());
        }
    }
}

/// From another replica.
impl Handler<Notice> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Notice, _: &mut Context<Self>) {
        let Notice::Committed { scopes } = msg;
        let now = Instant::now();
        for scope in scopes {
            self.touch(&scope, now);
        }
    }
}

impl Handler<Committed> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        let now = Instant::now();
        for scope in &msg.scopes {
            self.touch(scope, now);
        }
        // Other replicas' stats subscribers of these scopes are stale too.
        self.broker.notify(Notice::Committed { scopes: msg.scopes });
    }
}
