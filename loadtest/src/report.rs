//! Results: what every report carries, the per-scenario reports as one
//! enum, the table, the JSON and the `--check` verdict.

use crate::measure::loadavg;
use crate::scenarios::{
    abuse::AbuseReport, connect::ConnectReport, fanout::FanoutReport, idle::IdleReport,
    ingest::IngestReport, presence::PresenceReport, reconnect::ReconnectReport,
};
use crate::target::{unix_now, Target};
use serde::Serialize;

/// Context of one run: when, against what, and how busy the machine was.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub scenario: &'static str,
    pub hubs: Vec<String>,
    /// Unix seconds.
    pub started_at: u64,
    pub elapsed_s: f64,
    /// `/proc/loadavg` (1, 5, 15 min) before and after: other work on the
    /// machine (compilers!) skews every figure.
    pub loadavg_before: Option<[f64; 3]>,
    pub loadavg_after: Option<[f64; 3]>,
    pub cores: usize,
    #[serde(skip)]
    started: Option<std::time::Instant>,
}

impl RunInfo {
    pub fn start(scenario: &'static str, target: &Target) -> RunInfo {
        RunInfo {
            scenario,
            hubs: target.hubs.iter().map(|h| h.base.clone()).collect(),
            started_at: unix_now().as_secs(),
            elapsed_s: 0.0,
            loadavg_before: loadavg(),
            loadavg_after: None,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started: Some(std::time::Instant::now()),
        }
    }

    pub fn finish(&mut self) {
        self.loadavg_after = loadavg();
        if let Some(s) = self.started {
            self.elapsed_s = (s.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        }
    }

    pub fn header(&self) -> String {
        let load = |l: Option<[f64; 3]>| {
            l.map_or("?".into(), |l| {
                format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
            })
        };
        format!(
            "== {} against {} ({:.1}s; load before {}, after {}; {} cores)\n",
            self.scenario,
            self.hubs.join(", "),
            self.elapsed_s,
            load(self.loadavg_before),
            load(self.loadavg_after),
            self.cores
        )
    }
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Report {
    Connect(ConnectReport),
    Fanout(FanoutReport),
    Presence(PresenceReport),
    Idle(IdleReport),
    Reconnect(ReconnectReport),
    Ingest(IngestReport),
    Abuse(Box<AbuseReport>),
}

impl Report {
    /// A readable table.
    pub fn table(&self) -> String {
        match self {
            Report::Connect(r) => r.table(),
            Report::Fanout(r) => r.table(),
            Report::Presence(r) => r.table(),
            Report::Idle(r) => r.table(),
            Report::Reconnect(r) => r.table(),
            Report::Ingest(r) => r.table(),
            Report::Abuse(r) => r.table(),
        }
    }

    /// What `--check` fails on: loss, duplication, disorder, failures.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Report::Connect(r) => r.problems(),
            Report::Fanout(r) => r.problems(),
            Report::Presence(r) => r.problems(),
            Report::Idle(r) => r.problems(),
            Report::Reconnect(r) => r.problems(),
            Report::Ingest(r) => r.problems(),
            Report::Abuse(r) => r.problems(),
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
