//! `presence`: clients join a scope at a rate (connect, subscribe to
//! `presence:{scope}`), then leave at the same rate; after each phase, the
//! time until every replica's `GET /api/scopes/{scope}/presence` agrees on
//! the count. Leaving includes the hub's presence grace.

use crate::client::Client;
use crate::measure::{self, histogram, Latency};
use crate::run_info::RunInfo;
use crate::target::{run_id, Target};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct PresenceOpts {
    /// Clients joining (then leaving) per round.
    pub clients: usize,
    pub rounds: usize,
    /// Joins (and leaves) per second.
    pub rate: f64,
    pub poll: Duration,
    /// Longest wait for the replicas to agree.
    pub timeout: Duration,
    pub progress: bool,
}

impl Default for PresenceOpts {
    fn default() -> Self {
        PresenceOpts {
            clients: 100,
            rounds: 3,
            rate: 200.0,
            poll: Duration::from_millis(10),
            timeout: Duration::from_secs(30),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PresenceReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub clients: usize,
    pub rounds: usize,
    pub rate: f64,
    pub failed_joins: usize,
    /// Last join subscribed → every replica counts everyone.
    pub join_agreement: Latency,
    /// Last client gone → every replica counts nobody (includes the grace).
    pub leave_agreement: Latency,
    /// Phases whose replicas did not agree within the timeout.
    pub timeouts: usize,
    /// Counts seen when the timeout hit, per replica.
    pub last_disagreement: Option<Vec<i64>>,
    pub first_error: Option<String>,
}

async fn counts(target: &Target, scope: &str, token: &str) -> Vec<i64> {
    let reads = target.hubs.iter().map(|hub| async move {
        let url = format!("{}/api/scopes/{scope}/presence", hub.base);
        match target.http.get(url).bearer_auth(token).send().await {
            Ok(res) => res
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["count"].as_i64())
                .unwrap_or(-1),
            Err(_) => -1,
        }
    });
    futures_util::future::join_all(reads).await
}

/// Polls until every replica reports `want`; the time it took, or the
/// counts at the timeout.
async fn agree(
    target: &Target,
    scope: &str,
    token: &str,
    want: i64,
    since: Instant,
    opts: &PresenceOpts,
) -> Result<Duration, Vec<i64>> {
    loop {
        let c = counts(target, scope, token).await;
        if c.iter().all(|n| *n == want) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > opts.timeout {
            return Err(c);
        }
        tokio::time::sleep(opts.poll).await;
    }
}

pub async fn run(target: Arc<Target>, opts: &PresenceOpts) -> anyhow::Result<PresenceReport> {
    let mut info = RunInfo::start("presence", &target);
    let id = run_id();
    let scope = format!("lt-{id}");
    let observer = target.token(
        &format!("lt-{id}-observer"),
        &[&scope],
        Duration::from_secs(3600),
    )?;
    let mut joins = histogram();
    let mut leaves = histogram();
    let mut timeouts = 0;
    let mut failed_joins = 0;
    let mut last_disagreement = None;
    let mut first_error = None;
    let gap = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let bar = measure::progress(opts.progress, opts.rounds as u64, "rounds");
    for round in 0..opts.rounds {
        // Join, paced.
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..opts.clients {
            let target = target.clone();
            let channel = format!("presence:{scope}");
            let token = target.token(
                &format!("lt-{id}-r{round}-{i}"),
                &[&scope],
                Duration::from_secs(3600),
            )?;
            pending.spawn(async move {
                let mut c =
                    Client::connect(&target, target.hub(i), target.source(i), &token).await?;
                c.subscribe(&channel, None, Duration::from_secs(30), |_| {})
                    .await?;
                Ok::<_, anyhow::Error>((c, Instant::now()))
            });
            tokio::time::sleep(gap).await;
        }
        let mut leavers = Vec::new();
        let mut last_join = Instant::now();
        let mut joined = 0;
        let mut first_join = true;
        while let Some(r) = pending.join_next().await {
            match r {
                Ok(Ok((mut client, at))) => {
                    last_join = if first_join { at } else { last_join.max(at) };
                    first_join = false;
                    joined += 1;
                    let (tx, mut rx) = oneshot::channel::<()>();
                    leavers.push((
                        tx,
                        tokio::spawn(async move {
                            loop {
                                tokio::select! {
                                    msg = client.ws.next() => match msg {
                                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                                        Some(Ok(_)) => {}
                                    },
                                    _ = &mut rx => break,
                                }
                            }
                            client.close().await;
                        }),
                    ));
                }
                Ok(Err(e)) => {
                    failed_joins += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
                Err(e) => {
                    failed_joins += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        match agree(&target, &scope, &observer, joined, last_join, opts).await {
            Ok(d) => {
                joins.saturating_record(d.as_micros() as u64);
            }
            Err(c) => {
                timeouts += 1;
                last_disagreement = Some(c);
            }
        }
        // Leave, paced: each client sends its close frame in turn.
        let mut closing = Vec::new();
        for (tx, task) in leavers {
            let _ = tx.send(());
            closing.push(task);
            tokio::time::sleep(gap).await;
        }
        let last_leave = Instant::now();
        for task in closing {
            let _ = task.await;
        }
        match agree(&target, &scope, &observer, 0, last_leave, opts).await {
            Ok(d) => {
                leaves.saturating_record(d.as_micros() as u64);
            }
            Err(c) => {
                timeouts += 1;
                last_disagreement = Some(c);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    info.finish();
    Ok(PresenceReport {
        info,
        clients: opts.clients,
        rounds: opts.rounds,
        rate: opts.rate,
        failed_joins,
        join_agreement: Latency::of(&joins),
        leave_agreement: Latency::of(&leaves),
        timeouts,
        last_disagreement,
        first_error,
    })
}

impl PresenceReport {
    pub fn table(&self) -> String {
        let mut t = self.info.header();
        t += &format!(
            "rounds             {} × {} clients joining then leaving at {:.0}/s ({} joins failed)\n",
            self.rounds, self.clients, self.rate, self.failed_joins
        );
        t += &format!("all agree on join  {}\n", self.join_agreement.line());
        t += &format!(
            "all agree on leave {}  (includes the presence grace)\n",
            self.leave_agreement.line()
        );
        t += &format!("timeouts           {}\n", self.timeouts);
        if let Some(c) = &self.last_disagreement {
            t += &format!("counts at timeout  {c:?}\n");
        }
        if let Some(e) = &self.first_error {
            t += &format!("first error        {e}\n");
        }
        t
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.failed_joins > 0 {
            p.push(format!("{} joins failed", self.failed_joins));
        }
        if self.timeouts > 0 {
            p.push(format!("replicas did not agree {} time(s)", self.timeouts));
        }
        p
    }
}
