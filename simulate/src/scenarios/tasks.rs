//! Tasks (`task{n}-{run}`): `task.created` (`pending`) → `task.started`
//! (`in_progress`, by its assignee) → `task.completed` (by the same
//! assignee, with how long it took). A completed task is forgotten, so it is
//! never restarted. At most ten are open at a time.

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use std::collections::BTreeMap;

use super::step::Step;
use crate::event::Subject;
use crate::world::World;

const TITLES: &[&str] = &[
    "Restock badges at gate A",
    "Fix projector in room B",
    "Confirm catering headcount",
    "Update the schedule screen",
    "Prepare the main stage",
    "Review speaker slides",
    "Set up the livestream",
    "Print extra name tags",
    "Check Wi-Fi in the hall",
    "Move chairs to room C",
    "Answer sponsor emails",
    "Refill water stations",
];

const PRIORITIES: &[(&str, f64)] = &[("low", 3.0), ("normal", 6.0), ("high", 2.0)];

/// Open tasks stay below this.
const MAX_OPEN: usize = 10;

/// The tasks of one scope.
#[derive(Default)]
pub struct Tasks {
    created: u64,
    /// Open tasks only, by number: a completed task is dropped, so it cannot
    /// move again.
    open: BTreeMap<u64, Task>,
}

struct Task {
    title: &'static str,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    InProgress {
        assignee: usize,
        since: DateTime<Utc>,
    },
}

impl Tasks {
    pub fn can_create(&self) -> bool {
        self.open.len() < MAX_OPEN
    }

    pub fn any_pending(&self) -> bool {
        self.open.values().any(|t| t.stage == Stage::Pending)
    }

    pub fn any_started(&self) -> bool {
        self.open
            .values()
            .any(|t| matches!(t.stage, Stage::InProgress { .. }))
    }

    /// Someone creates a pending task.
    pub fn create(&mut self, w: &mut World) -> Step {
        self.created += 1;
        let actor = w.someone();
        let title = TITLES[w.rng.gen_range(0..TITLES.len())];
        let priority = w.weighted(PRIORITIES);
        self.open.insert(
            self.created,
            Task {
                title,
                stage: Stage::Pending,
            },
        );
        Step {
            kind: "task.created",
            actor,
            subject: Subject {
                kind: "task",
                id: w.id("task", self.created),
                state: "pending",
            },
            data: json!({ "title": title, "priority": priority }),
        }
    }

    /// Someone starts a pending task and becomes its assignee; creates one
    /// instead when none is pending.
    pub fn start(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        let pending: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| t.stage == Stage::Pending)
            .map(|(&n, _)| n)
            .collect();
        let Some(&n) = pending.choose(&mut w.rng) else {
            return self.create(w);
        };
        let actor = w.someone();
        let id = w.id("task", n);
        let Some(task) = self.open.get_mut(&n) else {
            return self.create(w);
        };
        task.stage = Stage::InProgress {
            assignee: actor,
            since: now,
        };
        Step {
            kind: "task.started",
            actor,
            subject: Subject {
                kind: "task",
                id,
                state: "in_progress",
            },
            data: json!({ "title": task.title, "assignee": w.people[actor].id }),
        }
    }

    /// The assignee of a started task completes it; creates one instead when
    /// none is started.
    pub fn complete(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        let started: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| matches!(t.stage, Stage::InProgress { .. }))
            .map(|(&n, _)| n)
            .collect();
        let Some(&n) = started.choose(&mut w.rng) else {
            return self.create(w);
        };
        // Dropped from the open tasks: a completed task never moves again.
        let Some(task) = self.open.remove(&n) else {
            return self.create(w);
        };
        let Stage::InProgress { assignee, since } = task.stage else {
            return self.create(w);
        };
        let took = (now - since).num_seconds().max(0);
        Step {
            kind: "task.completed",
            actor: assignee,
            subject: Subject {
                kind: "task",
                id: w.id("task", n),
                state: "completed",
            },
            data: json!({ "title": task.title, "duration_s": took }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{config, generate};
    use std::collections::HashMap;

    #[test]
    fn tasks_never_go_backwards() {
        let events = generate(config(3), 10_000);
        let mut tasks: HashMap<(String, String), Vec<&str>> = HashMap::new();
        for e in events.iter().filter(|e| e.subject.kind == "task") {
            tasks
                .entry((e.scope.clone(), e.subject.id.clone()))
                .or_default()
                .push(e.kind);
        }
        let mut completed = 0;
        for (id, history) in &tasks {
            let expected = ["task.created", "task.started", "task.completed"];
            assert_eq!(history[..], expected[..history.len()], "task {id:?}");
            completed += usize::from(history.len() == 3);
        }
        assert!(completed > 50, "only {completed} tasks completed");
        // The one who completes a task is the one who started it.
        let mut assignee: HashMap<(String, String), String> = HashMap::new();
        for e in events.iter().filter(|e| e.subject.kind == "task") {
            let id = (e.scope.clone(), e.subject.id.clone());
            match e.kind {
                "task.started" => {
                    assignee.insert(id, e.actor.id.clone());
                }
                "task.completed" => assert_eq!(assignee.get(&id), Some(&e.actor.id)),
                _ => {}
            }
        }
    }
}
