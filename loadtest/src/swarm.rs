//! A swarm of feed subscribers: each connects (round robin over the hubs),
//! subscribes to `feed:{scope}` and checks every `event` frame for loss,
//! duplication and order, and records the latency from the event's send
//! time to its delivery. Optionally each reconnects when its connection
//! drops and resumes with `since`, measuring how long it took to be live.

use crate::client::{scan_event, Client};
use crate::first_error::FirstError;
use crate::measure::{self, histogram, Latency, LocalBatch, SharedHistogram};
use crate::target::{unix_micros, Target};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// Offsets seen by one subscriber.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    seen: Vec<u64>,
    /// Every offset up to this one was seen.
    pub contiguous: i64,
    /// Highest offset seen.
    pub max_seen: i64,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// How an offered offset was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    /// New, but lower than one already seen.
    OutOfOrder,
}

impl Tracker {
    pub fn offer(&mut self, offset: i64) -> Seen {
        if offset < 1 {
            self.out_of_order += 1;
            return Seen::OutOfOrder;
        }
        let bit = (offset - 1) as usize;
        let word = bit / 64;
        if word >= self.seen.len() {
            self.seen.resize(word + 1 + self.seen.len() / 2, 0);
        }
        let mask = 1u64 << (bit % 64);
        if self.seen[word] & mask != 0 {
            self.duplicated += 1;
            return Seen::Duplicate;
        }
        self.seen[word] |= mask;
        self.unique += 1;
        let verdict = if offset < self.max_seen {
            self.out_of_order += 1;
            Seen::OutOfOrder
        } else {
            Seen::New
        };
        self.max_seen = self.max_seen.max(offset);
        while self.is_seen(self.contiguous + 1) {
            self.contiguous += 1;
        }
        verdict
    }

    fn is_seen(&self, offset: i64) -> bool {
        let bit = (offset - 1) as usize;
        self.seen
            .get(bit / 64)
            .is_some_and(|w| w & (1u64 << (bit % 64)) != 0)
    }
}

/// Settings of a swarm.
#[derive(Debug, Clone)]
pub struct SwarmSpec {
    pub connections: usize,
    /// Scope names; subscriber `i` takes `scopes[i % len]`.
    pub scopes: Vec<String>,
    /// Handshakes in flight at most.
    pub connect_concurrency: usize,
    /// Reconnect (to the next hub) and resume with `since` when dropped.
    pub reconnect: bool,
    /// Largest event count per scope (for the per-event "last receiver" table).
    pub events_per_scope: usize,
    pub user_prefix: String,
}

/// Counters shared by the swarm and the scenario driving it.
pub struct SwarmState {
    pub spec: SwarmSpec,
    target: Arc<Target>,
    pub ready: AtomicUsize,
    /// Subscribed subscribers per scope.
    pub ready_per_scope: Vec<AtomicU64>,
    pub failed: AtomicUsize,
    /// Unique deliveries so far.
    pub delivered: AtomicU64,
    pub last_delivery_us: AtomicU64,
    /// Every delivery's latency (µs).
    pub latency: SharedHistogram,
    /// Per scope, per offset: the latest delivery (µs after send).
    pub last_receiver: Vec<Vec<AtomicU64>>,
    pub connect_latency: SharedHistogram,
    /// Reconnects: connection lost → `subscribed` again.
    pub live_again: SharedHistogram,
    pub reconnects: AtomicU64,
    handshakes: Semaphore,
    first_error: FirstError,
}

/// What one subscriber saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberResult {
    pub scope: usize,
    pub subscribed: bool,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub disconnects: u64,
    /// Resubscriptions answered `recovered: false`.
    pub not_recovered: u64,
    pub instance: String,
}

pub struct Swarm {
    pub state: Arc<SwarmState>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<SubscriberResult>,
}

impl Swarm {
    /// Starts every subscriber (connecting in the background).
    pub fn start(target: Arc<Target>, spec: SwarmSpec) -> Swarm {
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(SwarmState {
            last_receiver: spec
                .scopes
                .iter()
                .map(|_| {
                    (0..spec.events_per_scope)
                        .map(|_| AtomicU64::new(0))
                        .collect()
                })
                .collect(),
            handshakes: Semaphore::new(spec.connect_concurrency.max(1)),
            ready_per_scope: spec.scopes.iter().map(|_| AtomicU64::new(0)).collect(),
            spec,
            target,
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            latency: SharedHistogram::default(),
            connect_latency: SharedHistogram::default(),
            live_again: SharedHistogram::default(),
            reconnects: AtomicU64::new(0),
            first_error: FirstError::default(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..state.spec.connections {
            tasks.spawn(subscriber(state.clone(), i, stop_rx.clone()));
        }
        Swarm { state, stop, tasks }
    }

    /// Starts the swarm and waits until every subscriber is subscribed or
    /// has failed (at most a minute plus 10 ms a subscriber), with a
    /// "subscribing" progress bar when `progress`; returns the swarm and how
    /// many subscribed.
    pub async fn subscribe(target: Arc<Target>, spec: SwarmSpec, progress: bool) -> (Swarm, usize) {
        let n = spec.connections as u64;
        let bar = measure::progress(progress, n, "subscribing");
        let swarm = Swarm::start(target, spec);
        let limit = Duration::from_secs(60) + Duration::from_millis(n * 10);
        let subscribed = swarm.wait_ready(limit, &bar).await;
        bar.finish_and_clear();
        (swarm, subscribed)
    }

    /// Waits until every subscriber is subscribed or has failed, or `limit`.
    async fn wait_ready(&self, limit: Duration, bar: &ProgressBar) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self.state.ready.load(Ordering::Relaxed);
            let failed = self.state.failed.load(Ordering::Relaxed);
            bar.set_position((ready + failed) as u64);
            if ready + failed >= self.state.spec.connections || Instant::now() >= deadline {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every subscriber and collects what each saw.
    pub async fn stop(mut self) -> Vec<SubscriberResult> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.state.spec.connections);
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out
    }

    /// Deliveries expected when `stored[scope]` events were acknowledged.
    pub fn expected(&self, stored: &[u64]) -> u64 {
        self.state
            .ready_per_scope
            .iter()
            .zip(stored)
            .map(|(n, s)| n.load(Ordering::Relaxed) * s)
            .sum()
    }

    /// Shows the deliveries so far on `bar` until `task` (the publisher)
    /// has finished; returns what it returned.
    pub async fn deliver_until<T>(
        &self,
        task: tokio::task::JoinHandle<T>,
        bar: &ProgressBar,
    ) -> Result<T, tokio::task::JoinError> {
        while !task.is_finished() {
            bar.set_position(self.state.delivered.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.await
    }

    /// Waits up to `limit` for the deliveries expected when `stored[scope]`
    /// events were acknowledged (the stragglers after publishing stopped),
    /// showing them on `bar`, which it then clears.
    pub async fn drain(&self, stored: &[u64], limit: Duration, bar: &ProgressBar) {
        let expected = self.expected(stored);
        bar.set_length(expected.max(1));
        let until = Instant::now() + limit;
        while Instant::now() < until {
            let delivered = self.state.delivered.load(Ordering::Relaxed);
            bar.set_position(delivered);
            if delivered >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bar.finish_and_clear();
    }

    pub fn first_error(&self) -> Option<String> {
        self.state.first_error.get()
    }
}

impl SwarmState {
    /// Per event: the latency of its last receiver, over the first
    /// `stored[scope]` offsets of each scope (the events acknowledged).
    pub fn last_receiver_latency(&self, stored: &[u64]) -> Latency {
        let mut last = histogram();
        for (scope, slots) in self.last_receiver.iter().enumerate() {
            let n = stored.get(scope).copied().unwrap_or(0) as usize;
            for slot in slots.iter().take(n) {
                let v = slot.load(Ordering::Relaxed);
                if v > 0 {
                    last.saturating_record(v);
                }
            }
        }
        Latency::of(&last)
    }

    fn note_error(&self, e: &anyhow::Error) {
        self.first_error.note(format_args!("{e:#}"));
    }

    fn on_event(&self, scope: usize, text: &str, tracker: &mut Tracker, lat: &mut LocalBatch<'_>) {
        let Some(ev) = scan_event(text) else {
            return;
        };
        let verdict = tracker.offer(ev.offset);
        if verdict == Seen::Duplicate {
            return;
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let now = unix_micros();
        self.last_delivery_us.fetch_max(now, Ordering::Relaxed);
        if let Some(sent) = ev.sent_us {
            let us = now.saturating_sub(sent);
            lat.record(us);
            if let Some(slot) = self
                .last_receiver
                .get(scope)
                .and_then(|v| v.get((ev.offset - 1) as usize))
            {
                slot.fetch_max(us.max(1), Ordering::Relaxed);
            }
        }
    }
}

async fn subscriber(
    state: Arc<SwarmState>,
    i: usize,
    mut stop: watch::Receiver<bool>,
) -> SubscriberResult {
    let spec = &state.spec;
    let scope_ix = i % spec.scopes.len();
    let scope = &spec.scopes[scope_ix];
    let channel = format!("feed:{scope}");
    let user = format!("{}-{i}", spec.user_prefix);
    let mut result = SubscriberResult {
        scope: scope_ix,
        ..Default::default()
    };
    let token = match state
        .target
        .token(&user, &[scope.as_str()], Duration::from_secs(6 * 3600))
    {
        Ok(t) => t,
        Err(e) => {
            state.note_error(&e);
            state.failed.fetch_add(1, Ordering::Relaxed);
            return result;
        }
    };
    let mut tracker = Tracker::default();
    let mut lat = LocalBatch::new(&state.latency);
    let mut hub_ix = i;
    let mut dropped_at: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // Connect (and, after a drop, keep trying until stopped).
        let connected = {
            let Ok(_permit) = state.handshakes.acquire().await else {
                break;
            };
            let hub = state.target.hub(hub_ix);
            Client::connect(&state.target, hub, state.target.source(i), &token).await
        };
        let mut client = match connected {
            Ok(c) => c,
            Err(e) => {
                state.note_error(&e);
                if dropped_at.is_none() {
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                hub_ix += 1;
                let pause = Duration::from_millis(50 + (i % 100) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        if dropped_at.is_none() {
            state
                .connect_latency
                .record_all(&[client.connect_time.as_micros() as u64]);
        }
        result.instance = client.instance.clone();
        let since = (dropped_at.is_some() || tracker.contiguous > 0).then_some(tracker.contiguous);
        let mut early = Vec::new();
        let subscribed = client
            .subscribe(&channel, since, Duration::from_secs(30), |t| {
                early.push(t.to_string())
            })
            .await;
        for t in early {
            state.on_event(scope_ix, &t, &mut tracker, &mut lat);
        }
        match subscribed {
            Ok(frame) => {
                if let Some(at) = dropped_at.take() {
                    state
                        .live_again
                        .record_all(&[at.elapsed().as_micros() as u64]);
                    state.reconnects.fetch_add(1, Ordering::Relaxed);
                    if frame["recovered"] == false {
                        result.not_recovered += 1;
                    }
                } else {
                    result.subscribed = true;
                    state.ready_per_scope[scope_ix].fetch_add(1, Ordering::Relaxed);
                    state.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                state.note_error(&e);
                if !result.subscribed && dropped_at.is_none() {
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                dropped_at.get_or_insert_with(Instant::now);
                hub_ix += 1;
                continue;
            }
        }
        // Read until stopped or dropped.
        let dropped = loop {
            tokio::select! {
                biased;
                msg = client.ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => state.on_event(scope_ix, &t, &mut tracker, &mut lat),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break true,
                    Some(Ok(_)) => {}
                },
                _ = stop.changed() => break false,
            }
        };
        if !dropped {
            client.close().await;
            break;
        }
        result.disconnects += 1;
        if !spec.reconnect {
            break;
        }
        dropped_at = Some(Instant::now());
        hub_ix += 1;
    }
    lat.flush();
    result.unique = tracker.unique;
    result.duplicated = tracker.duplicated;
    result.out_of_order = tracker.out_of_order;
    result
}

/// Loss, duplication and order over a swarm, given what the hub stored.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Delivery {
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Delivered but never acknowledged as stored (an ingest request that
    /// failed after its commit); not an error of the hub.
    pub unexpected: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub disconnects: u64,
    pub not_recovered: u64,
    pub subscribers: usize,
}

impl Delivery {
    /// The `delivered` line of a table.
    pub fn line(&self) -> String {
        format!(
            "delivered          {} of {} expected: lost {}, duplicated {}, out of order {}, disconnects {}\n",
            self.delivered, self.expected, self.lost, self.duplicated, self.out_of_order, self.disconnects
        )
    }

    /// What `--check` fails on in any delivery: loss, duplication, disorder.
    pub fn problems(&self) -> Vec<String> {
        [
            (self.lost, "deliveries lost"),
            (self.duplicated, "deliveries duplicated"),
            (self.out_of_order, "deliveries out of order"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
    }
}

/// Adds up what subscribers saw; `stored[scope]` events were acknowledged.
pub fn tally(results: &[SubscriberResult], stored: &[u64]) -> Delivery {
    let mut d = Delivery::default();
    for r in results.iter().filter(|r| r.subscribed) {
        let expected = stored.get(r.scope).copied().unwrap_or(0);
        d.subscribers += 1;
        d.expected += expected;
        d.delivered += r.unique;
        d.lost += expected.saturating_sub(r.unique);
        d.unexpected += r.unique.saturating_sub(expected);
        d.duplicated += r.duplicated;
        d.out_of_order += r.out_of_order;
        d.disconnects += r.disconnects;
        d.not_recovered += r.not_recovered;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_classifies_offsets() {
        let mut t = Tracker::default();
        assert_eq!(t.offer(1), Seen::New);
        assert_eq!(t.offer(2), Seen::New);
        assert_eq!(t.offer(2), Seen::Duplicate);
        assert_eq!(t.offer(4), Seen::New);
        assert_eq!(t.contiguous, 2);
        assert_eq!(t.offer(3), Seen::OutOfOrder);
        assert_eq!(t.contiguous, 4);
        assert_eq!(t.offer(500), Seen::New);
        assert_eq!((t.unique, t.duplicated, t.out_of_order), (5, 1, 1));
    }

    #[test]
    fn tally_counts_loss_per_scope() {
        let r = |scope, unique| SubscriberResult {
            scope,
            subscribed: true,
            unique,
            ..Default::default()
        };
        let d = tally(&[r(0, 10), r(1, 4), r(1, 5)], &[10, 5]);
        assert_eq!((d.expected, d.delivered, d.lost), (20, 19, 1));
    }
}
