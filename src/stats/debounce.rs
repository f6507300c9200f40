//! Trailing-edge debounce with a maximum wait, per key.
//!
//! A key marked dirty becomes due `window` after its *last* mark, but never
//! later than `max_wait` after its *first* unserved mark, so a burst yields
//! one recomputation and a steady stream still yields one per `max_wait`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    max_wait: Duration,
    pending: HashMap<String, (Instant, Instant)>,
}

impl Debouncer {
    pub fn new(window: Duration, max_wait: Duration) -> Self {
        Debouncer {
            window,
            max_wait: max_wait.max(window),
            pending: HashMap::new(),
        }
    }

    pub fn mark(&mut self, key: &str, now: Instant) {
        self.pending
            .entry(key.to_string())
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    /// Keys due at `now`, removed from the pending set.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let (window, max_wait) = (self.window, self.max_wait);
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (first, last))| now >= (*last + window).min(*first + max_wait))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.pending.remove(k);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_yields_one_trailing_recomputation() {
        let mut d = Debouncer::new(100 * MS, 1000 * MS);
        let t = Instant::now();
        for i in 0..50 {
            d.mark("demo", t + i * MS);
        }
        assert!(d.take_due(t + 120 * MS).is_empty());
        assert_eq!(d.take_due(t + 149 * MS), vec!["demo".to_string()]);
        assert!(d.take_due(t + 500 * MS).is_empty());
    }

    #[test]
    fn a_steady_stream_is_served_by_max_wait() {
        let mut d = Debouncer::new(100 * MS, 300 * MS);
        let t = Instant::now();
        let mut served = Vec::new();
        for i in 0..100u32 {
            let now = t + i * 10 * MS;
            d.mark("s", now);
            if !d.take_due(now).is_empty() {
                served.push(i * 10);
            }
        }
        assert_eq!(served, vec![300, 610, 920]);
    }

    #[test]
    fn keys_are_independent() {
        let mut d = Debouncer::new(10 * MS, 10 * MS);
        let t = Instant::now();
        d.mark("a", t);
        d.mark("b", t + 5 * MS);
        assert_eq!(d.take_due(t + 10 * MS), vec!["a".to_string()]);
        assert!(d.is_pending("b"));
    }
}
