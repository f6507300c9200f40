//! [`Simulator`]: a deterministic source of realistic events.
//!
//! - With the same seed, run tag and timestamps it yields the same events:
//!   generation reads no clock and does no I/O.
//! - Each event goes to one of the configured scopes, picked uniformly, and
//!   is a valid next step of its subject's lifecycle there
//!   ([`crate::scenarios`]).
//! - `key` is `sim-{run}-{seq}`, `seq` counting from 1 across all scopes.
//! - A config is checked once, in [`Simulator::new`]: scopes must be valid
//!   hub scopes (blanks dropped, duplicates merged), at least 2 people and 1
//!   chat, a run tag of 1–32 of `[A-Za-z0-9_-]`.

use anyhow::bail;
use chrono::{DateTime, SecondsFormat, Utc};
use pulsehub::protocol::valid_scope;
use rand::Rng;

use crate::event::Event;
use crate::scenarios::ScopeState;
use crate::world::World;

/// What a [`Simulator`] simulates.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Scope names, `[A-Za-z0-9_.-]{1,64}`; blanks are dropped, duplicates merged.
    pub scopes: Vec<String>,
    /// People, at least 2 (ids `u1..uN`).
    pub users: usize,
    /// Chats per scope, at least 1 (ids `c1..cN`).
    pub chats: usize,
    /// Seed of the generator; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Run tag in keys and lifecycle subject ids: `[A-Za-z0-9_-]{1,32}`.
    pub run_id: String,
}

/// A deterministic source of realistic events: keeps the state of every
/// subject, so each event is a valid next step of its subject's lifecycle.
pub struct Simulator {
    world: World,
    scopes: Vec<ScopeState>,
    seq: u64,
}

impl Simulator {
    /// A simulator for `config`, or why the config is unusable.
    pub fn new(config: SimConfig) -> anyhow::Result<Self> {
        let mut scopes: Vec<String> = Vec::new();
        for scope in &config.scopes {
            let scope = scope.trim();
            if scope.is_empty() || scopes.iter().any(|s| s == scope) {
                continue;
            }
            if !valid_scope(scope) {
                bail!("invalid scope '{scope}': expected 1-64 of [A-Za-z0-9_.-]");
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            bail!("no scope to feed: give at least one with --scopes");
        }
        if config.users < 2 {
            bail!("--users must be at least 2, got {}", config.users);
        }
        if config.chats < 1 {
            bail!("--chats must be at least 1");
        }
        let run = config.run_id.trim().to_owned();
        if run.is_empty()
            || run.len() > 32
            || !run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("invalid run id '{run}': expected 1-32 of [A-Za-z0-9_-]");
        }
        Ok(Simulator {
            world: World::new(config.users, config.chats, config.seed, run)?,
            scopes: scopes.into_iter().map(ScopeState::new).collect(),
            seq: 0,
        })
    }

    /// The scopes fed, validated and deduplicated.
    pub fn scopes(&self) -> Vec<&str> {
        self.scopes.iter().map(|s| s.name()).collect()
    }

    /// The run tag in keys and subject ids.
    pub fn run_id(&self) -> &str {
        &self.world.run
    }

    /// The next event, stamped `at`.
    pub fn next_event(&mut self, at: DateTime<Utc>) -> Event {
        self.seq += 1;
        let index = self.world.rng.gen_range(0..self.scopes.len());
        let scope = &mut self.scopes[index];
        let step = scope.step(&mut self.world, at);
        Event {
            scope: scope.name().to_owned(),
            kind: step.kind,
            actor: self.world.people[step.actor].clone(),
            subject: step.subject,
            data: step.data,
            key: format!("sim-{}-{}", self.world.run, self.seq),
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

/// A random run tag: six lowercase letters and digits.
pub fn random_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{config, generate};
    use pulsehub::protocol::valid_kind;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn every_kind_matches_the_protocol() {
        for event in generate(config(1), 10_000) {
            assert!(valid_kind(event.kind), "bad kind {:?}", event.kind);
            assert!(valid_scope(&event.scope));
            assert!(
                !event.subject.id.is_empty() && !event.subject.id.contains(char::is_whitespace)
            );
            assert!(
                DateTime::parse_from_rfc3339(&event.at).is_ok(),
                "bad at {}",
                event.at
            );
            let n: usize = event.actor.id[1..].parse().expect("actor id u<n>");
            assert!(event.actor.id.starts_with('u') && (1..=24).contains(&n));
            assert!(event.data.is_object());
        }
    }

    #[test]
    fn keys_are_unique_across_10000_events() {
        let events = generate(config(2), 10_000);
        let keys: HashSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), events.len());
        // Another run never reuses a key either.
        let other = generate(
            SimConfig {
                run_id: "test02".into(),
                ..config(2)
            },
            10_000,
        );
        assert!(other.iter().all(|e| !keys.contains(e.key.as_str())));
    }

    /// Allowed (previous state → next state) per subject type; `None` is "new".
    fn allowed(kind: &str, from: Option<&str>, to: &str) -> bool {
        matches!(
            (kind, from, to),
            ("chat", _, "open")
                | ("ticket", None, "used")
                | ("poll", None | Some("open"), "open")
                | ("poll", Some("open"), "closed")
                | ("question", None | Some("open"), "open")
                | ("question", Some("open"), "answered")
                | ("task", None, "pending")
                | ("task", Some("pending"), "in_progress")
                | ("task", Some("in_progress"), "completed")
                | ("approval", None, "queued")
                | ("approval", Some("queued"), "approved" | "rejected")
        )
    }

    #[test]
    fn subjects_only_move_forward() {
        for seed in 0..5 {
            let mut state: HashMap<(String, &str, String), &str> = HashMap::new();
            for event in generate(config(seed), 10_000) {
                let s = &event.subject;
                let id = (event.scope.clone(), s.kind, s.id.clone());
                let from = state.get(&id).copied();
                assert!(
                    allowed(s.kind, from, s.state),
                    "{} {}: {:?} -> {} ({})",
                    s.kind,
                    s.id,
                    from,
                    s.state,
                    event.kind
                );
                state.insert(id, s.state);
            }
        }
    }

    #[test]
    fn a_seed_makes_the_stream_reproducible() {
        assert_eq!(generate(config(7), 500), generate(config(7), 500));
        assert_ne!(generate(config(7), 500), generate(config(8), 500));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |c: SimConfig| Simulator::new(c).is_err();
        assert!(bad(SimConfig {
            scopes: vec!["no spaces".into()],
            ..config(0)
        }));
        assert!(bad(SimConfig {
            scopes: vec![" ".into()],
            ..config(0)
        }));
        assert!(bad(SimConfig {
            users: 1,
            ..config(0)
        }));
        assert!(bad(SimConfig {
            chats: 0,
            ..config(0)
        }));
        assert!(bad(SimConfig {
            run_id: "a b".into(),
            ..config(0)
        }));
        let sim = Simulator::new(SimConfig {
            scopes: vec!["demo".into(), " demo".into(), "".into(), "x.y-z_1".into()],
            ..config(0)
        })
        .expect("valid");
        assert_eq!(sim.scopes(), vec!["demo", "x.y-z_1"]);
        assert_eq!(sim.run_id(), "test01");
    }

    #[test]
    fn random_run_ids_are_valid_run_tags() {
        for _ in 0..100 {
            let run_id = random_run_id();
            assert_eq!(run_id.len(), 6);
            assert!(Simulator::new(SimConfig {
                run_id,
                ..config(0)
            })
            .is_ok());
        }
    }
}
