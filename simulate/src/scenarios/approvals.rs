//! Approvals (`a{n}-{run}`): `approval.requested` queues a request (with an
//! amount for money requests), then `approval.approved` or
//! `approval.rejected` decides it — never by the requester, mostly first
//! come first served, big amounts turned down more often. At most six are
//! queued at a time.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::json;

use super::step::Step;
use crate::event::Subject;
use crate::world::World;

/// An amount range, in whole currency units.
type Amounts = Option<(u32, u32)>;

/// Request kind, share, and amount range (none: not about money).
const REQUESTS: &[(&str, f64, Amounts)] = &[
    ("expense", 5.0, Some((15, 900))),
    ("refund", 3.0, Some((10, 250))),
    ("purchase", 2.0, Some((100, 5000))),
    ("access", 3.0, None),
    ("time_off", 1.0, None),
];

/// Queued approvals stay below this.
const MAX_QUEUED: usize = 6;

/// The approvals of one scope.
#[derive(Default)]
pub struct Approvals {
    requested: u64,
    /// Queued approvals only, oldest first.
    queued: Vec<Approval>,
}

struct Approval {
    id: String,
    requester: usize,
    request: &'static str,
    amount: Option<u32>,
    requested: DateTime<Utc>,
}

impl Approvals {
    pub fn can_request(&self) -> bool {
        self.queued.len() < MAX_QUEUED
    }

    pub fn any_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Someone queues a request.
    pub fn request(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        self.requested += 1;
        let actor = w.someone();
        let index = w.pick(REQUESTS.iter().map(|&(_, share, _)| share));
        let (request, _, range) = REQUESTS[index];
        let amount = range.map(|(lo, hi)| w.rng.gen_range(lo..=hi));
        let id = w.id("a", self.requested);
        self.queued.push(Approval {
            id: id.clone(),
            requester: actor,
            request,
            amount,
            requested: now,
        });
        let mut data = json!({ "request": request });
        if let Some(amount) = amount {
            data["amount"] = json!(amount);
        }
        Step {
            kind: "approval.requested",
            actor,
            subject: Subject {
                kind: "approval",
                id,
                state: "queued",
            },
            data,
        }
    }

    /// Someone other than the requester approves or rejects a queued
    /// request; queues one instead when none is queued.
    pub fn decide(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        if self.queued.is_empty() {
            return self.request(w, now);
        }
        // Mostly first come, first served.
        let index = if w.rng.gen_bool(0.7) {
            0
        } else {
            w.rng.gen_range(0..self.queued.len())
        };
        let requester = self.queued[index].requester;
        let Some(actor) = w.someone_who(|u| u != requester) else {
            return self.request(w, now);
        };
        let approval = self.queued.remove(index);
        // Big amounts are turned down more often.
        let reject = match approval.amount {
            Some(amount) if amount > 1000 => 0.45,
            _ => 0.2,
        };
        let (kind, state) = if w.rng.gen_bool(reject) {
            ("approval.rejected", "rejected")
        } else {
            ("approval.approved", "approved")
        };
        let mut data = json!({
            "request": approval.request,
            "requested_by": w.people[approval.requester].id,
            "wait_s": (now - approval.requested).num_seconds().max(0),
        });
        if let Some(amount) = approval.amount {
            data["amount"] = json!(amount);
        }
        Step {
            kind,
            actor,
            subject: Subject {
                kind: "approval",
                id: approval.id,
                state,
            },
            data,
        }
    }
}
