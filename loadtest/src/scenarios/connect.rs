//! `connect`: opens C connections (at most K handshakes at once, optionally
//! paced at R per second); reports connect-to-`welcome` latency and the
//! rate achieved, holds them, then closes them.

use crate::client::Client;
use crate::measure::{self, Latency, SharedHistogram};
use crate::run_info::RunInfo;
use crate::target::{run_id, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub connections: usize,
    /// Handshakes in flight at most.
    pub concurrency: usize,
    /// Connections started per second (0: as fast as `concurrency` allows).
    pub rate: f64,
    /// How long to hold the connections once all are open.
    pub hold: Duration,
    /// A connection slower than this counts as slow.
    pub slow: Duration,
    pub progress: bool,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts {
            connections: 1000,
            concurrency: 50,
            rate: 0.0,
            hold: Duration::from_secs(1),
            slow: Duration::from_millis(100),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub connections: usize,
    pub concurrency: usize,
    pub opened: usize,
    pub failed: usize,
    /// First connect started → last `welcome` read.
    pub open_s: f64,
    pub rate_per_s: f64,
    pub latency: Latency,
    pub slow_ms: u64,
    /// Connections slower than `slow_ms`.
    pub slow: usize,
    /// Connections per `instance` (from `welcome`).
    pub per_instance: BTreeMap<String, usize>,
    pub first_error: Option<String>,
}

pub async fn run(target: Arc<Target>, opts: &ConnectOpts) -> anyhow::Result<ConnectReport> {
    let mut info = RunInfo::start("connect", &target);
    let id = run_id();
    let scope = format!("lt-{id}");
    let bar = measure::progress(opts.progress, opts.connections as u64, "connecting");
    let latency = Arc::new(SharedHistogram::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let slow_us = opts.slow.as_micros() as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for i in 0..opts.connections {
        if opts.rate > 0.0 {
            let at = started + Duration::from_secs_f64(i as f64 / opts.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let target = target.clone();
        let latency = latency.clone();
        let token = target.token(
            &format!("lt-{id}-c{i}"),
            &[&scope],
            Duration::from_secs(3600),
        )?;
        tasks.spawn(async move {
            let hub = target.hub(i);
            let r = Client::connect(&target, hub, target.source(i), &token).await;
            drop(permit);
            if let Ok(c) = &r {
                latency.record_all(&[c.connect_time.as_micros() as u64]);
            }
            (r, Instant::now())
        });
        while let Some(done) = tasks.try_join_next() {
            bar.inc(1);
            if let Ok(r) = done {
                results.push(r);
            }
        }
    }
    let mut clients = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    let mut last_done = started;
    let mut slow = 0;
    let mut per_instance = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        bar.inc(1);
        if let Ok(r) = r {
            results.push(r);
        }
    }
    bar.finish_and_clear();
    for (r, done) in results {
        last_done = last_done.max(done);
        match r {
            Ok(c) => {
                if c.connect_time.as_micros() as u64 > slow_us {
                    slow += 1;
                }
                *per_instance.entry(c.instance.clone()).or_insert(0) += 1;
                clients.push(c);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let open_s = last_done.duration_since(started).as_secs_f64();
    let opened = clients.len();
    tokio::time::sleep(opts.hold).await;
    let closing: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.close()))
        .collect();
    for c in closing {
        let _ = c.await;
    }
    info.finish();
    Ok(ConnectReport {
        info,
        connections: opts.connections,
        concurrency: opts.concurrency,
        opened,
        failed: failed + opts.connections.saturating_sub(opened + failed),
        open_s,
        rate_per_s: opened as f64 / open_s.max(1e-9),
        latency: latency.summary(),
        slow_ms: opts.slow.as_millis() as u64,
        slow,
        per_instance,
        first_error,
    })
}

impl ConnectReport {
    pub fn table(&self) -> String {
        let mut t = self.info.header();
        t += &format!(
            "opened             {} of {} ({} failed), {} handshakes at a time\n",
            self.opened, self.connections, self.failed, self.concurrency
        );
        t += &format!(
            "rate               {:.0} connections/s ({:.3}s for all)\n",
            self.rate_per_s, self.open_s
        );
        t += &format!("connect→welcome    {}\n", self.latency.line());
        t += &format!("slower than {:<4}   {}\n", self.slow_ms, self.slow);
        t += &format!("per instance       {:?}\n", self.per_instance);
        if let Some(e) = &self.first_error {
            t += &format!("first error        {e}\n");
        }
        t
    }

    pub fn problems(&self) -> Vec<String> {
        if self.failed > 0 {
            vec![format!("{} connections failed", self.failed)]
        } else {
            Vec::new()
        }
    }
}
