//! Polls, one open at a time per scope: the first `poll.vote` opens the next
//! poll (`p{n}-{run}`, questions taken in turn), each person votes at most
//! once, and after a share (40–90 %) of the population has voted the poll
//! may be closed with `poll.closed`, naming its winner. Each poll has a
//! favourite option or two.

use rand::Rng;
use std::collections::HashSet;

use serde_json::json;

use super::step::Step;
use crate::event::Subject;
use crate::world::World;

const POLLS: &[(&str, &[&str])] = &[
    (
        "Best talk so far?",
        &[
            "keynote",
            "async-rust",
            "postgres-at-scale",
            "design-systems",
        ],
    ),
    ("What's for lunch?", &["pizza", "salad", "sushi", "tacos"]),
    ("How is the pace?", &["too-slow", "just-right", "too-fast"]),
    ("Next meetup?", &["march", "april", "may"]),
    ("Coffee or tea?", &["coffee", "tea", "neither"]),
];

/// The polls of one scope.
#[derive(Default)]
pub struct Polls {
    opened: u64,
    open: Option<Poll>,
}

struct Poll {
    id: String,
    template: usize,
    voters: HashSet<usize>,
    tally: Vec<u64>,
    /// Relative appeal of each option.
    preference: Vec<f64>,
    /// Votes after which the poll closes (at most the population).
    target: usize,
}

impl Polls {
    /// The open poll has all the votes it will get.
    pub fn ready_to_close(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|poll| poll.voters.len() >= poll.target)
    }

    /// Someone who has not voted yet votes in the open poll, opening the next
    /// poll first if none is open.
    pub fn vote(&mut self, w: &mut World) -> Step {
        let opened = &mut self.opened;
        let poll = self.open.get_or_insert_with(|| {
            *opened += 1;
            Poll::open(*opened, w)
        });
        let actor = w
            .someone_who(|u| !poll.voters.contains(&u))
            .unwrap_or_else(|| w.someone());
        poll.voters.insert(actor);
        let option = w.pick(poll.preference.iter().copied());
        poll.tally[option] += 1;
        let (question, options) = POLLS[poll.template];
        Step {
            kind: "poll.vote",
            actor,
            subject: Subject {
                kind: "poll",
                id: poll.id.clone(),
                state: "open",
            },
            data: json!({ "option": options[option], "question": question }),
        }
    }

    /// A host closes the open poll; `None` when there is none.
    pub fn close(&mut self, w: &mut World) -> Option<Step> {
        let actor = w.someone();
        let poll = self.open.take()?;
        let (question, options) = POLLS[poll.template];
        let winner = poll
            .tally
            .iter()
            .enumerate()
            .max_by_key(|&(i, votes)| (votes, std::cmp::Reverse(i)))
            .map(|(i, _)| options[i]);
        Some(Step {
            kind: "poll.closed",
            actor,
            subject: Subject {
                kind: "poll",
                id: poll.id,
                state: "closed",
            },
            data: json!({ "votes": poll.voters.len(), "winner": winner, "question": question }),
        })
    }
}

impl Poll {
    /// Poll number `n` of the scope.
    fn open(n: u64, w: &mut World) -> Poll {
        let users = w.people.len();
        let template = ((n - 1) as usize) % POLLS.len();
        let options = POLLS[template].1.len();
        // Each poll has a favourite or two.
        let preference = (0..options).map(|_| w.rng.gen_range(0.2..3.0)).collect();
        let share = w.rng.gen_range(0.4..0.9);
        let target = ((users as f64 * share).round() as usize).clamp(1, users);
        Poll {
            id: w.id("p", n),
            template,
            voters: HashSet::new(),
            tally: vec![0; options],
            preference,
            target,
        }
    }
}
