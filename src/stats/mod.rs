//! The StatsAggregator actor: the write path and the stats path.
//!
//! Write path (group commit): ingest requests and notifications queue here;
//! one transaction at a time takes everything queued (up to `batch_max`
//! events), stores it with gapless offsets, and only after the commit are the
//! requests answered and the `event`/`notification` frames published, in
//! offset order. A full queue answers `unavailable` (HTTP 503, Retry-After).
//!
//! Stats path: a scope touched by a commit, or whose `online_users` changed,
//! is recomputed at most once per debounce window (trailing edge, bounded by
//! a maximum wait) from the small per-scope tables. A snapshot that differs
//! from the previous one gets the next `version` (kept in PostgreSQL, so it
//! only grows) and is published on `stats:{scope}` with `changed`. Scopes
//! with subscribers are also recomputed every tick so time windows slide.

pub mod debounce;
pub mod diff;

use crate::broker::{Broker, FromReplica, Gossip};
use crate::db::{queries, Pool};
use crate::error::HubError;
use crate::events::{event_frame, notification_frame, EventView, NewEvent, NewNotification};
use crate::frame::Outbound;
use crate::hub::Watch;
use crate::metrics::Metrics;
use crate::protocol::{encode, Channel, ServerFrame};
use actix::prelude::*;
use debounce::Debouncer;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    pub retention: Duration,
    pub queue_max: usize,
    pub batch_max: usize,
}

/// Result of `POST /api/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Result of `POST /api/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notified {
    pub id: String,
    pub offset: i64,
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

/// Store these events (already validated); the reply comes after the commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ingest {
    pub events: Vec<NewEvent>,
    pub reply: Reply<Accepted>,
}

/// Store and send a notification; the reply comes after the commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify {
    pub notification: NewNotification,
    pub reply: Reply<Notified>,
}

/// The current snapshot of a scope, computed if needed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetStats {
    pub scope: String,
    pub reply: Reply<Arc<Snapshot>>,
}

/// Presence → stats: a scope's number of present users changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Online {
    pub scope: String,
    pub count: usize,
}

/// Stop taking work, commit everything queued, then reply (graceful stop).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub done: oneshot::Sender<()>,
}

enum Job {
    Events(Vec<NewEvent>, Reply<Accepted>),
    Note(NewNotification, Reply<Notified>),
}

/// A job whose contents went into a commit: what its reply needs.
enum Waiting {
    Events(usize, Reply<Accepted>),
    Note(Reply<Notified>),
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Events(e, _) => e.len(),
            Job::Note(..) => 1,
        }
    }
}

pub struct StatsAggregator {
    pool: Pool,
    metrics: Arc<Metrics>,
    broker: Arc<dyn Broker>,
    settings: Settings,
    queue: VecDeque<Job>,
    queued: usize,
    committing: bool,
    draining: Option<Vec<oneshot::Sender<()>>>,
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
            queue: VecDeque::new(),
            queued: 0,
            committing: false,
            draining: None,
            snapshots: HashMap::new(),
            watched: HashSet::new(),
            online: HashMap::new(),
            computing: HashSet::new(),
            waiters: HashMap::new(),
        }
    }

    fn enqueue(&mut self, job: Job, ctx: &mut Context<Self>) {
        let refusal = if self.draining.is_some() {
            Some(HubError::Unavailable(
                "the hub is shutting down; retry elsewhere".into(),
            ))
        } else if self.queued + job.weight() > self.settings.queue_max {
            Some(HubError::Unavailable(
                "ingest queue is full; retry shortly".into(),
            ))
        } else {
            None
        };
        if let Some(err) = refusal {
            match job {
                Job::Events(_, reply) => drop(reply.send(Err(err))),
                Job::Note(_, reply) => drop(reply.send(Err(err))),
            }
            return;
        }
        self.queued += job.weight();
        self.queue.push_back(job);
        self.pump(ctx);
    }

    /// Starts the next group commit if none is running.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.queue.is_empty() {
            if !self.committing {
                if let Some(waiters) = self.draining.as_mut() {
                    for w in waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
            return;
        }
        // Events and notifications move into the commit; the jobs keep
        // only what their replies need.
        let mut jobs = Vec::new();
        let mut events = Vec::new();
        let mut notes = Vec::new();
        let mut weight = 0;
        while let Some(job) = self.queue.front() {
            if !jobs.is_empty() && weight + job.weight() > self.settings.batch_max {
                break;
            }
            weight += job.weight();
            match self.queue.pop_front() {
                Some(Job::Events(mut e, reply)) => {
                    jobs.push(Waiting::Events(e.len(), reply));
                    events.append(&mut e);
                }
                Some(Job::Note(n, reply)) => {
                    jobs.push(Waiting::Note(reply));
                    notes.push(n);
                }
                None => break,
            }
        }
        self.queued -= weight;
        self.committing = true;
        let pool = self.pool.clone();
        let started = Instant::now();
        let commit = async move {
            let mut conn = pool.get().await.map_err(HubError::from)?;
            let done = queries::commit_batch(&mut conn, &events, &notes)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "commit failed");
                    HubError::Unavailable("database error; nothing was stored, retry".into())
                })?;
            Ok::<_, HubError>((events, notes, done))
        };
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.committing = false;
            tracing::debug!(
                jobs = jobs.len(),
                weight,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "group commit"
            );
            match result {
                Ok((events, notes, done)) => {
                    act.metrics.ingest_batch_events.observe(weight as f64);
                    act.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    act.committed(jobs, &events, &notes, done)
                }
                Err(err) => {
                    for job in jobs {
                        match job {
                            Waiting::Events(_, reply) => drop(reply.send(Err(clone_err(&err)))),
                            Waiting::Note(reply) => drop(reply.send(Err(clone_err(&err)))),
                        }
                    }
                }
            }
            act.pump(ctx);
        }));
    }

    /// Publishes what a commit stored, then answers its requests.
    fn committed(
        &mut self,
        jobs: Vec<Waiting>,
        events: &[NewEvent],
        notes: &[NewNotification],
        done: queries::Committed,
    ) {
        let mut feeds: BTreeMap<&str, Vec<Outbound>> = BTreeMap::new();
        for (e, offset) in events.iter().zip(&done.event_offsets) {
            if let Some(offset) = *offset {
                let subject = e.subject_json();
                let text = event_frame(
                    &e.scope,
                    offset,
                    &EventView {
                        id: &e.event_id,
                        kind: &e.kind,
                        actor: e.actor.as_ref(),
                        subject: subject.as_ref(),
                        data: &e.data,
                        at: &e.at,
                    },
                );
                feeds
                    .entry(&e.scope)
                    .or_default()
                    .push(Outbound { seq: offset, text });
            }
        }
        let now = Instant::now();
        let mut dirty = Vec::new();
        for (scope, frames) in feeds {
            self.broker
                .publish(&Channel::Feed(scope.to_string()).to_string(), frames.into());
            self.touch(scope, now);
            dirty.push(scope.to_string());
        }
        if !dirty.is_empty() {
            // Other replicas' stats subscribers of these scopes are stale too.
            self.broker.gossip(Gossip::Dirty { scopes: dirty });
        }
        let mut notified = Vec::new();
        for (n, offset) in notes.iter().zip(&done.notification_offsets) {
            let channel = n.channel.to_string();
            let text =
                notification_frame(&channel, *offset, &n.id, &n.level, &n.title, &n.body, &n.at);
            self.broker
                .publish(&channel, Arc::new([Outbound { seq: *offset, text }]));
            notified.push(Notified {
                id: n.id.to_string(),
                offset: *offset,
            });
        }

        let mut offsets = done.event_offsets.iter();
        let mut notified = notified.into_iter();
        for job in jobs {
            match job {
                Waiting::Events(n, reply) => {
                    let accepted = offsets.by_ref().take(n).filter(|o| o.is_some()).count();
                    let _ = reply.send(Ok(Accepted {
                        accepted,
                        duplicates: n - accepted,
                    }));
                }
                Waiting::Note(reply) => {
                    if let Some(n) = notified.next() {
                        let _ = reply.send(Ok(n));
                    }
                }
            }
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
            let claim = self
                .broker
                .claim(&format!("stats:{scope}"), self.settings.debounce);
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
            let mut stats = queries::scope_stats(&mut conn, &scope, window).await?;
            metrics
                .stats_query_seconds
                .observe(started.elapsed().as_secs_f64());
            stats["online_users"] = online.into();
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
            let version = queries::next_stats_version(&mut conn, &scope).await?;
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
                    Err(e) => Err(clone_err(e)),
                });
            }
        }));
    }
}

/// `HubError` is not `Clone` (it need not be elsewhere); waiters share one.
fn clone_err(e: &HubError) -> HubError {
    match e {
        HubError::Unavailable(m) => HubError::Unavailable(m.clone()),
        other => HubError::Internal(other.to_string()),
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
        // Retention.
        ctx.run_interval(Duration::from_secs(600), |act, ctx| {
            let pool = act.pool.clone();
            let Ok(retention) = chrono::Duration::from_std(act.settings.retention) else {
                return;
            };
            ctx.spawn(
                async move {
                    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                    queries::prune(&mut conn, chrono::Utc::now() - retention)
                        .await
                        .map_err(|e| e.to_string())
                }
                .into_actor(act)
                .map(|result, _, _| match result {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "pruned history"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning failed"),
                }),
            );
        });
    }
}

impl Handler<Ingest> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        self.enqueue(Job::Events(msg.events, msg.reply), ctx);
    }
}

impl Handler<Notify> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Notify, ctx: &mut Context<Self>) {
        self.enqueue(Job::Note(msg.notification, msg.reply), ctx);
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

impl Handler<FromReplica> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: FromReplica, _: &mut Context<Self>) {
        if let Gossip::Dirty { scopes } = msg.gossip {
            let now = Instant::now();
            for scope in scopes {
                self.touch(&scope, now);
            }
        }
    }
}

impl Handler<Drain> for StatsAggregator {
    type Result = ();
    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) {
        self.draining.get_or_insert_with(Vec::new).push(msg.done);
        self.pump(ctx);
    }
}
