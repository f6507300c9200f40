//! `ingest`: P posters send batches of B events back to back through
//! `POST /api/events` (202 only after the commit); reports the events per
//! second committed and the request latency.

use crate::first_error::FirstError;
use crate::measure::{self, Latency, SharedHistogram};
use crate::publisher::{batch as events, post, MAX_BATCH};
use crate::run_info::RunInfo;
use crate::target::{run_id, Target};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IngestOpts {
    pub parallel: usize,
    pub batch: usize,
    /// Events to send in all.
    pub events: u64,
    /// Stop early after this long.
    pub duration: Duration,
    pub scopes: usize,
    /// Give every event an idempotency key (`lt-{run}-{seq}`), so each
    /// commit also claims keys, as the bus sources' events always do.
    pub keys: bool,
    pub progress: bool,
}

impl Default for IngestOpts {
    fn default() -> Self {
        IngestOpts {
            parallel: 8,
            batch: 1000,
            events: 200_000,
            duration: Duration::from_secs(30),
            scopes: 1,
            keys: false,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub parallel: usize,
    pub batch: usize,
    pub scopes: usize,
    pub events_sent: u64,
    pub accepted: u64,
    pub failed_requests: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub request_latency: Latency,
    pub first_error: Option<String>,
}

pub async fn run(target: Arc<Target>, opts: &IngestOpts) -> anyhow::Result<IngestReport> {
    let mut info = RunInfo::start("ingest", &target);
    let id = run_id();
    let scopes: Arc<Vec<String>> = Arc::new(
        (0..opts.scopes.max(1))
            .map(|k| format!("lt-{id}-{k}"))
            .collect(),
    );
    let key_prefix: Option<Arc<str>> = opts.keys.then(|| format!("lt-{id}").into());
    let batch = opts.batch.clamp(1, MAX_BATCH) as u64;
    let bar = measure::progress(opts.progress, opts.events, "ingesting");
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(SharedHistogram::default());
    let first_error = Arc::new(FirstError::default());
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..opts.parallel.max(1) {
        let key_prefix = key_prefix.clone();
        let (target, scopes, next, accepted, failed, latency, first_error, bar) = (
            target.clone(),
            scopes.clone(),
            next.clone(),
            accepted.clone(),
            failed.clone(),
            latency.clone(),
            first_error.clone(),
            bar.clone(),
        );
        let total = opts.events;
        tasks.spawn(async move {
            let mut request = worker;
            while Instant::now() < deadline {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let last = (first + batch).min(total);
                let body = events(&scopes, first..last, key_prefix.as_deref());
                let t = Instant::now();
                match post(&target, request, &body).await {
                    Ok(p) => {
                        latency.record_all(&[t.elapsed().as_micros() as u64]);
                        accepted.fetch_add(p.accepted, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.note(format_args!("{e:#}"));
                    }
                }
                bar.inc(last - first);
                // Each poster moves to the next hub after every request.
                request += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);
    info.finish();
    let first_error = first_error.get();
    Ok(IngestReport {
        info,
        parallel: opts.parallel,
        batch: batch as usize,
        scopes: scopes.len(),
        events_sent: next.load(Ordering::Relaxed).min(opts.events),
        accepted,
        failed_requests: failed.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        events_per_s: accepted as f64 / elapsed.max(1e-9),
        request_latency: latency.summary(),
        first_error,
    })
}

impl IngestReport {
    pub fn table(&self) -> String {
        let mut t = self.info.header();
        t += &format!(
            "posters            {} in parallel, {} events per request, {} scope(s)\n",
            self.parallel, self.batch, self.scopes
        );
        t += &format!(
            "committed          {} events in {:.2}s = {:.0} events/s ({} requests failed)\n",
            self.accepted, self.elapsed_s, self.events_per_s, self.failed_requests
        );
        t += &format!("request            {}\n", self.request_latency.line());
        if let Some(e) = &self.first_error {
            t += &format!("first error        {e}\n");
        }
        t
    }

    pub fn problems(&self) -> Vec<String> {
        if self.failed_requests > 0 {
            vec![format!("{} ingest requests failed", self.failed_requests)]
        } else {
            Vec::new()
        }
    }
}
