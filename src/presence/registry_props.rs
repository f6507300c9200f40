//! Property tests of presence bookkeeping: for any sequence of joins, leaves,
//! time passing and expiry, over several sessions, users and scopes, a
//! scope's count is the number of users with at least one session there or
//! still in their grace, every change carries that count, and `join`/`leave`
//! alternate per user, starting with `join`.

use super::registry::Registry;
use crate::protocol::{PresenceOp, UserRef};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

const SCOPES: [&str; 2] = ["a", "b"];
const USERS: usize = 3;
const SESSIONS: usize = 7;
const GRACE_MS: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize),
    Leave(usize, usize),
    Wait(u64),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SCOPES.len(), 0..SESSIONS).prop_map(|(c, s)| Op::Join(c, s)),
        4 => (0..SCOPES.len(), 0..SESSIONS).prop_map(|(c, s)| Op::Leave(c, s)),
        2 => (0u64..150).prop_map(Op::Wait),
        2 => Just(Op::Expire),
    ]
}

/// Session `s` always belongs to user `s % USERS` (a session is one token).
fn user_of(session: usize) -> String {
    format!("u{}", session % USERS)
}

/// A user's sessions in a scope, and when (ms) the last one left.
type Entry = (BTreeSet<usize>, Option<u64>);

#[derive(Default)]
struct Model {
    /// scope → user → (sessions, left at (ms) when the last one left).
    present: BTreeMap<&'static str, BTreeMap<String, Entry>>,
}

impl Model {
    fn count(&self, scope: &str) -> usize {
        self.present.get(scope).map_or(0, BTreeMap::len)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn count_matches_model_and_join_leave_alternate(
        ops in prop::collection::vec(op(), 0..150),
    ) {
        let t0 = Instant::now();
        let grace = Duration::from_millis(GRACE_MS);
        let mut r = Registry::default();
        let mut m = Model::default();
        let mut now = 0u64;
        // (scope, user) → the last of join/leave announced.
        let mut last: HashMap<(String, String), PresenceOp> = HashMap::new();
        let mut announce = |scope: &str, user: &str, op: PresenceOp| -> Result<(), TestCaseError> {
            let key = (scope.to_string(), user.to_string());
            match op {
                PresenceOp::Join => prop_assert!(
                    last.get(&key) != Some(&PresenceOp::Join),
                    "two joins in a row for {:?}", key
                ),
                PresenceOp::Leave => prop_assert_eq!(
                    last.get(&key), Some(&PresenceOp::Join),
                    "leave without join for {:?}", key
                ),
                _ => return Ok(()),
            }
            last.insert(key, op);
            Ok(())
        };
        for op in &ops {
            let at = t0 + Duration::from_millis(now);
            match *op {
                Op::Join(c, s) => {
                    let scope = SCOPES[c];
                    let user = user_of(s);
                    let users = m.present.entry(scope).or_default();
                    let (expect_op, changed) = match users.get_mut(&user) {
                        Some((sessions, left)) => {
                            let new = sessions.insert(s);
                            if new { *left = None; }
                            (PresenceOp::Update, new)
                        }
                        None => {
                            users.insert(user.clone(), (BTreeSet::from([s]), None));
                            (PresenceOp::Join, true)
                        }
                    };
                    let change = r.join(scope, &format!("s{s}"), &UserRef { id: user.clone(), name: None }, at);
                    prop_assert_eq!(change.is_some(), changed, "{:?}", op);
                    if let Some(c) = change {
                        prop_assert_eq!(c.op, expect_op);
                        prop_assert_eq!(c.count, m.count(scope));
                        prop_assert_eq!(c.user.sessions, m.present[scope][&user].0.len());
                        announce(scope, &user, c.op)?;
                    }
                }
                Op::Leave(c, s) => {
                    let scope = SCOPES[c];
                    let user = user_of(s);
                    let mut changed = false;
                    if let Some((sessions, left)) = m.present.get_mut(scope).and_then(|u| u.get_mut(&user)) {
                        if sessions.remove(&s) {
                            changed = true;
                            if sessions.is_empty() {
                                *left = Some(now);
                            }
                        }
                    }
                    let change = r.leave(scope, &format!("s{s}"), at);
                    prop_assert_eq!(change.is_some(), changed, "{:?}", op);
                    if let Some(c) = change {
                        prop_assert_eq!(c.op, PresenceOp::Update);
                        prop_assert_eq!(c.count, m.count(scope));
                        prop_assert_eq!(c.user.sessions, m.present[scope][&user].0.len());
                    }
                }
                Op::Wait(ms) => now += ms,
                Op::Expire => {
                    let mut expected = BTreeSet::new();
                    for (scope, users) in &mut m.present {
                        users.retain(|user, (sessions, left)| {
                            let gone = sessions.is_empty()
                                && left.is_some_and(|l| now - l >= GRACE_MS);
                            if gone {
                                expected.insert((scope.to_string(), user.clone()));
                            }
                            !gone
                        });
                    }
                    let changes = r.expire(grace, at);
                    let got: BTreeSet<_> = changes.iter().map(|c| (c.scope.clone(), c.user.id.clone())).collect();
                    prop_assert_eq!(got.len(), changes.len(), "one leave per user");
                    prop_assert_eq!(&got, &expected);
                    for c in &changes {
                        prop_assert_eq!(c.op, PresenceOp::Leave);
                        prop_assert_eq!(c.user.sessions, 0);
                        announce(&c.scope, &c.user.id, c.op)?;
                    }
                    // Several leaves of one scope count down to the final count.
                    for scope in SCOPES {
                        let mine: Vec<usize> = changes.iter().filter(|c| c.scope == scope).map(|c| c.count).collect();
                        if let Some(&final_count) = mine.last() {
                            prop_assert_eq!(final_count, m.count(scope));
                        }
                    }
                }
            }
            for scope in SCOPES {
                prop_assert_eq!(r.count(scope), m.count(scope), "scope {} after {:?}", scope, op);
                let listed: Vec<String> = r.users(scope).into_iter().map(|u| u.id).collect();
                let model: Vec<String> = m.present.get(scope).map(|u| u.keys().cloned().collect()).unwrap_or_default();
                prop_assert_eq!(listed, model);
            }
            // The session index agrees with the model.
            for s in 0..SESSIONS {
                let mut scopes = r.scopes_of(&format!("s{s}"));
                scopes.sort();
                let model: Vec<String> = SCOPES.iter()
                    .filter(|c| m.present.get(**c).and_then(|u| u.get(&user_of(s))).is_some_and(|(ss, _)| ss.contains(&s)))
                    .map(|c| c.to_string())
                    .collect();
                prop_assert_eq!(scopes, model);
            }
        }
    }
}
