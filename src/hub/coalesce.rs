//! Coalescing of a busy channel's publishes (`PULSEHUB_COALESCE_MS`).
//!
//! A channel that has not been delivered to within the window gets its
//! frames at once: an isolated event waits for nothing. Frames published
//! within the window after a delivery are held and delivered together when
//! it ends, so under load each subscriber is woken, and writes to its
//! socket, once per window instead of once per publish. Order is kept:
//! frames are only ever appended to what is held, and nothing is delivered
//! directly while something is held.

use crate::frame::{Frames, Outbound};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do with a publish.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Deliver these frames now.
    Now(Frames),
    /// Held; flush the channel after this delay (`None`: a flush is already due).
    Held(Option<Duration>),
}

#[derive(Default)]
struct Channel {
    held: Vec<Outbound>,
    /// When frames were last delivered.
    last: Option<Instant>,
}

pub struct Coalescer {
    window: Duration,
    channels: HashMap<Arc<str>, Channel>,
}

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Coalescer {
            window,
            channels: HashMap::new(),
        }
    }

    pub fn offer(&mut self, channel: &Arc<str>, frames: Frames, now: Instant) -> Offer {
        if self.window.is_zero() {
            return Offer::Now(frames);
        }
        let c = self.channels.entry(channel.clone()).or_default();
        let since = c.last.map(|last| now.saturating_duration_since(last));
        match since {
            Some(since) if since < self.window || !c.held.is_empty() => {
                let first = c.held.is_empty();
                c.held.extend(frames.iter().cloned());
                Offer::Held(first.then(|| self.window - since.min(self.window)))
            }
            _ => {
                c.last = Some(now);
                Offer::Now(frames)
            }
        }
    }

    /// The frames held for `channel`, counted as delivered now.
    pub fn flush(&mut self, channel: &str, now: Instant) -> Option<Frames> {
        let c = self.channels.get_mut(channel)?;
        if c.held.is_empty() {
            return None;
        }
        c.last = Some(now);
        Some(std::mem::take(&mut c.held).into())
    }

    /// Everything held, for a shutdown.
    pub fn flush_all(&mut self, now: Instant) -> Vec<(Arc<str>, Frames)> {
        let channels: Vec<Arc<str>> = self.channels.keys().cloned().collect();
        channels
            .into_iter()
            .filter_map(|ch| self.flush(&ch, now).map(|f| (ch, f)))
            .collect()
    }

    /// The channel lost its last local subscriber: drop its state.
    pub fn forget(&mut self, channel: &str) {
        self.channels.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(seqs: &[i64]) -> Frames {
        seqs.iter()
            .map(|&seq| Outbound {
                seq,
                text: seq.to_string().into(),
            })
            .collect()
    }

    fn seqs(f: &Frames) -> Vec<i64> {
        f.iter().map(|o| o.seq).collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn isolated_publishes_go_at_once_and_bursts_are_held_in_order() {
        let ch: Arc<str> = "feed:demo".into();
        let mut c = Coalescer::new(5 * MS);
        let t0 = Instant::now();
        assert_eq!(c.offer(&ch, frames(&[1]), t0), Offer::Now(frames(&[1])));
        // Within the window: held, with one flush due at the window's end.
        assert_eq!(
            c.offer(&ch, frames(&[2]), t0 + 2 * MS),
            Offer::Held(Some(3 * MS))
        );
        assert_eq!(
            c.offer(&ch, frames(&[3, 4]), t0 + 4 * MS),
            Offer::Held(None)
        );
        // Past the window but something is still held: appended, not overtaken.
        assert_eq!(c.offer(&ch, frames(&[5]), t0 + 6 * MS), Offer::Held(None));
        let flushed = c.flush(&ch, t0 + 6 * MS).unwrap();
        assert_eq!(seqs(&flushed), vec![2, 3, 4, 5]);
        assert_eq!(c.flush(&ch, t0 + 6 * MS), None);
        // Quiet for a window: at once again.
        assert_eq!(
            c.offer(&ch, frames(&[6]), t0 + 20 * MS),
            Offer::Now(frames(&[6]))
        );
    }

    #[test]
    fn zero_window_never_holds_and_forget_drops_state() {
        let ch: Arc<str> = "stats:demo".into();
        let mut off = Coalescer::new(Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(off.offer(&ch, frames(&[i]), t0), Offer::Now(_)));
        }
        let mut c = Coalescer::new(5 * MS);
        c.offer(&ch, frames(&[1]), t0);
        c.offer(&ch, frames(&[2]), t0 + MS);
        let other: Arc<str> = "feed:x".into();
        c.offer(&other, frames(&[1]), t0);
        c.offer(&other, frames(&[2]), t0 + MS);
        let all = c.flush_all(t0 + 2 * MS);
        assert_eq!(all.len(), 2);
        c.forget(&ch);
        assert!(matches!(
            c.offer(&ch, frames(&[3]), t0 + 3 * MS),
            Offer::Now(_)
        ));
    }
}
