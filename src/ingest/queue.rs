//! The ingest queue, free of actors so it can be tested: jobs wait here in
//! arrival order, bounded by weight (events, or 1 per notification), and
//! leave as one batch per group commit.
//!
//! Contract:
//! - [`Queue::push`] answers `unavailable` to a job that would pass the
//!   bound; nothing is ever dropped once queued.
//! - [`Queue::take`] takes jobs from the front while they fit in `batch_max`
//!   (a single larger job still goes alone), so arrival order is commit order.
//! - A batch keeps per job only what its reply needs ([`Waiting`]); the
//!   events and notifications move into the commit.

use crate::error::HubError;
use crate::events::{NewEvent, NewNotification};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a job's result goes.
pub type Reply<T> = oneshot::Sender<Result<T, HubError>>;

/// What became of one event of an `Ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Newly stored, at this offset of its scope's feed.
    Stored(i64),
    /// Its key was seen before in its scope (or earlier in the batch): not
    /// stored again.
    Duplicate,
}

/// The reply to an `Ingest`: per event, in input order, what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored(pub Vec<Outcome>);

impl Stored {
    /// The counts `POST /api/events` answers.
    pub fn accepted(&self) -> Accepted {
        let accepted = self
            .0
            .iter()
            .filter(|o| matches!(o, Outcome::Stored(_)))
            .count();
        Accepted {
            accepted,
            duplicates: self.0.len() - accepted,
        }
    }
}

/// Result of storing events (`POST /api/events` answers it as JSON).
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

/// Work for the group commit, with where to send its result.
pub enum Job {
    Events(Vec<NewEvent>, Reply<Stored>),
    Note(NewNotification, Reply<Notified>),
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Events(e, _) => e.len(),
            Job::Note(..) => 1,
        }
    }

    /// Answers the job without doing it.
    pub fn refuse(self, err: HubError) {
        match self {
            Job::Events(_, reply) => drop(reply.send(Err(err))),
            Job::Note(_, reply) => drop(reply.send(Err(err))),
        }
    }
}

/// A job whose contents went into a commit: what its reply needs.
pub enum Waiting {
    /// How many of the batch's events were this job's.
    Events(usize, Reply<Stored>),
    Note(Reply<Notified>),
}

/// One group commit's worth of work.
pub struct Batch {
    pub events: Vec<NewEvent>,
    pub notes: Vec<NewNotification>,
    /// In the order of `events` and `notes`.
    pub waiting: Vec<Waiting>,
    pub weight: usize,
    /// How long each job waited in the queue.
    pub waited: Vec<Duration>,
}

pub struct Queue {
    /// Each job with when it was queued.
    jobs: VecDeque<(Instant, Job)>,
    queued: usize,
    max: usize,
}

impl Queue {
    pub fn new(max: usize) -> Self {
        Queue {
            jobs: VecDeque::new(),
            queued: 0,
            max,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues a job; one that does not fit is answered `unavailable` at
    /// once and `false` returned.
    pub fn push(&mut self, job: Job, now: Instant) -> bool {
        if self.queued + job.weight() > self.max {
            job.refuse(HubError::Unavailable(
                "ingest queue is full; retry shortly".into(),
            ));
            return false;
        }
        self.queued += job.weight();
        self.jobs.push_back((now, job));
        true
    }

    /// The next batch, or `None` when nothing waits.
    pub fn take(&mut self, batch_max: usize, now: Instant) -> Option<Batch> {
        let mut batch = Batch {
            events: Vec::new(),
            notes: Vec::new(),
            waiting: Vec::new(),
            weight: 0,
            waited: Vec::new(),
        };
        while let Some((_, job)) = self.jobs.front() {
            if !batch.waiting.is_empty() && batch.weight + job.weight() > batch_max {
                break;
            }
            batch.weight += job.weight();
            let Some((queued, job)) = self.jobs.pop_front() else {
                break;
            };
            batch.waited.push(now.saturating_duration_since(queued));
            match job {
                Job::Events(mut e, reply) => {
                    batch.waiting.push(Waiting::Events(e.len(), reply));
                    batch.events.append(&mut e);
                }
                Job::Note(n, reply) => {
                    batch.waiting.push(Waiting::Note(reply));
                    batch.notes.push(n);
                }
            }
        }
        self.queued -= batch.weight;
        (!batch.waiting.is_empty()).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(n: usize) -> Job {
        let body: Vec<_> = (0..n)
            .map(|i| json!({"scope": "demo", "kind": "k", "key": format!("k{i}")}))
            .collect();
        let events = crate::events::validate_batch(&json!(body)).unwrap();
        let (reply, _) = tokio::sync::oneshot::channel();
        Job::Events(events, reply)
    }

    #[test]
    fn bounded_by_weight_and_batched_in_order() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        let mut q = Queue::new(10);
        assert!(q.push(events(4), t0));
        assert!(q.push(events(4), t0));
        assert!(!q.push(events(3), t0), "4 + 4 + 3 passes the bound");
        assert!(q.push(events(2), later));
        let first = q.take(6, later).unwrap();
        assert_eq!(first.weight, 4, "the second job does not fit in 6");
        assert_eq!(first.waited, [Duration::from_millis(5)]);
        let second = q.take(6, later).unwrap();
        assert_eq!((second.weight, second.waiting.len()), (6, 2));
        assert_eq!(second.waited, [Duration::from_millis(5), Duration::ZERO]);
        assert!(q.take(6, later).is_none());
        // Room again once taken.
        assert!(q.push(events(10), later));
        assert_eq!(
            q.take(3, later).unwrap().weight,
            10,
            "a large job goes alone"
        );
    }
}
