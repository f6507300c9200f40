//! The subjects of one scope and what may happen to them next.
//!
//! Each step picks an action by weight among those the scope's state allows
//! (the mix, [`ScopeState::step`]), so every event is a valid next step of
//! its subject's lifecycle:
//!
//! | kind | subject (type, state) | data | module |
//! |---|---|---|---|
//! | `message.sent` | `chat` `c1..cN`, `open` | `chars` | `chat` |
//! | `reaction` | `chat` `c1..cN`, `open` | `emoji` | `chat` |
//! | `check_in` | `ticket`, `used` (each ticket once) | `gate`, `tier` | `tickets` |
//! | `poll.vote` | `poll`, `open` (one vote per person and poll) | `option`, `question` | `polls` |
//! | `poll.closed` | `poll`, `closed` (after its last vote) | `votes`, `winner`, `question` | `polls` |
//! | `question.asked` | `question`, `open` | `text` | `questions` |
//! | `question.upvoted` | `question`, `open` (not by the asker, once per person) | `votes` | `questions` |
//! | `question.answered` | `question`, `answered` (then never touched again) | `votes` | `questions` |
//! | `task.created` | `task`, `pending` | `title`, `priority` | `tasks` |
//! | `task.started` | `task`, `in_progress` (only a pending task) | `title`, `assignee` | `tasks` |
//! | `task.completed` | `task`, `completed` (only a started task, by its assignee; never restarted) | `title`, `duration_s` | `tasks` |
//! | `approval.requested` | `approval`, `queued` | `request`, `amount` | `approvals` |
//! | `approval.approved` / `approval.rejected` | `approval`, `approved` / `rejected` (only a queued one, not by the requester) | `request`, `requested_by`, `wait_s` | `approvals` |
//!
//! Chat messages dominate; open questions, open tasks and queued approvals
//! stay below a small cap each, so a long run does not pile them up.

mod approvals;
mod chat;
mod polls;
mod questions;
mod step;
mod tasks;
mod tickets;

use chrono::{DateTime, Utc};

pub use step::Step;

use crate::world::World;

/// The subjects of one scope.
pub struct ScopeState {
    name: String,
    tickets: tickets::Tickets,
    polls: polls::Polls,
    questions: questions::Questions,
    tasks: tasks::Tasks,
    approvals: approvals::Approvals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Message,
    Reaction,
    CheckIn,
    PollVote,
    PollClose,
    Ask,
    Upvote,
    Answer,
    TaskCreate,
    TaskStart,
    TaskComplete,
    ApprovalRequest,
    ApprovalDecide,
}

impl ScopeState {
    /// A scope with no subjects yet.
    pub fn new(name: String) -> Self {
        ScopeState {
            name,
            tickets: Default::default(),
            polls: Default::default(),
            questions: Default::default(),
            tasks: Default::default(),
            approvals: Default::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What can happen next, and how likely it is. The order is part of the
    /// seeded stream: an action's place decides which roll picks it.
    fn candidates(&self, users: usize) -> Vec<(Action, f64)> {
        let mut out = vec![
            (Action::Message, 34.0),
            (Action::Reaction, 14.0),
            (Action::CheckIn, 10.0),
        ];
        if self.polls.ready_to_close() {
            out.push((Action::PollClose, 6.0));
        } else {
            out.push((Action::PollVote, 12.0));
        }
        if self.questions.can_ask() {
            out.push((Action::Ask, 4.0));
        }
        if self.questions.can_upvote(users) {
            out.push((Action::Upvote, 8.0));
        }
        if self.questions.any_open() {
            out.push((Action::Answer, 3.0));
        }
        if self.tasks.can_create() {
            out.push((Action::TaskCreate, 4.0));
        }
        if self.tasks.any_pending() {
            out.push((Action::TaskStart, 4.0));
        }
        if self.tasks.any_started() {
            out.push((Action::TaskComplete, 4.0));
        }
        if self.approvals.can_request() {
            out.push((Action::ApprovalRequest, 2.5));
        }
        if self.approvals.any_queued() {
            out.push((Action::ApprovalDecide, 2.5));
        }
        out
    }

    /// One valid next step, at `now`.
    pub fn step(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        let action = w.weighted(&self.candidates(w.people.len()));
        match action {
            Action::Message => chat::message(w),
            Action::Reaction => chat::reaction(w),
            Action::CheckIn => self.tickets.check_in(w),
            Action::PollVote => self.polls.vote(w),
            // Not offered without an open poll; stay valid anyway.
            Action::PollClose => self
                .polls
                .close(w)
                .unwrap_or_else(|| self.tickets.check_in(w)),
            Action::Ask => self.questions.ask(w),
            Action::Upvote => self.questions.upvote(w),
            Action::Answer => self.questions.answer(w),
            Action::TaskCreate => self.tasks.create(w),
            Action::TaskStart => self.tasks.start(w, now),
            Action::TaskComplete => self.tasks.complete(w, now),
            Action::ApprovalRequest => self.approvals.request(w, now),
            Action::ApprovalDecide => self.approvals.decide(w, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{config, generate};
    use std::collections::{HashMap, HashSet};

    #[test]
    fn the_mix_covers_every_kind_and_chats_dominate() {
        let events = generate(config(5), 10_000);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for e in &events {
            *counts.entry(e.kind).or_default() += 1;
        }
        for kind in [
            "message.sent",
            "reaction",
            "check_in",
            "poll.vote",
            "poll.closed",
            "question.asked",
            "question.upvoted",
            "question.answered",
            "task.created",
            "task.started",
            "task.completed",
            "approval.requested",
            "approval.approved",
            "approval.rejected",
        ] {
            assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind}");
        }
        assert!(counts["message.sent"] > counts["check_in"]);
        let scopes: HashSet<&str> = events.iter().map(|e| e.scope.as_str()).collect();
        assert_eq!(scopes.len(), 2);
        let chats: HashSet<&str> = events
            .iter()
            .filter(|e| e.subject.kind == "chat")
            .map(|e| e.subject.id.as_str())
            .collect();
        assert_eq!(chats.len(), 6);
        assert!(events.iter().any(|e| e.actor.name == "Maria"));
    }

    #[test]
    fn people_act_plausibly() {
        let events = generate(config(4), 10_000);
        let mut votes: HashSet<(String, String, String)> = HashSet::new();
        let mut askers: HashMap<(String, String), String> = HashMap::new();
        let mut upvotes: HashSet<(String, String, String)> = HashSet::new();
        let mut requesters: HashMap<(String, String), String> = HashMap::new();
        for e in &events {
            let id = (e.scope.clone(), e.subject.id.clone());
            let by = (e.scope.clone(), e.subject.id.clone(), e.actor.id.clone());
            match e.kind {
                "poll.vote" => assert!(votes.insert(by), "double vote {e:?}"),
                "question.asked" => {
                    askers.insert(id, e.actor.id.clone());
                }
                "question.upvoted" => {
                    assert_ne!(askers.get(&id), Some(&e.actor.id), "self upvote");
                    assert!(upvotes.insert(by), "double upvote {e:?}");
                }
                "approval.requested" => {
                    requesters.insert(id, e.actor.id.clone());
                }
                "approval.approved" | "approval.rejected" => {
                    assert_ne!(requesters.get(&id), Some(&e.actor.id), "self approval")
                }
                _ => {}
            }
        }
    }
}
