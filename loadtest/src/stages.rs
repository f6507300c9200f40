//! Where an event's time goes inside the hubs: their
//! `pulsehub_stage_seconds{stage=…}` histograms, read from every hub's
//! `GET /metrics` before and after a run, subtracted, added up over the
//! hubs, and summarised per stage (count, p50, p99).
//!
//! Percentiles come from the histogram's buckets (steps of √2), linearly
//! interpolated inside the bucket: good to about ±20 %, which is enough to
//! see which stage a tail comes from. The load generator's own end-to-end
//! figures stay the exact ones.

use crate::target::Target;
use serde::Serialize;
use std::collections::BTreeMap;

/// The stages in the order an event goes through them (the hub's names).
pub const ORDER: [&str; 8] = [
    "receive",
    "queue",
    "statements",
    "commit",
    "publish",
    "relay",
    "dispatch",
    "write",
];

/// Cumulative bucket counts per stage: upper bound (seconds) → count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot(BTreeMap<String, Vec<(f64, f64)>>);

/// One stage over a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stage {
    pub stage: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Every hub's stage histograms added up; `None` when a hub serves no
/// metrics or an older hub has no stages.
pub async fn snapshot(target: &Target) -> Option<Snapshot> {
    let mut total = Snapshot::default();
    for text in crate::measure::hub_metrics(target).await? {
        total.add(&parse(&text));
    }
    (!total.0.is_empty()).then_some(total)
}

/// The `pulsehub_stage_seconds_bucket` lines of a Prometheus exposition.
fn parse(text: &str) -> Snapshot {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pulsehub_stage_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let (Some(stage), Some(le)) = (label("stage"), label("le")) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let Ok(count) = value.trim().parse::<f64>() else {
            continue;
        };
        out.entry(stage).or_default().push((le, count));
    }
    for buckets in out.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Snapshot(out)
}

impl Snapshot {
    fn add(&mut self, other: &Snapshot) {
        for (stage, buckets) in &other.0 {
            let mine = self.0.entry(stage.clone()).or_default();
            if mine.is_empty() {
                mine.clone_from(buckets);
            } else {
                for (m, o) in mine.iter_mut().zip(buckets) {
                    m.1 += o.1;
                }
            }
        }
    }

    /// Per stage, in [`ORDER`], what happened between `before` and `self`;
    /// stages nothing went through are left out.
    pub fn since(&self, before: &Snapshot) -> Vec<Stage> {
        ORDER
            .iter()
            .filter_map(|&name| {
                let after = self.0.get(name)?;
                let delta: Vec<(f64, f64)> = match before.0.get(name) {
                    Some(b) => after.iter().zip(b).map(|(a, b)| (a.0, a.1 - b.1)).collect(),
                    None => after.clone(),
                };
                let count = delta.last()?.1;
                (count >= 1.0).then(|| Stage {
                    stage: name.to_string(),
                    count: count as u64,
                    p50_ms: quantile(&delta, 0.50) * 1e3,
                    p99_ms: quantile(&delta, 0.99) * 1e3,
                })
            })
            .collect()
    }
}

/// The `q` quantile of cumulative buckets, interpolated inside its bucket;
/// a quantile in the `+Inf` bucket is reported as the last finite bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = count - lower.1;
            let frac = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * frac;
        }
        lower = (le, count);
    }
    lower.0
}

/// The report's table: one line per stage.
pub fn lines(stages: &[Stage]) -> String {
    let mut t =
        String::from("hub stages         count      p50 ms     p99 ms   (from /metrics buckets)\n");
    for s in stages {
        t += &format!(
            "  {:<16} {:>9} {:>10.3} {:>10.3}\n",
            s.stage, s.count, s.p50_ms, s.p99_ms
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE pulsehub_stage_seconds histogram
pulsehub_stage_seconds_sum{stage="queue"} 0.5
pulsehub_stage_seconds_count{stage="queue"} 100
pulsehub_stage_seconds_bucket{le="0.001",stage="queue"} 50
pulsehub_stage_seconds_bucket{le="0.002",stage="queue"} 98
pulsehub_stage_seconds_bucket{le="0.004",stage="queue"} 100
pulsehub_stage_seconds_bucket{le="+Inf",stage="queue"} 100
pulsehub_stage_seconds_bucket{stage="write",le="0.001"} 0
pulsehub_stage_seconds_bucket{stage="write",le="+Inf"} 0
pulsehub_commit_seconds_bucket{le="0.001"} 7
"#;

    #[test]
    fn stages_from_buckets() {
        let after = parse(TEXT);
        let stages = after.since(&Snapshot::default());
        assert_eq!(stages.len(), 1, "write saw nothing: {stages:?}");
        let q = &stages[0];
        assert_eq!((q.stage.as_str(), q.count), ("queue", 100));
        assert!((q.p50_ms - 1.0).abs() < 1e-9, "{q:?}");
        // Rank 99 is halfway through the (2 ms, 4 ms] bucket.
        assert!((q.p99_ms - 3.0).abs() < 1e-9, "{q:?}");

        // Two hubs add up; a run is the difference.
        let mut two = after.clone();
        two.add(&after);
        let run = two.since(&after);
        assert_eq!(run[0].count, 100);
        assert!(two.since(&two).is_empty());
    }

    #[test]
    fn a_tail_past_the_last_bound_reads_as_the_bound() {
        let b = [(0.001, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&b, 0.99), 0.001);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
