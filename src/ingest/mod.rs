//! The write path: from an accepted batch to its group commit and its
//! publish. Every source of events (`POST /api/events`, the bus consumers of
//! [`crate::source`]) sends the same [`Ingest`] message.
//!
//! Contract:
//! - Validated events and notifications queue in the [`Committer`] actor
//!   ([`queue`]); one transaction at a time takes everything queued (up to
//!   `batch_max` events) and stores it with gapless offsets
//!   ([`crate::db::commit`]).
//! - Only after the commit are the requests answered ([`Stored`]: per
//!   event, in input order, its feed offset or that it was a duplicate) and
//!   the `event` and `notification` frames published, in offset order,
//!   through the broker; the scopes that changed are reported to
//!   [`crate::stats`].
//! - A full queue, a stopping hub or a failed commit (PostgreSQL down or
//!   restarting included) answers `unavailable` (HTTP 503 with
//!   Retry-After); nothing of that batch is acknowledged and nothing is
//!   published. A commit whose outcome is unknown (the connection died while
//!   `COMMIT` was on its way) may still have stored the batch: a retry with
//!   the same keys finds them as duplicates, and subscribers get the stored
//!   events by filling the gap from PostgreSQL when the next one arrives.
//! - [`Drain`] (graceful stop) refuses new work and replies once everything
//!   queued is committed and answered.

pub mod queue;

use crate::broker::Broker;
use crate::db::{commit, partitions, Pool};
use crate::error::HubError;
use crate::events::{event_frame, notification_frame, EventView, NewEvent, NewNotification};
use crate::frame::Outbound;
use crate::metrics::Metrics;
use crate::protocol::Channel;
use crate::stats::Committed;
use actix::prelude::*;
pub use queue::{Accepted, Notified, Outcome, Reply, Stored};
use queue::{Batch, Job, Queue, Waiting};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Store these events (already validated); the reply comes after the commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ingest {
    pub events: Vec<NewEvent>,
    /// When the batch arrived at its source (the `receive` stage).
    pub received: Instant,
    pub reply: Reply<Stored>,
}

/// Store and send a notification; the reply comes after the commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify {
    pub notification: NewNotification,
    pub reply: Reply<Notified>,
}

/// Stop taking work, commit everything queued, then reply (graceful stop).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub done: oneshot::Sender<()>,
}

/// Settings of the write path (from [`crate::config::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events (and notifications) queued at most.
    pub queue_max: usize,
    /// Events per group commit at most.
    pub batch_max: usize,
    /// History older than this is deleted.
    pub retention: Duration,
}

/// How often partitions ahead are made and history past the retention
/// window is dropped.
const MAINTAIN_EVERY: Duration = Duration::from_secs(600);

pub struct Committer {
    pool: Pool,
    broker: Arc<dyn Broker>,
    stats: Recipient<Committed>,
    metrics: Arc<Metrics>,
    queue: Queue,
    settings: Settings,
    committing: bool,
    draining: Option<Vec<oneshot::Sender<()>>>,
}

impl Committer {
    pub fn new(
        pool: Pool,
        broker: Arc<dyn Broker>,
        stats: Recipient<Committed>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Committer {
            pool,
            broker,
            stats,
            metrics,
            queue: Queue::new(settings.queue_max),
            settings,
            committing: false,
            draining: None,
        }
    }

    /// Creates the days of partitions ahead and drops those past the
    /// retention window (off the write path: its own pooled connection).
    fn maintain(&mut self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let Ok(retention) = chrono::Duration::from_std(self.settings.retention) else {
            return;
        };
        ctx.spawn(
            async move {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                let created = partitions::ensure(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let dropped = partitions::drop_expired(&mut conn, chrono::Utc::now() - retention)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((created, dropped))
            }
            .into_actor(self)
            .map(|result, _, _| match result {
                Ok((created, dropped)) => {
                    if created > 0 {
                        tracing::info!(partitions = created, "created history partitions");
                    }
                    for p in dropped {
                        tracing::info!(partition = %p.name, "dropped history past retention");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "history maintenance failed"),
            }),
        );
    }

    fn enqueue(&mut self, job: Job, ctx: &mut Context<Self>) {
        if self.draining.is_some() {
            return job.refuse(HubError::Unavailable(
                "the hub is shutting down; retry elsewhere".into(),
            ));
        }
        if self.queue.push(job, Instant::now()) {
            self.pump(ctx);
        }
    }

    /// Starts the next group commit if none is running.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        let Some(batch) = self.queue.take(self.settings.batch_max, Instant::now()) else {
            if let Some(waiters) = self.draining.as_mut() {
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            return;
        };
        self.committing = true;
        let Batch {
            events,
            notes,
            waiting,
            weight,
            waited,
        } = batch;
        for wait in waited {
            self.metrics.stages.queue.observe(wait.as_secs_f64());
        }
        let pool = self.pool.clone();
        let started = Instant::now();
        let stages = self.metrics.clone();
        let commit = async move {
            let mut conn = pool.get().await.map_err(HubError::from)?;
            let began = Instant::now();
            let done = commit::commit_batch(&mut conn, &events, &notes)
                .await
                .map_err(|e| {
                    // Whatever failed, the batch is not acknowledged: a
                    // retry is the answer (a statement's own fault is
                    // logged as an error, a lost database as a warning).
                    let what = match HubError::from(e) {
                        HubError::Unavailable(_) => "database unavailable",
                        _ => "database error",
                    };
                    HubError::Unavailable(format!("{what}; nothing acknowledged, retry"))
                })?;
            let stages = &stages.stages;
            stages.statements.observe(done.statements.as_secs_f64());
            let rest = began.elapsed().saturating_sub(done.statements);
            stages.commit.observe(rest.as_secs_f64());
            Ok::<_, HubError>((events, notes, done))
        };
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.committing = false;
            tracing::debug!(
                jobs = waiting.len(),
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
                    act.committed(waiting, &events, &notes, done)
                }
                Err(err) => {
                    for job in waiting {
                        match job {
                            Waiting::Events(_, reply) => drop(reply.send(Err(err.clone()))),
                            Waiting::Note(reply) => drop(reply.send(Err(err.clone()))),
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
        waiting: Vec<Waiting>,
        events: &[NewEvent],
        notes: &[NewNotification],
        done: commit::Committed,
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
        let mut scopes = Vec::with_capacity(feeds.len());
        for (scope, frames) in feeds {
            self.broker
                .publish(&Channel::Feed(scope.to_string()).to_string(), frames.into());
            scopes.push(scope.to_string());
        }
        if !scopes.is_empty() {
            self.stats.do_send(Committed { scopes });
        }
        let mut notified = Vec::with_capacity(notes.len());
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
        for job in waiting {
            match job {
                Waiting::Events(n, reply) => {
                    let outcomes = offsets
                        .by_ref()
                        .take(n)
                        .map(|o| o.map_or(Outcome::Duplicate, Outcome::Stored))
                        .collect();
                    let _ = reply.send(Ok(Stored(outcomes)));
                }
                Waiting::Note(reply) => {
                    if let Some(n) = notified.next() {
                        let _ = reply.send(Ok(n));
                    }
                }
            }
        }
    }
}

impl Actor for Committer {
    type Context = Context<Self>;

    /// Partitions ahead and retention: the one writer of the history tables
    /// also keeps them, every [`MAINTAIN_EVERY`] (at start, `db::prepare`
    /// has just made the partitions ahead).
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(MAINTAIN_EVERY, |act, ctx| act.maintain(ctx));
    }
}

impl Handler<Ingest> for Committer {
    type Result = ();
    fn handle(&mut self, msg: Ingest, ctx: &mut Context<Self>) {
        self.metrics
            .stages
            .receive
            .observe(msg.received.elapsed().as_secs_f64());
        self.enqueue(Job::Events(msg.events, msg.reply), ctx);
    }
}

impl Handler<Notify> for Committer {
    type Result = ();
    fn handle(&mut self, msg: Notify, ctx: &mut Context<Self>) {
        self.enqueue(Job::Note(msg.notification, msg.reply), ctx);
    }
}

impl Handler<Drain> for Committer {
    type Result = ();
    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) {
        self.draining.get_or_insert_with(Vec::new).push(msg.done);
        self.pump(ctx);
    }
}
