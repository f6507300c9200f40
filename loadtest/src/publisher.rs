//! The publisher: ingests events through `POST /api/events` at a steady
//! rate, each stamped with its send time, round robin over the hubs; or
//! produces them to Kafka for hubs that consume it ([`Via::Kafka`]).

use crate::client::SENT_KEY;
use crate::first_error::FirstError;
use crate::kafka::KafkaOut;
use crate::measure::{Latency, LocalBatch, SharedHistogram};
use crate::target::{unix_micros, Target};
use anyhow::bail;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most events per request (the hub's limit).
pub const MAX_BATCH: usize = 1000;

/// One synthetic event of scope `scope`, number `seq`.
pub fn event(scope: &str, seq: u64, sent_us: u64, key: Option<&str>) -> Value {
    let mut e = json!({
        "scope": scope,
        "kind": "loadtest.tick",
        "actor": {"id": "lt-publisher", "name": "Load test"},
        "subject": {"type": "ticket", "id": format!("t{}", seq % 100), "state": format!("s{}", seq % 3)},
        "data": {"lt_seq": seq, SENT_KEY: sent_us},
    });
    if let Some(k) = key {
        e["key"] = format!("{k}-{seq}").into();
    }
    e
}

/// The request body for events `seqs`, spread over `scopes` in turn (event
/// `n` to `scopes[n % len]`), all stamped with one send time.
pub fn batch(scopes: &[String], seqs: std::ops::Range<u64>, key: Option<&str>) -> Value {
    let sent_us = unix_micros();
    Value::Array(
        seqs.map(|seq| {
            event(
                &scopes[(seq % scopes.len() as u64) as usize],
                seq,
                sent_us,
                key,
            )
        })
        .collect(),
    )
}

/// The reply to one `POST /api/events`.
#[derive(Debug, Clone, Copy)]
pub struct Posted {
    pub accepted: u64,
    pub duplicates: u64,
}

/// Posts a batch to hub `hub`; `Err` on transport errors and non-202 replies.
pub async fn post(target: &Target, hub: usize, body: &Value) -> anyhow::Result<Posted> {
    let url = format!("{}/api/events", target.hub(hub).base);
    let res = target
        .http
        .post(url)
        .bearer_auth(&target.ingest_key)
        .json(body)
        .send()
        .await?;
    let status = res.status();
    let reply: Value = res.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 202 {
        bail!("POST /api/events answered {status}: {reply}");
    }
    Ok(Posted {
        accepted: reply["accepted"].as_u64().unwrap_or(0),
        duplicates: reply["duplicates"].as_u64().unwrap_or(0),
    })
}

/// Events to publish at `rate` per second for `duration` (at least one).
pub fn events_for(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).round().max(1.0) as u64
}

/// What and how fast to publish.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events go to these scopes in turn (event `n` to `scopes[n % len]`).
    pub scopes: Vec<String>,
    /// Events per second, all scopes together.
    pub rate: f64,
    /// Events to send in all.
    pub total: u64,
    /// One request per tick carries the events due.
    pub tick: Duration,
    /// Requests in flight at most.
    pub inflight: usize,
    /// Idempotency key prefix: with it, failed requests are retried (on the
    /// next hub) until `retry_for` has passed, without duplicating anything.
    pub keys: Option<String>,
    pub retry_for: Duration,
    pub via: Via,
}

/// How events reach the hubs.
#[derive(Debug, Clone, Default)]
pub enum Via {
    /// `POST /api/events`, round robin over the hubs.
    #[default]
    Http,
    /// Produced to a topic the hubs consume (`bus`).
    Kafka(KafkaOut),
}

/// What the publisher achieved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    pub events_sent: u64,
    /// Events the hub stored (202), per scope index.
    pub stored_per_scope: Vec<u64>,
    pub stored: u64,
    pub duplicates_reported: u64,
    pub failed_events: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub retries: u64,
    pub elapsed_s: f64,
    pub rate_achieved: f64,
    /// Request round trip (includes the commit to PostgreSQL).
    pub request_latency: Latency,
    pub first_error: Option<String>,
}

impl Published {
    /// The `published` and `ingest request` lines of a table, against the
    /// rate that was asked for.
    pub fn lines(&self, rate_target: f64) -> String {
        format!(
            "published          {} events in {:.1}s = {:.0}/s (target {:.0}/s); {} requests, {} failed\n\
             ingest request     {}\n",
            self.stored,
            self.elapsed_s,
            self.rate_achieved,
            rate_target,
            self.requests,
            self.failed_requests,
            self.request_latency.line()
        )
    }

    /// What `--check` fails on: events that were never stored.
    pub fn problems(&self) -> Vec<String> {
        if self.failed_events > 0 {
            vec![format!("{} events not ingested", self.failed_events)]
        } else {
            Vec::new()
        }
    }
}

struct Shared {
    stored: Vec<AtomicU64>,
    duplicates: AtomicU64,
    failed_events: AtomicU64,
    requests: AtomicU64,
    failed_requests: AtomicU64,
    retries: AtomicU64,
    next_hub: AtomicUsize,
    latency: SharedHistogram,
    first_error: FirstError,
}

/// Publishes `plan.total` events at `plan.rate`; returns when every request
/// has been answered (or given up on).
pub async fn run(target: Arc<Target>, plan: Plan) -> Published {
    let shared = Arc::new(Shared {
        stored: plan.scopes.iter().map(|_| AtomicU64::new(0)).collect(),
        duplicates: AtomicU64::new(0),
        failed_events: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        failed_requests: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        next_hub: AtomicUsize::new(0),
        latency: SharedHistogram::default(),
        first_error: FirstError::default(),
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(plan.inflight.max(1)));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(plan.tick.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while sent < plan.total {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * plan.rate) as u64 + 1).min(plan.total);
        while sent < due {
            let n = (due - sent).min(MAX_BATCH as u64);
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let first = sent;
            sent += n;
            let target = target.clone();
            let shared = shared.clone();
            let scopes = plan.scopes.clone();
            let keys = plan.keys.clone();
            let retry_for = plan.retry_for;
            let via = plan.via.clone();
            tasks.spawn(async move {
                let _permit = permit;
                send_batch(
                    &target,
                    &via,
                    &shared,
                    &scopes,
                    first,
                    n,
                    keys.as_deref(),
                    retry_for,
                )
                .await;
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let stored_per_scope: Vec<u64> = shared
        .stored
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let stored = stored_per_scope.iter().sum();
    let first_error = shared.first_error.get();
    Published {
        events_sent: sent,
        stored,
        stored_per_scope,
        duplicates_reported: shared.duplicates.load(Ordering::Relaxed),
        failed_events: shared.failed_events.load(Ordering::Relaxed),
        requests: shared.requests.load(Ordering::Relaxed),
        failed_requests: shared.failed_requests.load(Ordering::Relaxed),
        retries: shared.retries.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        rate_achieved: stored as f64 / elapsed.max(1e-9),
        request_latency: shared.latency.summary(),
        first_error,
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_batch(
    target: &Target,
    via: &Via,
    shared: &Shared,
    scopes: &[String],
    first: u64,
    n: u64,
    keys: Option<&str>,
    retry_for: Duration,
) {
    let body = batch(scopes, first..first + n, keys);
    let give_up = Instant::now() + retry_for;
    loop {
        let hub = shared.next_hub.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let sent = match via {
            Via::Http => post(target, hub, &body).await,
            Via::Kafka(out) => out.produce(&body).await.map(|n| Posted {
                accepted: n,
                duplicates: 0,
            }),
        };
        match sent {
            Ok(p) => {
                LocalBatch::new(&shared.latency).record(t.elapsed().as_micros() as u64);
                shared.duplicates.fetch_add(p.duplicates, Ordering::Relaxed);
                for seq in first..first + n {
                    shared.stored[(seq % scopes.len() as u64) as usize]
                        .fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(e) => {
                shared.failed_requests.fetch_add(1, Ordering::Relaxed);
                shared.first_error.note(&e);
                if keys.is_none() || Instant::now() >= give_up {
                    shared.failed_events.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                shared.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
