//! Feed contents: the event batches tests post, the offsets of the frames
//! they get back, and the check that a refused request stored nothing.

use super::app::TestApp;
use serde_json::{json, Value};

/// `n` events in `scope` with the given kind prefix and keys `{tag}-{i}`.
pub fn events(scope: &str, tag: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"scope": scope, "kind": "message.sent",
                       "actor": {"id": "u1", "name": "Maria"},
                       "subject": {"type": "chat", "id": format!("c{}", i % 3), "state": "open"},
                       "data": {"i": i, "tag": tag}, "key": format!("{tag}-{i}")})
            })
            .collect(),
    )
}

/// The offsets of `event` frames, in order.
pub fn offsets(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "event" || f["type"] == "notification")
        .map(|f| f["offset"].as_i64().unwrap())
        .collect()
}

/// The feed of `demo` is still empty: a refused request stored nothing.
pub async fn assert_nothing_stored(app: &TestApp) {
    let token = app.token("alice", &["demo"]);
    let (status, body) = app.get("/api/channels/feed:demo/history", &token).await;
    assert_eq!(
        (status, &body["offset"]),
        (200, &json!(0)),
        "nothing stored: {body}"
    );
}
