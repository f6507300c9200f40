//! Results: the per-scenario reports as one enum, the table, the JSON and
//! the `--check` verdict. What every report carries about its run is
//! [`RunInfo`](crate::run_info::RunInfo).

use crate::scenarios::{
    abuse::AbuseReport, connect::ConnectReport, fanout::FanoutReport, idle::IdleReport,
    ingest::IngestReport, presence::PresenceReport, reconnect::ReconnectReport,
};
use serde::Serialize;

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
