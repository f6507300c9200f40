//! [`World`]: what every scope of a run shares — the seeded rng, the run
//! tag, the people and the chats.
//!
//! - People have ids `u1..uN` and human first names ("Maria", then "Maria
//!   B.", "Maria C.", … once the names run out), all distinct.
//! - A few people do most of the acting: Zipf-like weights, shuffled by the
//!   seed so `u1` is not always the busiest.
//! - Chats `c1..cN` exist in every scope; `c1` is the busiest.
//! - Subjects with a lifecycle get ids that carry the run tag
//!   (`task7-x3k9q2`), so a second run never moves a subject of an earlier
//!   run backwards.
//!
//! Every random choice of a run is drawn from [`World::rng`], in a fixed
//! order, which is what makes a seeded run reproducible.

use anyhow::Context;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::event::{Actor, Subject};

const NAMES: &[&str] = &[
    "Maria", "Jonas", "Aisha", "Liam", "Sofia", "Kenji", "Amara", "Lucas", "Elena", "Omar",
    "Priya", "Mateo", "Chloe", "Tomasz", "Yuki", "Noah", "Fatima", "Emil", "Zoe", "Ravi", "Ingrid",
    "Diego", "Leila", "Finn", "Hana", "Samuel", "Nadia", "Oskar", "Mei", "Kwame", "Clara", "Arjun",
];

/// What all scopes share: the rng and the population.
pub struct World {
    pub rng: StdRng,
    /// The run tag.
    pub run: String,
    /// Person `i` has id `u{i+1}`.
    pub people: Vec<Actor>,
    activity: WeightedIndex<f64>,
    chats: usize,
    chat_activity: WeightedIndex<f64>,
}

impl World {
    /// `users` people (at least 1) and `chats` chats (at least 1), drawing
    /// from `seed` (`None`: the OS).
    pub fn new(users: usize, chats: usize, seed: Option<u64>, run: String) -> anyhow::Result<Self> {
        let mut rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let people = population(users);
        // A few people do most of the talking: Zipf-like weights, shuffled so
        // u1 is not always the busiest.
        let mut weights: Vec<f64> = (0..users)
            .map(|rank| 1.0 / ((rank + 1) as f64).powf(0.8))
            .collect();
        weights.shuffle(&mut rng);
        let activity = WeightedIndex::new(&weights).context("user weights")?;
        // c1 is the busy general chat, the others quieter.
        let chat_activity =
            WeightedIndex::new((0..chats).map(|rank| 1.0 / ((rank + 1) as f64).powf(0.9)))
                .context("chat weights")?;
        Ok(World {
            rng,
            run,
            people,
            activity,
            chats,
            chat_activity,
        })
    }

    /// Someone, the active ones more often.
    pub fn someone(&mut self) -> usize {
        self.activity.sample(&mut self.rng)
    }

    /// Someone for whom `eligible` holds, if anyone.
    pub fn someone_who(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..16 {
            let user = self.someone();
            if eligible(user) {
                return Some(user);
            }
        }
        let n = self.people.len();
        let offset = self.rng.gen_range(0..n);
        (0..n).map(|i| (offset + i) % n).find(|&u| eligible(u))
    }

    /// A chat, the busy ones more often.
    pub fn chat(&mut self) -> Subject {
        let chat = self.chat_activity.sample(&mut self.rng);
        debug_assert!(chat < self.chats);
        Subject {
            kind: "chat",
            id: format!("c{}", chat + 1),
            state: "open",
        }
    }

    /// An index into `weights` (positive, not all zero), by weight.
    pub fn pick(&mut self, weights: impl Iterator<Item = f64> + Clone) -> usize {
        let total: f64 = weights.clone().sum();
        let mut roll = self.rng.gen_range(0.0..total);
        let mut last = 0;
        for (i, weight) in weights.enumerate() {
            if roll < weight {
                return i;
            }
            roll -= weight;
            last = i;
        }
        last
    }

    /// One of `items` (not empty), by weight.
    pub fn weighted<T: Copy>(&mut self, items: &[(T, f64)]) -> T {
        items[self.pick(items.iter().map(|&(_, w)| w))].0
    }

    /// The id of lifecycle subject number `n`: `{prefix}{n}-{run}`.
    pub fn id(&self, prefix: &str, n: u64) -> String {
        format!("{prefix}{n}-{}", self.run)
    }
}

/// `users` people with ids `u1..` and distinct names.
fn population(users: usize) -> Vec<Actor> {
    (0..users)
        .map(|i| {
            let first = NAMES[i % NAMES.len()];
            let round = i / NAMES.len();
            let name = if round == 0 {
                first.to_owned()
            } else {
                // "Maria B.", "Maria C.", … then "Maria B2." and so on.
                let letter = char::from(b'A' + (round % 26) as u8);
                let lap = round / 26;
                if lap == 0 {
                    format!("{first} {letter}.")
                } else {
                    format!("{first} {letter}{lap}.")
                }
            };
            Actor {
                id: format!("u{}", i + 1),
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn large_populations_get_distinct_names() {
        let world = World::new(2000, 6, Some(0), "test01".into()).expect("valid");
        let names: HashSet<&str> = world.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 2000);
        assert_eq!(world.people[0].name, "Maria");
        assert_eq!(world.people[0].id, "u1");
    }
}
