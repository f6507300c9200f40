//! `reconnect`: subscribers and a publisher run as in `fanout`; part way
//! through, a replica is killed (a pid and signal, or a command) and
//! optionally restarted (a command this tool runs and stops at the end).
//! Dropped subscribers reconnect to the next hub and resume with `since`;
//! the publisher retries with idempotency keys. Reports how long clients
//! took to be live again and whether anything was lost or duplicated.

use crate::measure::Latency;
use crate::publisher::{self, Plan, Published};
use crate::run_info::RunInfo;
use crate::swarm::{tally, Delivery, Swarm, SwarmSpec};
use crate::target::{run_id, Target};
use anyhow::Context as _;
use indicatif::ProgressBar;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReconnectOpts {
    pub connections: usize,
    pub rate: f64,
    pub duration: Duration,
    /// When to disrupt, after publishing started.
    pub disrupt_after: Duration,
    /// Kill this process with `signal`.
    pub kill_pid: Option<u32>,
    pub signal: i32,
    /// Or run this shell command to disrupt.
    pub kill_cmd: Option<String>,
    /// Then start this shell command (e.g. the hub again); it runs until the
    /// scenario ends and is then stopped with SIGTERM.
    pub restart_cmd: Option<String>,
    pub restart_delay: Duration,
    pub drain: Duration,
    pub tick: Duration,
    pub inflight: usize,
    pub connect_concurrency: usize,
    pub progress: bool,
}

impl Default for ReconnectOpts {
    fn default() -> Self {
        ReconnectOpts {
            connections: 1000,
            rate: 200.0,
            duration: Duration::from_secs(20),
            disrupt_after: Duration::from_secs(5),
            kill_pid: None,
            signal: libc::SIGKILL,
            kill_cmd: None,
            restart_cmd: None,
            restart_delay: Duration::from_millis(0),
            drain: Duration::from_secs(30),
            tick: Duration::from_millis(10),
            inflight: 8,
            connect_concurrency: 200,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub connections: usize,
    pub subscribed: usize,
    pub disruption: String,
    pub restarted_with: Option<String>,
    pub publish: Published,
    #[serde(flatten)]
    pub delivery: Delivery,
    pub reconnects: u64,
    /// Subscribers dropped and not live again by the end.
    pub still_down: u64,
    /// Connection lost → `subscribed` again (resumed with `since`).
    pub live_again: Latency,
    pub latency: Latency,
    pub last_receiver: Latency,
    pub first_error: Option<String>,
}

/// A process group started for `--restart-cmd`, stopped when dropped.
struct Restarted(Option<tokio::process::Child>);

impl Restarted {
    /// Starts `cmd`; if it exits within its first two seconds (say, the
    /// port is not free yet), starts it again, for up to 20 s.
    async fn start(cmd: &str) -> anyhow::Result<Restarted> {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting '{cmd}'"))?;
            match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Err(_) => return Ok(Restarted(Some(child))),
                Ok(status) if Instant::now() >= give_up => {
                    anyhow::bail!("'{cmd}' keeps exiting ({status:?})")
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// SIGTERM to the group, up to 15 s to exit, then SIGKILL.
    async fn stop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // SAFETY: signalling the process group this tool created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
                let _ = child.wait().await;
            }
        }
    }
}

/// Whether any thread of `pid` still runs. A process's descriptors (its
/// listening socket) are closed only when its last thread exits, which can
/// be after the main thread already shows as a zombie.
fn alive(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            })
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

async fn disrupt(opts: &ReconnectOpts) -> anyhow::Result<String> {
    if let Some(pid) = opts.kill_pid {
        // SAFETY: plain kill(2) on the pid the user gave.
        let rc = unsafe { libc::kill(pid as i32, opts.signal) };
        if rc != 0 {
            anyhow::bail!(
                "kill({pid}, {}): {}",
                opts.signal,
                std::io::Error::last_os_error()
            );
        }
        // Let it exit (its listening socket closes with it), up to 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && alive(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return Ok(format!("signal {} to pid {pid}", opts.signal));
    }
    if let Some(cmd) = &opts.kill_cmd {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .await?;
        return Ok(format!("'{cmd}' ({status})"));
    }
    anyhow::bail!("reconnect needs --kill-pid or --kill-cmd")
}

pub async fn run(target: Arc<Target>, opts: &ReconnectOpts) -> anyhow::Result<ReconnectReport> {
    if opts.kill_pid.is_none() && opts.kill_cmd.is_none() {
        anyhow::bail!("reconnect needs --kill-pid or --kill-cmd");
    }
    let mut info = RunInfo::start("reconnect", &target);
    let id = run_id();
    let scopes = vec![format!("lt-{id}-0")];
    let total = publisher::events_for(opts.rate, opts.duration);
    let (swarm, subscribed) = Swarm::subscribe(
        target.clone(),
        SwarmSpec {
            connections: opts.connections,
            scopes: scopes.clone(),
            connect_concurrency: opts.connect_concurrency,
            reconnect: true,
            events_per_scope: total as usize + 1,
            user_prefix: format!("lt-{id}-u"),
        },
        opts.progress,
    )
    .await;

    let plan = Plan {
        scopes: scopes.clone(),
        rate: opts.rate,
        total,
        tick: opts.tick,
        inflight: opts.inflight,
        keys: Some(format!("lt-{id}")),
        retry_for: opts.duration + opts.drain,
        via: crate::publisher::Via::Http,
    };
    let started = Instant::now();
    let publisher = tokio::spawn(publisher::run(target.clone(), plan));
    tokio::time::sleep_until((started + opts.disrupt_after).into()).await;
    let disruption = disrupt(opts).await;
    let mut restarted = Restarted(None);
    let mut first_error = None;
    if let (Ok(_), Some(cmd)) = (&disruption, &opts.restart_cmd) {
        tokio::time::sleep(opts.restart_delay).await;
        match Restarted::start(cmd).await {
            Ok(r) => restarted = r,
            Err(e) => first_error = Some(format!("{e:#}")),
        }
    }
    let disruption = match disruption {
        Ok(d) => d,
        Err(e) => {
            first_error.get_or_insert_with(|| format!("{e:#}"));
            "failed".into()
        }
    };
    let publish = publisher.await?;
    swarm
        .drain(
            &publish.stored_per_scope,
            opts.drain,
            &ProgressBar::hidden(),
        )
        .await;
    let first_error = first_error
        .or_else(|| swarm.first_error())
        .or(publish.first_error.clone());
    let state = swarm.state.clone();
    let results = swarm.stop().await;
    restarted.stop().await;
    let delivery = tally(&results, &publish.stored_per_scope);
    let reconnects = state.reconnects.load(Ordering::Relaxed);
    let last_receiver = state.last_receiver_latency(&publish.stored_per_scope);
    info.finish();
    Ok(ReconnectReport {
        info,
        connections: opts.connections,
        subscribed,
        disruption,
        restarted_with: opts.restart_cmd.clone(),
        publish,
        still_down: delivery.disconnects.saturating_sub(reconnects),
        delivery,
        reconnects,
        live_again: state.live_again.summary(),
        latency: state.latency.summary(),
        last_receiver,
        first_error,
    })
}

impl ReconnectReport {
    pub fn table(&self) -> String {
        let d = &self.delivery;
        let p = &self.publish;
        let mut t = self.info.header();
        t += &format!(
            "subscribers        {} of {}; disruption: {}{}\n",
            self.subscribed,
            self.connections,
            self.disruption,
            self.restarted_with
                .as_ref()
                .map_or(String::new(), |c| format!("; restarted with '{c}'"))
        );
        t += &format!(
            "published          {} events stored, {} requests failed, {} retries\n",
            p.stored, p.failed_requests, p.retries
        );
        t += &format!(
            "dropped            {} connections; {} live again, {} still down, {} not recovered\n",
            d.disconnects, self.reconnects, self.still_down, d.not_recovered
        );
        t += &format!("live again after   {}\n", self.live_again.line());
        t += &format!(
            "delivered          {} of {} expected: lost {}, duplicated {}, out of order {}\n",
            d.delivered, d.expected, d.lost, d.duplicated, d.out_of_order
        );
        t += &format!("latency (all)      {}\n", self.latency.line());
        t += &format!("latency (last rx)  {}\n", self.last_receiver.line());
        if let Some(e) = &self.first_error {
            t += &format!("first error        {e}\n");
        }
        t
    }

    pub fn problems(&self) -> Vec<String> {
        let d = &self.delivery;
        let mut p = Vec::new();
        if self.subscribed < self.connections {
            p.push(format!(
                "{} subscribers failed to connect",
                self.connections - self.subscribed
            ));
        }
        p.extend(self.publish.problems());
        p.extend(d.problems());
        if self.still_down > 0 {
            p.push(format!("{} subscribers never came back", self.still_down));
        }
        if d.not_recovered > 0 {
            p.push(format!("{} resumptions not recovered", d.not_recovered));
        }
        p
    }
}
