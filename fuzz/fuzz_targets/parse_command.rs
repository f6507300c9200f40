//! The inbound frame parser: any text a client can send in a text frame.
//! Invariants: never panics; an accepted `subscribe` has a non-negative
//! `since`; the error frame for a rejection is valid JSON carrying the `ref`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsehub::protocol::{error_frame, parse_command, Channel, Command};

fuzz_target!(|data: &[u8]| {
    // Frames that are not UTF-8 never reach the parser (the codec closes
    // the connection), so only text is interesting.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_command(text) {
        Ok(request) => match &request.command {
            Command::Subscribe { channel, since } => {
                assert!(since.is_none_or(|s| s >= 0), "negative since accepted");
                let _ = Channel::parse(channel);
            }
            Command::Unsubscribe { channel } => {
                let _ = Channel::parse(channel);
            }
            _ => {}
        },
        Err(rejected) => {
            let frame = error_frame(rejected.reference, &rejected.error);
            let value: serde_json::Value =
                serde_json::from_str(&frame).expect("error frame is JSON");
            assert_eq!(value["type"], "error");
            assert_eq!(
                value.get("ref").and_then(|r| r.as_i64()),
                rejected.reference
            );
        }
    }
});
