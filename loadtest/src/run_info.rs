//! [`RunInfo`]: what every report carries about its run: the scenario,
//! the hubs, when it ran and for how long, and how busy the machine was.
//! A leaf the scenarios build on; `report` gathers their results.

use crate::measure::loadavg;
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
