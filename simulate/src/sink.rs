//! [`Sink`]: where generated batches go, and the [`Totals`] of a run.
//!
//! Every sink keeps this contract, so the pace and the summaries do not
//! depend on the transport:
//!
//! - [`Sink::deliver`] hands over one batch and returns [`Delivery::Done`]
//!   once the destination has taken all of it, counted in `sent` (and in
//!   `accepted` / `duplicates` as the destination reports them).
//! - What may succeed later is retried with the very same events (same
//!   keys), so a retry after a lost confirmation only makes duplicates;
//!   every failed attempt counts in `errors`.
//! - When [`Stop`] fires first, the batch is counted as `unconfirmed` and
//!   the answer is [`Delivery::Stopped`]. A refusal that cannot succeed later
//!   is an error, which ends the run.
//! - Nothing new is generated while `deliver` runs: the pace waits for it.

use std::future::Future;
use std::time::Duration;

use crate::event::Event;
use crate::stop::Stop;

/// A destination for batches of events.
pub trait Sink {
    /// Where the events go, for the log.
    fn destination(&self) -> &str;

    /// Delivers `batch` until it is taken, `stop` fires, or it is refused for
    /// good; counts the outcome in `totals`.
    fn deliver(
        &mut self,
        batch: &[Event],
        stop: &Stop,
        totals: &mut Totals,
    ) -> impl Future<Output = anyhow::Result<Delivery>> + Send;
}

/// How a delivery ended, short of an error.
#[derive(Debug)]
pub enum Delivery {
    /// The destination took the batch.
    Done,
    /// The run stopped (Ctrl-C or `--duration`) before the destination
    /// confirmed it.
    Stopped,
}

/// Counters of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Events in batches the destination confirmed.
    pub sent: u64,
    /// Of those, newly stored.
    pub accepted: u64,
    /// Of those, already known by key.
    pub duplicates: u64,
    /// Failed attempts (each was retried or ended the run).
    pub errors: u64,
    /// Events generated but never confirmed because the run stopped.
    pub unconfirmed: u64,
}

impl Totals {
    /// One line for the log: counts and the effective rate over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        };
        format!(
            "sent {} (accepted {}, duplicates {}), errors {}, {:.1} ev/s over {:.0} s",
            self.sent, self.accepted, self.duplicates, self.errors, rate, secs
        )
    }
}
