//! Event ingest validation on arbitrary JSON (the body of `POST /api/events`
//! after the JSON extractor). Invariants: never panics; accepted events have
//! a valid scope and kind; a rejection names at least one detail or is a
//! plain bad_request/too_large.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsehub::events::validate_batch;
use pulsehub::protocol::{valid_kind, valid_scope};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match validate_batch(&body) {
        Ok(events) => {
            assert!(!events.is_empty());
            for e in &events {
                assert!(valid_scope(&e.scope), "scope {:?}", e.scope);
                assert!(valid_kind(&e.kind), "kind {:?}", e.kind);
                let _ = e.subject_json();
            }
        }
        Err(error) => {
            // The HTTP error body must always be serializable.
            let _ = error.to_string();
        }
    }
});
