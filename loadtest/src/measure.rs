//! Measuring: latency histograms (HDR, microseconds), the machine's load,
//! a process's resident memory, the hub's own counters (`/metrics`), and the
//! progress bar.

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Latencies from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        // The bounds above are valid; this is only reachable if hdrhistogram
        // changes its rules, and an auto-resizing histogram still works.
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// A histogram shared by many tasks, fed in small batches.
pub struct SharedHistogram(Mutex<Histogram<u64>>);

impl Default for SharedHistogram {
    fn default() -> Self {
        SharedHistogram(Mutex::new(histogram()))
    }
}

impl SharedHistogram {
    pub fn record_all(&self, values: &[u64]) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for v in values {
            h.saturating_record((*v).max(1));
        }
    }

    pub fn summary(&self) -> Latency {
        Latency::of(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A few recorded values kept locally and flushed to a [`SharedHistogram`].
pub struct LocalBatch<'a> {
    into: &'a SharedHistogram,
    buf: Vec<u64>,
}

impl<'a> LocalBatch<'a> {
    pub fn new(into: &'a SharedHistogram) -> Self {
        LocalBatch {
            into,
            buf: Vec::with_capacity(64),
        }
    }

    pub fn record(&mut self, micros: u64) {
        self.buf.push(micros);
        if self.buf.len() == 64 {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.into.record_all(&self.buf);
            self.buf.clear();
        }
    }
}

impl Drop for LocalBatch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50 / p95 / p99 / p99.9 / max` for tables.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "n/a".into();
        }
        format!(
            "p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
            self.p50_ms, self.p95_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Resident memory of a process in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&s)
}

/// Resident memory of several processes added up (several replicas);
/// `None` when no pid was given or any cannot be read.
pub fn rss_total(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_bytes(*p)).sum()
}

/// Bytes as MB (MiB) with one decimal, for reports.
pub fn mb(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) used so far by these processes, in seconds
/// (`/proc/<pid>/stat`); `None` if any cannot be read.
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(total as f64 / ticks)
}

/// The values of these counters (`pulsehub_slow_consumers_total`, …) in
/// every hub's `GET /metrics`, added up over the hubs; `None` when a hub
/// does not serve its metrics (`PULSEHUB_METRICS=false`).
pub async fn hub_counters(
    target: &crate::target::Target,
    names: &[&str],
) -> Option<BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, f64> = names.iter().map(|n| (n.to_string(), 0.0)).collect();
    for text in hub_metrics(target).await? {
        for (name, value) in parse_counters(&text, names) {
            *out.entry(name).or_default() += value;
        }
    }
    Some(out)
}

/// Every hub's `GET /metrics` text; `None` when a hub does not serve its
/// metrics (`PULSEHUB_METRICS=false`) or cannot be reached.
pub async fn hub_metrics(target: &crate::target::Target) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(target.hubs.len());
    for hub in &target.hubs {
        let res = target
            .http
            .get(format!("{}/metrics", hub.base))
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        out.push(res.text().await.ok()?);
    }
    Some(out)
}

/// `name value` lines of a Prometheus text exposition, for these names.
fn parse_counters(text: &str, names: &[&str]) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            names.contains(&name).then_some(())?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Resident memory of this process.
pub fn own_rss_bytes() -> Option<u64> {
    rss_bytes(std::process::id())
}

/// A progress bar on stderr, or a hidden one.
pub fn progress(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {pos}/{len} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_latencies() {
        let shared = SharedHistogram::default();
        {
            let mut b = LocalBatch::new(&shared);
            for us in 1..=1000u64 {
                b.record(us * 1000);
            }
        }
        let l = shared.summary();
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn reads_vmrss() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t   1234 kB\nVmSwap: 0 kB\n"),
            Some(1234 * 1024)
        );
        assert!(own_rss_bytes().unwrap_or(0) > 0);
        assert!(cpu_seconds(&[std::process::id()]).is_some());
        assert_eq!(cpu_seconds(&[]), None);
        assert!(rss_total(&[std::process::id()]).unwrap_or(0) > 0);
        assert_eq!(rss_total(&[]), None);
        assert_eq!(mb(Some(3 * 1048576 + 104858)), Some(3.1));
    }

    #[test]
    fn reads_counters() {
        let text = "# HELP pulsehub_slow_consumers Connections closed\n\
                    # TYPE pulsehub_slow_consumers counter\n\
                    pulsehub_slow_consumers_total 3\n\
                    pulsehub_connections_refused_total 80\n\
                    pulsehub_sessions 12\n";
        let got = parse_counters(
            text,
            &["pulsehub_slow_consumers_total", "pulsehub_sessions"],
        );
        assert_eq!(
            got,
            vec![
                ("pulsehub_slow_consumers_total".to_string(), 3.0),
                ("pulsehub_sessions".to_string(), 12.0)
            ]
        );
    }
}
