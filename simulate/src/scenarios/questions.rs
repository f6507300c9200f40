//! Audience questions (`q{n}-{run}`): `question.asked` opens one,
//! `question.upvoted` adds a vote (never by the asker, at most once per
//! person), `question.answered` closes it for good — the host mostly takes
//! the most upvoted question. At most a dozen are open at a time.

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use std::collections::HashSet;

use super::step::Step;
use crate::event::Subject;
use crate::world::World;

const QUESTIONS: &[&str] = &[
    "Will the slides be shared afterwards?",
    "Is there a recording of the keynote?",
    "How does this scale past one region?",
    "What is the migration path from v1?",
    "Can we get the demo code?",
    "When does the afternoon session start?",
    "Is the API rate-limited per tenant?",
    "How do you test this in CI?",
    "Where is the after-party?",
    "Does it work offline?",
];

/// Open questions stay below this.
const MAX_OPEN: usize = 12;

/// The questions of one scope.
#[derive(Default)]
pub struct Questions {
    asked: u64,
    /// Open questions only, oldest first: an answered one is dropped.
    open: Vec<Question>,
}

struct Question {
    id: String,
    asker: usize,
    upvoters: HashSet<usize>,
}

impl Questions {
    pub fn can_ask(&self) -> bool {
        self.open.len() < MAX_OPEN
    }

    /// Some open question has someone left who may upvote it.
    pub fn can_upvote(&self, users: usize) -> bool {
        self.open.iter().any(|q| q.upvoters.len() + 1 < users)
    }

    pub fn any_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Someone asks a new question.
    pub fn ask(&mut self, w: &mut World) -> Step {
        self.asked += 1;
        let actor = w.someone();
        let text = QUESTIONS[w.rng.gen_range(0..QUESTIONS.len())];
        let id = w.id("q", self.asked);
        self.open.push(Question {
            id: id.clone(),
            asker: actor,
            upvoters: HashSet::new(),
        });
        Step {
            kind: "question.asked",
            actor,
            subject: Subject {
                kind: "question",
                id,
                state: "open",
            },
            data: json!({ "text": text }),
        }
    }

    /// Someone other than the asker upvotes an open question for the first
    /// time; asks one instead when no one can.
    pub fn upvote(&mut self, w: &mut World) -> Step {
        let users = w.people.len();
        let open: Vec<usize> = (0..self.open.len())
            .filter(|&i| self.open[i].upvoters.len() + 1 < users)
            .collect();
        let Some(&index) = open.choose(&mut w.rng) else {
            return self.ask(w);
        };
        let question = &mut self.open[index];
        let Some(actor) = w.someone_who(|u| u != question.asker && !question.upvoters.contains(&u))
        else {
            return self.ask(w);
        };
        question.upvoters.insert(actor);
        Step {
            kind: "question.upvoted",
            actor,
            subject: Subject {
                kind: "question",
                id: question.id.clone(),
                state: "open",
            },
            data: json!({ "votes": question.upvoters.len() }),
        }
    }

    /// A host answers an open question, which then never moves again; asks
    /// one instead when none is open.
    pub fn answer(&mut self, w: &mut World) -> Step {
        if self.open.is_empty() {
            return self.ask(w);
        }
        // The host mostly takes the most upvoted question (the oldest on a tie).
        let index = if w.rng.gen_bool(0.7) {
            let mut best = 0;
            for (i, q) in self.open.iter().enumerate() {
                if q.upvoters.len() > self.open[best].upvoters.len() {
                    best = i;
                }
            }
            best
        } else {
            w.rng.gen_range(0..self.open.len())
        };
        let question = self.open.remove(index);
        let actor = w.someone();
        Step {
            kind: "question.answered",
            actor,
            subject: Subject {
                kind: "question",
                id: question.id,
                state: "answered",
            },
            data: json!({ "votes": question.upvoters.len() }),
        }
    }
}
