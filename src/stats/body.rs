//! The stats body of PROTOCOL.md, made from a scope's rows
//! ([`crate::db::stats::ScopeRows`]) and its number of present users.

use crate::db::stats::ScopeRows;
use crate::events::timestamp;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// `{"scope","counts","states","active_subjects","online_users",
/// "events_last_minute","last_event_at"}`, keys sorted so snapshots compare
/// and diff by value.
pub fn body(scope: &str, rows: ScopeRows, online_users: usize) -> Value {
    let ScopeRows {
        counts,
        states,
        active,
        last_minute,
        last_event_at,
    } = rows;
    let mut state_map: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (kind, state, n) in states {
        if let Some(state) = state {
            state_map.entry(kind).or_default().insert(state, n.into());
        }
    }
    json!({
        "scope": scope,
        "counts": counts.into_iter().collect::<BTreeMap<_, _>>(),
        "states": state_map,
        "active_subjects": active.into_iter().collect::<BTreeMap<_, _>>(),
        "online_users": online_users,
        "events_last_minute": last_minute,
        "last_event_at": last_event_at.map(|t| timestamp(&t)),
    })
}
