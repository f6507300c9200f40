//! Check-ins: every `check_in` uses a new ticket (`t{n}-{run}`, state
//! `used`), so a ticket is never used twice. Gates and tiers follow fixed
//! shares (most people are `general`, few come through the `VIP` gate).

use serde_json::json;

use super::step::Step;
use crate::event::Subject;
use crate::world::World;

const GATES: &[(&str, f64)] = &[("A", 5.0), ("B", 3.0), ("C", 2.0), ("VIP", 0.5)];

const TIERS: &[(&str, f64)] = &[
    ("general", 80.0),
    ("vip", 8.0),
    ("speaker", 4.0),
    ("staff", 5.0),
    ("press", 3.0),
];

/// The tickets of one scope.
#[derive(Default)]
pub struct Tickets {
    used: u64,
}

impl Tickets {
    /// Someone checks in with the next ticket.
    pub fn check_in(&mut self, w: &mut World) -> Step {
        self.used += 1;
        let actor = w.someone();
        let gate = w.weighted(GATES);
        let tier = w.weighted(TIERS);
        Step {
            kind: "check_in",
            actor,
            subject: Subject {
                kind: "ticket",
                id: w.id("t", self.used),
                state: "used",
            },
            data: json!({ "gate": gate, "tier": tier }),
        }
    }
}
