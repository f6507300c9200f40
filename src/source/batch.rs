//! The seam every source goes through: the events of one batch go to the
//! group commit as one [`Ingest`], and the source learns, per message in
//! input order, whether it was stored, a duplicate, or refused before.
//!
//! Contract: [`commit`] returns only after the commit (or its failure:
//! `unavailable`, nothing of the batch stored), so a source acknowledges
//! upstream exactly what is committed. Validation and idempotency are not
//! here: validation is [`crate::events`], keys are claimed in the commit.

use super::decode::{Decoder, Refusal};
use super::health::Health;
use crate::error::HubError;
use crate::events::NewEvent;
use crate::ingest::{Ingest, Outcome, Stored};
use crate::metrics::Metrics;
use actix::Recipient;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// What every source's tasks share: the decoder, the way to ingest, the
/// metrics and health they report to, and the stop signal.
pub struct Shared {
    pub decoder: Arc<Decoder>,
    pub ingest: Recipient<Ingest>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub stopping: watch::Receiver<bool>,
}

/// What became of one message of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate<'a> {
    /// Stored at this offset of its scope's feed.
    Stored(i64),
    /// Its key had been stored before: nothing stored or counted again.
    Duplicate,
    /// Refused before the commit (to be dead-lettered).
    Refused(&'a Refusal),
}

/// Commits validated events as one batch and waits for the commit;
/// `received` is when the batch arrived (the `receive` stage starts there).
pub async fn commit(
    ingest: &Recipient<Ingest>,
    events: Vec<NewEvent>,
    received: Instant,
) -> Result<Stored, HubError> {
    let (reply, done) = tokio::sync::oneshot::channel();
    ingest
        .send(Ingest {
            events,
            received,
            reply,
        })
        .await?;
    done.await.map_err(HubError::internal)?
}

/// Commits the messages of a bus batch that decoded to events; per message,
/// in input order, its fate. The batch is left as it is, so a source can
/// offer the same batch again after `unavailable`.
pub async fn commit_messages<'a>(
    ingest: &Recipient<Ingest>,
    messages: &'a [Result<NewEvent, Refusal>],
) -> Result<Vec<Fate<'a>>, HubError> {
    let received = Instant::now();
    let events: Vec<NewEvent> = messages
        .iter()
        .filter_map(|m| m.as_ref().ok().cloned())
        .collect();
    let stored = if events.is_empty() {
        Stored(Vec::new())
    } else {
        commit(ingest, events, received).await?
    };
    let mut outcomes = stored.0.into_iter();
    messages
        .iter()
        .map(|m| match m {
            Err(refusal) => Ok(Fate::Refused(refusal)),
            Ok(_) => match outcomes.next() {
                Some(Outcome::Stored(offset)) => Ok(Fate::Stored(offset)),
                Some(Outcome::Duplicate) => Ok(Fate::Duplicate),
                None => Err(HubError::internal("the commit answered fewer events")),
            },
        })
        .collect()
}
