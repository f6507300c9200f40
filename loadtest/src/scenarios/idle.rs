//! `idle`: holds C idle connections and reports the hub's resident memory
//! per connection (`VmRSS` of the hub's process, given its pid): before,
//! with the connections open, at the end of the hold, and after they left.

use crate::client::Client;
use crate::first_error::FirstError;
use crate::measure::{self, mb, rss_bytes, rss_total, Latency, SharedHistogram};
use crate::run_info::RunInfo;
use crate::target::{run_id, Target};
use futures_util::StreamExt;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct IdleOpts {
    pub connections: usize,
    /// Hub processes to measure (their memory is added up).
    pub hub_pids: Vec<u32>,
    pub concurrency: usize,
    /// Subscribe each connection to `feed:{scope}` (and so to presence).
    pub subscribe: bool,
    /// Wait after connecting before measuring.
    pub settle: Duration,
    pub hold: Duration,
    /// Wait after closing before the last measurement (let the presence
    /// grace pass).
    pub after: Duration,
    pub progress: bool,
}

impl Default for IdleOpts {
    fn default() -> Self {
        IdleOpts {
            connections: 1000,
            hub_pids: Vec::new(),
            concurrency: 100,
            subscribe: false,
            settle: Duration::from_secs(3),
            hold: Duration::from_secs(10),
            after: Duration::from_secs(5),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub connections: usize,
    pub opened: usize,
    pub failed: usize,
    pub subscribed: bool,
    /// Connections that dropped during the hold.
    pub dropped: usize,
    pub hub_pids: Vec<u32>,
    pub hub_rss_before_mb: Option<f64>,
    pub hub_rss_open_mb: Option<f64>,
    pub hub_rss_held_mb: Option<f64>,
    pub hub_rss_after_mb: Option<f64>,
    /// (open − before) / opened.
    pub hub_kb_per_connection: Option<f64>,
    /// (end of hold − before) / opened.
    pub hub_kb_per_connection_held: Option<f64>,
    /// Share of the growth given back after the clients left.
    pub returned_pct: Option<f64>,
    pub loadtest_kb_per_connection: Option<f64>,
    pub connect_latency: Latency,
    pub first_error: Option<String>,
}

pub async fn run(target: Arc<Target>, opts: &IdleOpts) -> anyhow::Result<IdleReport> {
    let mut info = RunInfo::start("idle", &target);
    for pid in &opts.hub_pids {
        if rss_bytes(*pid).is_none() {
            anyhow::bail!("cannot read /proc/{pid}/status: is the hub's pid right?");
        }
    }
    let id = run_id();
    let scope = format!("lt-{id}");
    let before = rss_total(&opts.hub_pids);
    let own_before = measure::own_rss_bytes();
    let bar = measure::progress(opts.progress, opts.connections as u64, "connecting");
    let latency = Arc::new(SharedHistogram::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let opened = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(FirstError::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.connections {
        let token = target.token(
            &format!("lt-{id}-i{i}"),
            &[&scope],
            Duration::from_secs(6 * 3600),
        )?;
        let (target, latency, permits, opened, dropped, first_error) = (
            target.clone(),
            latency.clone(),
            permits.clone(),
            opened.clone(),
            dropped.clone(),
            first_error.clone(),
        );
        let mut stop = stop_rx.clone();
        let channel = opts.subscribe.then(|| format!("feed:{scope}"));
        let bar = bar.clone();
        tasks.spawn(async move {
            let connected = {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let mut c = Client::connect(&target, target.hub(i), target.source(i), &token).await;
                if let (Ok(client), Some(channel)) = (&mut c, &channel) {
                    if let Err(e) = client
                        .subscribe(channel, None, Duration::from_secs(30), |_| {})
                        .await
                    {
                        c = Err(e);
                    }
                }
                c
            };
            bar.inc(1);
            let mut client = match connected {
                Ok(c) => c,
                Err(e) => {
                    first_error.note(format_args!("{e:#}"));
                    return;
                }
            };
            latency.record_all(&[client.connect_time.as_micros() as u64]);
            opened.fetch_add(1, Ordering::Relaxed);
            // Read (answering pings) until told to leave.
            loop {
                tokio::select! {
                    msg = client.ws.next() => match msg {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                    _ = stop.changed() => break,
                }
            }
            client.close().await;
        });
    }
    // Wait until every connection is open or failed.
    while bar.position() < opts.connections as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    tokio::time::sleep(opts.settle).await;
    let open_rss = rss_total(&opts.hub_pids);
    let own_open = measure::own_rss_bytes();
    tokio::time::sleep(opts.hold).await;
    let held_rss = rss_total(&opts.hub_pids);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(opts.after).await;
    let after_rss = rss_total(&opts.hub_pids);
    let opened = opened.load(Ordering::Relaxed);
    let per_conn = |now: Option<u64>| match (before, now) {
        (Some(b), Some(n)) if opened > 0 => {
            Some(((n as f64 - b as f64) / opened as f64 / 1024.0 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let returned_pct = match (before, open_rss.max(held_rss), after_rss) {
        (Some(b), Some(o), Some(a)) if o > b => {
            Some(((o as f64 - a as f64) / (o - b) as f64 * 1000.0).round() / 10.0)
        }
        _ => None,
    };
    info.finish();
    let first_error = first_error.get();
    Ok(IdleReport {
        info,
        connections: opts.connections,
        opened,
        failed: opts.connections - opened,
        subscribed: opts.subscribe,
        dropped: dropped.load(Ordering::Relaxed),
        hub_pids: opts.hub_pids.clone(),
        hub_rss_before_mb: mb(before),
        hub_rss_open_mb: mb(open_rss),
        hub_rss_held_mb: mb(held_rss),
        hub_rss_after_mb: mb(after_rss),
        hub_kb_per_connection: per_conn(open_rss),
        hub_kb_per_connection_held: per_conn(held_rss),
        returned_pct,
        loadtest_kb_per_connection: match (own_before, own_open) {
            (Some(b), Some(o)) if opened > 0 => {
                Some(((o as f64 - b as f64) / opened as f64 / 1024.0 * 100.0).round() / 100.0)
            }
            _ => None,
        },
        connect_latency: latency.summary(),
        first_error,
    })
}

impl IdleReport {
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| {
            v.map_or("n/a (no --hub-pid)".into(), |v| format!("{v} {unit}"))
        };
        let mut t = self.info.header();
        t += &format!(
            "connections        {} of {} open ({} failed, {} dropped during the hold){}\n",
            self.opened,
            self.connections,
            self.failed,
            self.dropped,
            if self.subscribed {
                ", each subscribed to one feed"
            } else {
                ""
            }
        );
        t += &format!(
            "hub RSS            before {}, open {}, end of hold {}, after leaving {}\n",
            opt(self.hub_rss_before_mb, "MB"),
            opt(self.hub_rss_open_mb, "MB"),
            opt(self.hub_rss_held_mb, "MB"),
            opt(self.hub_rss_after_mb, "MB")
        );
        t += &format!(
            "hub per connection {} (end of hold: {})\n",
            opt(self.hub_kb_per_connection, "KB"),
            opt(self.hub_kb_per_connection_held, "KB")
        );
        t += &format!("returned on leave  {}\n", opt(self.returned_pct, "%"));
        t += &format!(
            "load generator     {} per connection\n",
            opt(self.loadtest_kb_per_connection, "KB")
        );
        t += &format!("connect→welcome    {}\n", self.connect_latency.line());
        if let Some(e) = &self.first_error {
            t += &format!("first error        {e}\n");
        }
        t
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.failed > 0 {
            p.push(format!("{} connections failed", self.failed));
        }
        if self.dropped > 0 {
            p.push(format!("{} connections dropped while idle", self.dropped));
        }
        p
    }
}
