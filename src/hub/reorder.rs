//! Putting a recoverable channel's frames back in offset order before they
//! reach the sessions (`PULSEHUB_REORDER_MS`).
//!
//! Replicas commit a channel's events in offset order (the channel's row
//! lock), but each replica delivers its own commits at once and the others'
//! one Redis hop later: a replica often gets offset n + 1 (its own) before
//! n (relayed). Handed on as they come, every local subscriber of the
//! channel would see the hole and read it from PostgreSQL — a database
//! query per subscriber for a frame that is a millisecond away.
//!
//! Contract:
//! - Frames that continue the channel (their first offset is at most the
//!   next one expected) pass at once, followed by whatever they release.
//! - Frames past a hole are held, in offset order, until the hole fills or
//!   the window ends; then they go out in order and the sessions find what
//!   is still missing, as before (they read it from PostgreSQL). So nothing
//!   is lost or reordered by this module; at worst a frame waits the window.
//! - The first frames a channel gets (or after [`Reorder::reset`]) set where
//!   it starts. Channels that are not recoverable, and a zero window, pass
//!   everything through.

use crate::frame::Frames;
use crate::protocol;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do with a publish.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Deliver these, in this order, now.
    Now(Vec<Frames>),
    /// Held behind a hole; check the channel again after this delay
    /// (`None`: a check is already due).
    Held(Option<Duration>),
}

struct Channel {
    /// The offset expected next.
    next: i64,
    /// Frames past the hole, by their first offset.
    held: BTreeMap<i64, Frames>,
    /// When the oldest held frames arrived.
    since: Option<Instant>,
}

pub struct Reorder {
    window: Duration,
    /// `None`: a channel that is not recoverable (passed through).
    channels: HashMap<Arc<str>, Option<Channel>>,
}

impl Reorder {
    pub fn new(window: Duration) -> Self {
        Reorder {
            window,
            channels: HashMap::new(),
        }
    }

    pub fn offer(&mut self, channel: &Arc<str>, frames: Frames, now: Instant) -> Offer {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Offer::Now(vec![frames]);
        };
        let (first, last) = (first.seq, last.seq);
        if self.window.is_zero() {
            return Offer::Now(vec![frames]);
        }
        let Some(entry) = self.channels.get_mut(channel) else {
            // Only a recoverable channel's `seq` is a gapless offset.
            let recoverable = protocol::Channel::parse(channel).is_ok_and(|c| c.recoverable());
            let c = recoverable.then(|| Channel {
                next: last + 1,
                held: BTreeMap::new(),
                since: None,
            });
            self.channels.insert(channel.clone(), c);
            return Offer::Now(vec![frames]);
        };
        let Some(c) = entry else {
            return Offer::Now(vec![frames]);
        };
        if first > c.next {
            let due = c.since.is_none();
            c.since.get_or_insert(now);
            c.held.insert(first, frames);
            return Offer::Held(due.then_some(self.window));
        }
        c.next = c.next.max(last + 1);
        let mut out = vec![frames];
        c.release(&mut out, false, now);
        Offer::Now(out)
    }

    /// The window's check of a channel: frames held for the whole window go
    /// out (and everything after them); returns them and, if frames are
    /// still held, when to check again.
    pub fn due(&mut self, channel: &str, now: Instant) -> (Vec<Frames>, Option<Duration>) {
        let mut out = Vec::new();
        let Some(Some(c)) = self.channels.get_mut(channel) else {
            return (out, None);
        };
        let expired = c
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.window);
        c.release(&mut out, expired, now);
        let again = c.since.map(|since| {
            self.window
                .saturating_sub(now.saturating_duration_since(since))
        });
        (out, again)
    }

    /// Everything held, in order, and no channel's start remembered: after
    /// a broker reconnection (sessions read what was missed) or a shutdown.
    pub fn reset(&mut self) -> Vec<(Arc<str>, Frames)> {
        let mut out = Vec::new();
        for (name, c) in self.channels.drain() {
            let Some(c) = c else { continue };
            out.extend(c.held.into_values().map(|f| (name.clone(), f)));
        }
        out
    }

    /// The channel lost its last local subscriber: drop its state.
    pub fn forget(&mut self, channel: &str) {
        self.channels.remove(channel);
    }
}

impl Channel {
    /// Moves held frames that now continue the channel to `out`; with
    /// `skip_hole`, the first ones held go even though a hole is before them.
    fn release(&mut self, out: &mut Vec<Frames>, mut skip_hole: bool, now: Instant) {
        let before = out.len();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.next && !skip_hole {
                break;
            }
            skip_hole = false;
            let frames = entry.remove();
            if let Some(last) = frames.last() {
                self.next = self.next.max(last.seq + 1);
            }
            out.push(frames);
        }
        if self.held.is_empty() {
            self.since = None;
        } else if out.len() > before {
            // The frames left behind wait for a new hole: a full window
            // from now.
            self.since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Outbound;

    fn frames(seqs: &[i64]) -> Frames {
        seqs.iter()
            .map(|&seq| Outbound {
                seq,
                text: seq.to_string().into(),
            })
            .collect()
    }

    fn seqs(out: &[Frames]) -> Vec<i64> {
        out.iter().flat_map(|f| f.iter().map(|o| o.seq)).collect()
    }

    fn now_seqs(offer: Offer) -> Vec<i64> {
        match offer {
            Offer::Now(out) => seqs(&out),
            held => panic!("expected frames now, got {held:?}"),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn frames_past_a_hole_wait_for_it_and_go_out_in_order() {
        let ch: Arc<str> = "feed:demo".into();
        let mut r = Reorder::new(50 * MS);
        let t0 = Instant::now();
        assert_eq!(now_seqs(r.offer(&ch, frames(&[1, 2]), t0)), [1, 2]);
        assert_eq!(now_seqs(r.offer(&ch, frames(&[3]), t0)), [3]);
        // 4 is late (relayed); 5 and 6–7 (local) wait for it.
        assert_eq!(
            r.offer(&ch, frames(&[6, 7]), t0 + MS),
            Offer::Held(Some(50 * MS))
        );
        assert_eq!(r.offer(&ch, frames(&[5]), t0 + 2 * MS), Offer::Held(None));
        assert_eq!(
            now_seqs(r.offer(&ch, frames(&[4]), t0 + 3 * MS)),
            [4, 5, 6, 7]
        );
        // The window's check then finds nothing to do.
        assert_eq!(r.due(&ch, t0 + 51 * MS), (vec![], None));
        assert_eq!(now_seqs(r.offer(&ch, frames(&[8]), t0 + 52 * MS)), [8]);
    }

    #[test]
    fn a_hole_that_does_not_fill_is_left_to_the_sessions_after_the_window() {
        let ch: Arc<str> = "feed:demo".into();
        let mut r = Reorder::new(50 * MS);
        let t0 = Instant::now();
        now_seqs(r.offer(&ch, frames(&[1]), t0));
        assert_eq!(r.offer(&ch, frames(&[3]), t0), Offer::Held(Some(50 * MS)));
        assert_eq!(r.offer(&ch, frames(&[6]), t0 + 10 * MS), Offer::Held(None));
        // Early check: nothing yet, check again when the window ends.
        assert_eq!(r.due(&ch, t0 + 20 * MS), (vec![], Some(30 * MS)));
        // The window ends: 3 goes (2 is the sessions' to read), 6 still
        // waits behind the hole at 4–5, timed from now.
        let (out, again) = r.due(&ch, t0 + 50 * MS);
        assert_eq!(seqs(&out), [3]);
        assert_eq!(again, Some(50 * MS));
        assert_eq!(
            now_seqs(r.offer(&ch, frames(&[4, 5]), t0 + 60 * MS)),
            [4, 5, 6]
        );
        // The missed 2 arriving late passes (the sessions skip it).
        assert_eq!(now_seqs(r.offer(&ch, frames(&[2]), t0 + 61 * MS)), [2]);
        assert_eq!(now_seqs(r.offer(&ch, frames(&[7]), t0 + 62 * MS)), [7]);
    }

    #[test]
    fn other_channels_a_zero_window_and_a_reset_pass_everything() {
        let ch: Arc<str> = "feed:demo".into();
        let t0 = Instant::now();
        let mut off = Reorder::new(Duration::ZERO);
        now_seqs(off.offer(&ch, frames(&[1]), t0));
        assert_eq!(now_seqs(off.offer(&ch, frames(&[5]), t0)), [5]);

        let mut r = Reorder::new(50 * MS);
        let stats: Arc<str> = "stats:demo".into();
        now_seqs(r.offer(&stats, frames(&[1]), t0));
        assert_eq!(now_seqs(r.offer(&stats, frames(&[9]), t0)), [9]);

        now_seqs(r.offer(&ch, frames(&[1]), t0));
        assert!(matches!(r.offer(&ch, frames(&[4]), t0), Offer::Held(_)));
        assert!(matches!(r.offer(&ch, frames(&[3]), t0), Offer::Held(_)));
        let out: Vec<i64> = r
            .reset()
            .iter()
            .flat_map(|(_, f)| f.iter().map(|o| o.seq))
            .collect();
        assert_eq!(out, [3, 4]);
        // After a reset the channel starts wherever its next frames are.
        assert_eq!(now_seqs(r.offer(&ch, frames(&[7]), t0)), [7]);
    }
}
