//! `fanout`: C subscribers on one scope (or spread over S scopes); a
//! publisher ingests E events/s through `POST /api/events`, each event
//! stamped with its send time. `bus` is the same run with the events
//! produced to a Kafka topic the hubs consume ([`Via::Kafka`]). Reports loss, duplication, order and the
//! latency from ingest to delivery, per delivery and for the last receiver
//! of each event, and where that time goes inside the hubs ([`stages`]).

use crate::measure::{self, Latency};
use crate::publisher::{self, Plan, Published, Via};
use crate::run_info::RunInfo;
use crate::stages::{self, Stage};
use crate::swarm::{tally, Delivery, Swarm, SwarmSpec};
use crate::target::{run_id, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FanoutOpts {
    pub connections: usize,
    pub scopes: usize,
    /// Events per second (all scopes together).
    pub rate: f64,
    pub duration: Duration,
    /// One ingest request per tick carries the events due.
    pub tick: Duration,
    pub inflight: usize,
    pub connect_concurrency: usize,
    /// After the last publish, how long to wait for stragglers.
    pub drain: Duration,
    /// Hub processes whose CPU time is measured while publishing.
    pub hub_pids: Vec<u32>,
    pub progress: bool,
    /// How the events reach the hubs.
    pub via: Via,
}

impl Default for FanoutOpts {
    fn default() -> Self {
        FanoutOpts {
            connections: 100,
            scopes: 1,
            rate: 200.0,
            duration: Duration::from_secs(10),
            tick: Duration::from_millis(10),
            inflight: 8,
            connect_concurrency: 200,
            drain: Duration::from_secs(10),
            hub_pids: Vec::new(),
            progress: false,
            via: Via::Http,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub connections: usize,
    pub subscribed: usize,
    pub connect_failed: usize,
    pub scopes: usize,
    pub rate_target: f64,
    pub duration_s: f64,
    pub publish: Published,
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Ingest (send time) → delivery, every delivery.
    pub latency: Latency,
    /// Per event: ingest → delivery to its last receiver.
    pub last_receiver: Latency,
    pub delivered_per_s: f64,
    pub connect_latency: Latency,
    pub first_error: Option<String>,
    /// Hub CPU time (user + system) from the first publish to the last
    /// delivery, when `hub_pids` were given; and per delivery.
    pub hub_cpu_s: Option<f64>,
    pub hub_cpu_us_per_delivery: Option<f64>,
    /// Hub CPU per event published (ingest, commit and its fan-out).
    pub hub_cpu_ms_per_event: Option<f64>,
    /// Resident memory of this load generator at the end.
    pub loadtest_rss_mb: f64,
    /// This load generator's own CPU time over the same span as `hub_cpu_s`:
    /// on a shared machine, what it takes from the hubs.
    pub loadtest_cpu_s: Option<f64>,
    /// The hubs' own stage histograms over the run (empty: no `/metrics`).
    pub stages: Vec<Stage>,
    /// Over the run, added up over the hubs: how often sessions read a hole
    /// in their live frames from PostgreSQL, and how often a hub held
    /// frames for a hole instead (`None`: no `/metrics`).
    pub hub_counters: Option<BTreeMap<String, f64>>,
}

/// The hub counters [`FanoutReport::hub_counters`] follows.
const COUNTERS: [&str; 3] = [
    "pulsehub_gap_reads_total",
    "pulsehub_reorder_held_total",
    "pulsehub_reorder_expired_total",
];

/// Runs the scenario; `Err` only when it cannot run at all.
pub async fn run(target: Arc<Target>, opts: &FanoutOpts) -> anyhow::Result<FanoutReport> {
    let name = match opts.via {
        Via::Http => "fanout",
        Via::Kafka(_) => "bus",
    };
    let mut info = RunInfo::start(name, &target);
    let id = run_id();
    let scopes: Vec<String> = (0..opts.scopes.max(1))
        .map(|k| format!("lt-{id}-{k}"))
        .collect();
    let total = publisher::events_for(opts.rate, opts.duration);
    let per_scope = (total as usize).div_ceil(scopes.len()) + 1;

    let (swarm, subscribed) = Swarm::subscribe(
        target.clone(),
        SwarmSpec {
            connections: opts.connections,
            scopes: scopes.clone(),
            connect_concurrency: opts.connect_concurrency,
            reconnect: false,
            events_per_scope: per_scope,
            user_prefix: format!("lt-{id}-u"),
        },
        opts.progress,
    )
    .await;
    let connect_failed = opts.connections - subscribed;

    // Publish, then wait until everything acknowledged has arrived.
    let plan = Plan {
        scopes: scopes.clone(),
        rate: opts.rate,
        total,
        tick: opts.tick,
        inflight: opts.inflight,
        keys: None,
        retry_for: Duration::ZERO,
        via: opts.via.clone(),
    };
    let planned_deliveries = total * subscribed as u64 / scopes.len() as u64;
    let bar = measure::progress(opts.progress, planned_deliveries, "delivering");
    let started = Instant::now();
    let started_us = crate::target::unix_micros();
    let cpu_before = measure::cpu_seconds(&opts.hub_pids);
    let own = [std::process::id()];
    let own_before = measure::cpu_seconds(&own);
    let stages_before = stages::snapshot(&target).await;
    let counters_before = measure::hub_counters(&target, &COUNTERS).await;
    let publisher = tokio::spawn(publisher::run(target.clone(), plan));
    let publish = swarm.deliver_until(publisher, &bar).await?;
    swarm
        .drain(&publish.stored_per_scope, opts.drain, &bar)
        .await;
    let spent = |before: Option<f64>, pids: &[u32]| match (before, measure::cpu_seconds(pids)) {
        (Some(a), Some(b)) => Some(((b - a) * 100.0).round() / 100.0),
        _ => None,
    };
    let hub_cpu_s = spent(cpu_before, &opts.hub_pids);
    let loadtest_cpu_s = spent(own_before, &own);
    let stages = match (stages_before, stages::snapshot(&target).await) {
        (Some(before), Some(after)) => after.since(&before),
        _ => Vec::new(),
    };
    let hub_counters = match (
        counters_before,
        measure::hub_counters(&target, &COUNTERS).await,
    ) {
        (Some(before), Some(after)) => Some(
            after
                .into_iter()
                .map(|(name, v)| {
                    let was = before.get(&name).copied().unwrap_or(0.0);
                    (name, v - was)
                })
                .collect(),
        ),
        _ => None,
    };
    let first_error = swarm.first_error().or(publish.first_error.clone());
    let state = swarm.state.clone();
    let results = swarm.stop().await;
    let delivery = tally(&results, &publish.stored_per_scope);

    let last_us = state.last_delivery_us.load(Ordering::Relaxed);
    let span_s = if last_us > started_us {
        (last_us - started_us) as f64 / 1e6
    } else {
        started.elapsed().as_secs_f64()
    };
    let last_receiver = state.last_receiver_latency(&publish.stored_per_scope);
    info.finish();
    let hub_cpu_ms_per_event =
        hub_cpu_s.map(|s| (s * 1e3 / publish.stored.max(1) as f64 * 1000.0).round() / 1000.0);
    Ok(FanoutReport {
        info,
        connections: opts.connections,
        subscribed,
        connect_failed,
        scopes: scopes.len(),
        rate_target: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        delivered_per_s: delivery.delivered as f64 / span_s.max(1e-9),
        delivery,
        publish,
        latency: state.latency.summary(),
        last_receiver,
        connect_latency: state.connect_latency.summary(),
        first_error,
        hub_cpu_us_per_delivery: hub_cpu_s
            .map(|s| (s * 1e6 / delivery.delivered.max(1) as f64 * 100.0).round() / 100.0),
        hub_cpu_ms_per_event,
        hub_cpu_s,
        loadtest_rss_mb: measure::own_rss_bytes().unwrap_or(0) as f64 / 1048576.0,
        loadtest_cpu_s,
        stages,
        hub_counters,
    })
}

impl FanoutReport {
    pub fn table(&self) -> String {
        let mut t = self.info.header();
        t += &format!(
            "subscribers        {} of {} subscribed over {} scope(s) ({} failed)\n",
            self.subscribed, self.connections, self.scopes, self.connect_failed
        );
        t += &self.publish.lines(self.rate_target);
        t += &self.delivery.line();
        t += &format!("latency (all)      {}\n", self.latency.line());
        t += &format!("latency (last rx)  {}\n", self.last_receiver.line());
        t += &format!("delivered frames/s {:.0}\n", self.delivered_per_s);
        t += &format!("connect→welcome    {}\n", self.connect_latency.line());
        if let (Some(s), Some(us)) = (self.hub_cpu_s, self.hub_cpu_us_per_delivery) {
            t +=
                &format!("hub CPU            {s:.2}s while publishing = {us:.2} µs per delivery\n");
        }
        if let Some(s) = self.loadtest_cpu_s {
            t += &format!("load generator CPU {s:.2}s over the same span\n");
        }
        if !self.stages.is_empty() {
            t += &stages::lines(&self.stages);
        }
        if let Some(c) = &self.hub_counters {
            let get = |n: &str| c.get(n).copied().unwrap_or(0.0);
            t += &format!(
                "holes in live frames: {:.0} page reads by sessions; {:.0} publishes held by a hub, {:.0} windows expired\n",
                get(COUNTERS[0]),
                get(COUNTERS[1]),
                get(COUNTERS[2])
            );
        }
        if let Some(e) = &self.first_error {
            t += &format!("first error        {e}\n");
        }
        t
    }

    /// What `--check` fails on.
    pub fn problems(&self) -> Vec<String> {
        let d = &self.delivery;
        let mut p = Vec::new();
        if self.connect_failed > 0 {
            p.push(format!(
                "{} subscribers failed to connect",
                self.connect_failed
            ));
        }
        p.extend(self.publish.problems());
        p.extend(d.problems());
        if d.disconnects > 0 {
            p.push(format!("{} subscribers disconnected", d.disconnects));
        }
        p
    }
}
