//! One subscription's delivery state, free of actors so it can be tested.
//!
//! A subscription knows the position (`seq`) of the last frame it sent. While
//! it is loading (initial snapshot or replay) or catching up (filling a gap
//! from PostgreSQL), live frames are buffered, up to a bound; dropped ones
//! are found again as a gap and read from the database. Once live, a frame
//! at or before the position is a duplicate (skipped), and on a recoverable
//! channel a frame past `position + 1` reveals a gap.

use crate::frame::Outbound;
use crate::protocol::Channel;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Send it; the position moved to it.
    Send,
    /// Already sent (or older than the snapshot): drop it.
    Skip,
    /// Frames are missing before it: read them from the database first.
    Gap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Loading,
    Live,
    CatchingUp,
}

#[derive(Debug)]
pub struct Sub {
    pub channel: Channel,
    pub generation: u64,
    recoverable: bool,
    position: i64,
    state: State,
    buffer: VecDeque<Outbound>,
    cap: usize,
}

impl Sub {
    pub fn new(channel: Channel, generation: u64, cap: usize) -> Self {
        Sub {
            recoverable: channel.recoverable(),
            channel,
            generation,
            position: 0,
            state: State::Loading,
            buffer: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Live and recoverable: a resync may read what was missed.
    pub fn can_resync(&self) -> bool {
        self.recoverable && self.state == State::Live
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    /// The position the initial content starts after (or ends at).
    pub fn set_position(&mut self, seq: i64) {
        self.position = seq;
    }

    /// Decides on one frame by position alone.
    pub fn accept(&mut self, frame: &Outbound) -> Accept {
        if frame.seq <= self.position {
            Accept::Skip
        } else if self.recoverable && frame.seq > self.position + 1 {
            Accept::Gap
        } else {
            self.position = frame.seq;
            Accept::Send
        }
    }

    /// A live frame from the hub: buffered unless live; a gap starts a
    /// catch-up (the caller then reads from the database).
    pub fn offer(&mut self, frame: &Outbound) -> Accept {
        if self.state != State::Live {
            self.buffer(frame.clone());
            return Accept::Skip;
        }
        match self.accept(frame) {
            Accept::Gap => {
                self.state = State::CatchingUp;
                self.buffer(frame.clone());
                Accept::Gap
            }
            other => other,
        }
    }

    /// Keeps a frame for later; past the bound the oldest is dropped (it
    /// will show up as a gap and be read from the database).
    pub fn buffer(&mut self, frame: Outbound) {
        if self.buffer.len() >= self.cap {
            self.buffer.pop_front();
        }
        self.buffer.push_back(frame);
    }

    pub fn start_catch_up(&mut self) {
        if self.state == State::Live {
            self.state = State::CatchingUp;
        }
    }

    /// The initial content (or a database page that reached the end) has
    /// been sent: drains the buffer in order. Returns the frames to send and
    /// whether a gap remains (then the subscription keeps catching up and
    /// the rest stays buffered).
    pub fn drain(&mut self) -> (Vec<Outbound>, bool) {
        let mut out = Vec::new();
        while let Some(f) = self.buffer.pop_front() {
            match self.accept(&f) {
                Accept::Send => out.push(f),
                Accept::Skip => {}
                Accept::Gap => {
                    self.buffer.push_front(f);
                    self.state = State::CatchingUp;
                    return (out, true);
                }
            }
        }
        self.state = State::Live;
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(seq: i64) -> Outbound {
        Outbound {
            seq,
            text: seq.to_string().into(),
        }
    }

    fn seqs(frames: &[Outbound]) -> Vec<i64> {
        frames.iter().map(|f| f.seq).collect()
    }

    #[test]
    fn replay_then_buffered_live_without_duplicates() {
        let mut s = Sub::new(Channel::Feed("demo".into()), 1, 100);
        // Live frames 5..=7 arrive while the replay (since=2) is loading.
        for i in 5..=7 {
            assert_eq!(s.offer(&f(i)), Accept::Skip);
        }
        s.set_position(2);
        for i in 3..=6 {
            assert_eq!(s.accept(&f(i)), Accept::Send);
        }
        let (out, gap) = s.drain();
        assert_eq!((seqs(&out), gap), (vec![7], false));
        assert_eq!(s.offer(&f(7)), Accept::Skip);
        assert_eq!(s.offer(&f(8)), Accept::Send);
    }

    #[test]
    fn a_live_gap_is_caught_up_from_the_database() {
        let mut s = Sub::new(Channel::System, 1, 100);
        s.set_position(1);
        s.drain();
        assert_eq!(s.offer(&f(2)), Accept::Send);
        assert_eq!(s.offer(&f(5)), Accept::Gap);
        // While catching up, later frames are buffered.
        assert_eq!(s.offer(&f(6)), Accept::Skip);
        // The database page brings 3..=5.
        for i in 3..=5 {
            assert_eq!(s.accept(&f(i)), Accept::Send);
        }
        let (out, gap) = s.drain();
        assert_eq!((seqs(&out), gap), (vec![6], false));
    }

    #[test]
    fn an_overflowing_buffer_leaves_a_gap_to_read() {
        let mut s = Sub::new(Channel::Feed("x".into()), 1, 3);
        for i in 11..=20 {
            s.offer(&f(i));
        }
        s.set_position(10);
        let (out, gap) = s.drain();
        assert!(out.is_empty() && gap);
        // Read 11..=17 from the database, then the buffer (18..=20) fits.
        for i in 11..=17 {
            assert_eq!(s.accept(&f(i)), Accept::Send);
        }
        let (out, gap) = s.drain();
        assert_eq!((seqs(&out), gap), (vec![18, 19, 20], false));
    }

    #[test]
    fn snapshots_drop_older_diffs_and_never_gap() {
        let mut s = Sub::new(Channel::Presence("demo".into()), 1, 10);
        s.offer(&f(3));
        s.offer(&f(9));
        s.set_position(5);
        let (out, gap) = s.drain();
        assert_eq!((seqs(&out), gap), (vec![9], false));
        assert_eq!(s.offer(&f(20)), Accept::Send);
    }
}
