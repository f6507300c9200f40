//! The pace of a run: how many events to generate when, and in which
//! batches, until the run ends.
//!
//! - A tick every 100–250 ms (about one event per batch at low rates, never
//!   more than ten batches a second) generates the events due since the last
//!   one, so the total follows `--rate` across all scopes; the first tick
//!   carries one event, so something shows up at once.
//! - The events of a tick are stamped spread over that tick and cut into
//!   batches of at most `--max-batch`, delivered one after the other.
//! - While a batch is being delivered (and retried) nothing new is
//!   generated; after an outage the backlog is capped at about two seconds'
//!   worth of events.
//! - Every 5 s a one-line progress summary is logged.
//! - The pump returns after `--count` events were generated and delivered,
//!   on a stop signal, at the deadline, or when the sink stops; events
//!   generated but not delivered then count as unconfirmed.

use std::time::Duration;

use chrono::Utc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::event::Event;
use crate::simulator::Simulator;
use crate::sink::{Delivery, Sink, Totals};
use crate::stop::Stop;

const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How fast and how much.
pub struct Pace {
    /// Events per second, positive.
    pub rate: f64,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Most events per batch.
    pub max_batch: usize,
    /// When the run started (the progress reports count from here).
    pub start: Instant,
}

/// Generates events at the requested pace and delivers them until a stop.
pub async fn pump<S: Sink>(
    sim: &mut Simulator,
    sink: &mut S,
    stop: &Stop,
    totals: &mut Totals,
    pace: Pace,
) -> anyhow::Result<()> {
    let tick = tick_interval(pace.rate);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report = tokio::time::interval_at(pace.start + REPORT_EVERY, REPORT_EVERY);
    report.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // After an outage, catch up by at most about two seconds of events.
    let max_backlog = (pace.rate * 2.0).max(1.0);
    // Start with one event in hand so something shows up at once.
    let mut carry: f64 = 1.0;
    let mut last = Instant::now();
    let mut generated: u64 = 0;
    loop {
        if pace.count.is_some_and(|count| generated >= count) {
            return Ok(());
        }
        tokio::select! {
            _ = stop.signalled() => return Ok(()),
            _ = stop.deadline() => return Ok(()),
            _ = report.tick() => {
                tracing::info!("simulate: {}", totals.summary(pace.start.elapsed()));
                continue;
            }
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(last);
        last = now;
        carry = (carry + pace.rate * elapsed.as_secs_f64()).min(max_backlog);
        let mut n = carry.floor() as u64;
        if let Some(count) = pace.count {
            n = n.min(count - generated);
        }
        if n == 0 {
            continue;
        }
        carry -= n as f64;
        generated += n;
        // Spread the timestamps over the tick the events belong to.
        let wall = Utc::now();
        let step_us = elapsed.as_micros() as f64 / n as f64;
        let events: Vec<Event> = (0..n)
            .map(|i| {
                let back = chrono::Duration::microseconds(((n - 1 - i) as f64 * step_us) as i64);
                sim.next_event(wall - back)
            })
            .collect();
        let mut chunks = events.chunks(pace.max_batch.max(1));
        while let Some(chunk) = chunks.next() {
            if let Delivery::Stopped = sink.deliver(chunk, stop, totals).await? {
                let rest: usize = chunks.map(<[Event]>::len).sum();
                totals.unconfirmed += rest as u64;
                return Ok(());
            }
        }
    }
}

/// Batches every 100–250 ms: about one event per batch at low rates, never
/// more than ten batches a second.
fn tick_interval(rate: f64) -> Duration {
    let ms = (1000.0 / rate).clamp(100.0, 250.0);
    Duration::from_millis(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_stays_in_bounds() {
        assert_eq!(tick_interval(5.0), Duration::from_millis(200));
        assert_eq!(tick_interval(0.1), Duration::from_millis(250));
        assert_eq!(tick_interval(10_000.0), Duration::from_millis(100));
    }
}
