//! Notification validation on arbitrary JSON (the body of
//! `POST /api/notifications`). Invariants: never panics; an accepted
//! notification targets `system` or `user:{id}` only, with a known level and
//! a 1-256 character title.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsehub::events::validate_notification;
use pulsehub::protocol::Channel;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(n) = validate_notification(&body) {
        assert!(matches!(n.channel, Channel::System | Channel::User(_)));
        assert!(["info", "success", "warning", "error"].contains(&n.level.as_str()));
        assert!((1..=256).contains(&n.title.chars().count()));
    }
});
