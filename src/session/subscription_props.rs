//! Property tests of [`Sub`]: for any interleaving of commits, lossy live
//! delivery, database pages, drains and resyncs, a recoverable channel sends
//! exactly `since+1, since+2, …` (no gap, no duplicate), and after a final
//! resync everything committed has been sent.

use super::subscription::{Accept, Sub};
use crate::frame::Outbound;
use crate::protocol::Channel;
use proptest::prelude::*;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
enum Step {
    /// Commit one message; `true` when the broker delivers it live.
    Commit(bool),
    /// The next live frame reaches the session.
    Deliver,
    /// The pending database page (if any) completes.
    Page,
    /// The broker reconnected: resync live recoverable channels.
    Resync,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<bool>().prop_map(Step::Commit),
        4 => Just(Step::Deliver),
        2 => Just(Step::Page),
        1 => Just(Step::Resync),
    ]
}

fn f(seq: i64) -> Outbound {
    Outbound {
        seq,
        text: seq.to_string().into(),
    }
}

/// The session actor's use of `Sub`, minus the actor (see session/mod.rs:
/// `write_page`, `fetch_page`, the `Deliver` and `Resync` handlers).
struct World {
    sub: Sub,
    committed: i64,
    live: VecDeque<i64>,
    /// `after` of the one database read in flight.
    fetch: Option<i64>,
    sent: Vec<i64>,
    page: i64,
}

impl World {
    fn fetch(&mut self, after: i64) {
        assert!(self.fetch.is_none(), "two database reads in flight");
        self.sub.start_catch_up();
        self.fetch = Some(after);
    }

    /// `write_page` with the items the database holds now.
    fn write_page(&mut self, after: i64) {
        let items: Vec<i64> = (after + 1..=self.committed)
            .take(self.page as usize)
            .collect();
        let more = items.len() as i64 == self.page;
        for seq in items {
            if self.sub.accept(&f(seq)) == Accept::Send {
                self.sent.push(seq);
            }
        }
        if more {
            let p = self.sub.position();
            self.fetch(p);
        } else {
            let (out, gap) = self.sub.drain();
            self.sent.extend(out.iter().map(|f| f.seq));
            if gap {
                let p = self.sub.position();
                self.fetch(p);
            }
        }
    }

    fn run(&mut self, s: &Step) {
        match s {
            Step::Commit(kept) => {
                self.committed += 1;
                if *kept {
                    self.live.push_back(self.committed);
                }
            }
            Step::Deliver => {
                if let Some(seq) = self.live.pop_front() {
                    match self.sub.offer(&f(seq)) {
                        Accept::Send => self.sent.push(seq),
                        Accept::Skip => {}
                        Accept::Gap => {
                            let p = self.sub.position();
                            self.fetch(p);
                        }
                    }
                }
            }
            Step::Page => {
                if let Some(after) = self.fetch.take() {
                    self.write_page(after);
                }
            }
            Step::Resync => {
                if self.sub.can_resync() {
                    let p = self.sub.position();
                    self.fetch(p);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn recoverable_sends_every_offset_once_in_order(
        before in 0i64..20,
        since_back in 0i64..20,
        cap in 1usize..8,
        page in 1i64..6,
        steps in prop::collection::vec(step(), 0..120),
        during_load in prop::collection::vec(step(), 0..20),
        family in 0u8..3,
    ) {
        let channel = match family {
            0 => Channel::Feed("demo".into()),
            1 => Channel::User("alice".into()),
            _ => Channel::System,
        };
        let since = (before - since_back).max(0);
        let mut w = World {
            sub: Sub::new(channel, 1, cap),
            committed: before,
            live: VecDeque::new(),
            fetch: None,
            sent: Vec::new(),
            page,
        };
        // While the subscribe query runs, live frames are buffered.
        for s in during_load.iter().filter(|s| !matches!(s, Step::Page | Step::Resync)) {
            w.run(s);
        }
        // The query answers: position = since, then the first page.
        w.sub.set_position(since);
        w.write_page(since);
        for s in &steps {
            w.run(s);
            let expected: Vec<i64> = (since + 1..=since + w.sent.len() as i64).collect();
            prop_assert_eq!(&w.sent, &expected, "after {:?}", s);
        }
        // Settle: deliver everything, finish reads, resync once, finish again.
        for _ in 0..2 {
            while !w.live.is_empty() || w.fetch.is_some() {
                w.run(&Step::Deliver);
                w.run(&Step::Page);
            }
            w.run(&Step::Resync);
        }
        while w.fetch.is_some() {
            w.run(&Step::Page);
        }
        let all: Vec<i64> = (since + 1..=w.committed).collect();
        prop_assert_eq!(&w.sent, &all);
        prop_assert_eq!(w.sub.position(), w.committed);
    }

    /// Snapshot channels (stats, presence): what is sent only moves forward,
    /// and a gap is never reported.
    #[test]
    fn snapshots_only_move_forward(
        snapshot in 0i64..50,
        seqs in prop::collection::vec(0i64..100, 0..60),
        drain_at in 0usize..60,
        cap in 1usize..8,
    ) {
        let mut sub = Sub::new(Channel::Stats("demo".into()), 1, cap);
        let mut sent: Vec<i64> = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            if i == drain_at.min(seqs.len()) {
                sub.set_position(snapshot);
                sent.push(snapshot);
                let (out, gap) = sub.drain();
                prop_assert!(!gap);
                sent.extend(out.iter().map(|f| f.seq));
            }
            match sub.offer(&f(*seq)) {
                Accept::Send => sent.push(*seq),
                Accept::Skip => {}
                Accept::Gap => prop_assert!(false, "gap on a snapshot channel"),
            }
        }
        prop_assert!(sent.windows(2).all(|w| w[0] < w[1]), "{:?}", sent);
    }
}
