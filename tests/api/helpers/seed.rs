//! Seed 001's messages as its services publish them (the shapes
//! `examples/mappings/live-dashboard.toml` maps), and what the bus tests
//! read back from the feed.

use serde_json::{json, Value};

/// A check-in of guest `i` at `event`.
pub fn check_in(event: &str, i: usize) -> Value {
    json!({"type": "CHECK_IN_PROCESSED", "eventId": event, "organizationId": "org_abc123",
           "checkInData": {"id": format!("user_{i}"), "name": format!("Guest {i}")}})
}

/// A counter message (`MESSAGE_SENT`, `POLL_VOTE_CAST`, …) at `event`.
pub fn counter(event: &str, kind: &str) -> Value {
    json!({"type": kind, "eventId": event, "organizationId": "org_abc123"})
}

/// The actor ids of feed items, in order (`-` for none).
pub fn actors(feed: &[Value]) -> Vec<String> {
    feed.iter()
        .map(|f| {
            f["event"]["actor"]["id"]
                .as_str()
                .unwrap_or("-")
                .to_string()
        })
        .collect()
}

/// `user_{i}` for each `i`: the actors of those check-ins.
pub fn users(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("user_{i}")).collect()
}
