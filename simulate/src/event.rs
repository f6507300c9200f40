//! One generated event, in the shape of PROTOCOL.md ("An event as
//! ingested"): `{"scope","kind","actor":{"id","name"},
//! "subject":{"type","id","state"},"data":{…},"key","at"}`.
//!
//! `kind` always matches `[a-z0-9_.:-]{1,64}`, `data` is an object, `at` is
//! RFC 3339 (UTC, milliseconds) and `key` is `sim-{run}-{seq}`: unique within
//! a run, and across runs because `{run}` is a random tag (or `--run-id`).
//! Sinks send these as they are, so every transport carries the same bytes.

use serde::Serialize;
use serde_json::Value;

/// One event, as posted to `/api/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub scope: String,
    pub kind: &'static str,
    pub actor: Actor,
    pub subject: Subject,
    pub data: Value,
    pub key: String,
    /// RFC 3339, UTC.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub state: &'static str,
}

#[cfg(test)]
mod tests {
    use crate::testing::{config, generate};

    #[test]
    fn events_serialize_to_the_ingest_shape() {
        let event = generate(config(9), 1).remove(0);
        let value = serde_json::to_value(&event).expect("json");
        for field in ["scope", "kind", "actor", "subject", "data", "key", "at"] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert!(value["actor"]["id"].is_string() && value["actor"]["name"].is_string());
        assert!(value["subject"]["type"].is_string());
        assert!(value["subject"]["id"].is_string());
        assert!(value["subject"]["state"].is_string());
        assert_eq!(value["at"], "2026-11-21T21:00:00.000Z");
    }
}
