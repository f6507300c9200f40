//! Channel names as a client sends them in `subscribe`/`unsubscribe` and in
//! `/api/channels/{channel}/history`. Invariants: never panics; an accepted
//! name prints back to exactly itself (so authorization and the broker see
//! the channel the client asked for); only scoped families carry a scope, and
//! that scope is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsehub::protocol::{valid_scope, valid_user_id, Channel};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(channel) = Channel::parse(name) {
        assert_eq!(channel.to_string(), name, "round trip");
        match &channel {
            Channel::Stats(s) | Channel::Presence(s) | Channel::Feed(s) => {
                assert!(valid_scope(s));
                assert_eq!(channel.scope(), Some(s.as_str()));
            }
            Channel::User(u) => {
                assert!(valid_user_id(u));
                assert_eq!(channel.scope(), None);
            }
            Channel::System => assert_eq!(channel.scope(), None),
        }
        assert_eq!(
            channel.recoverable(),
            !matches!(channel, Channel::Stats(_) | Channel::Presence(_))
        );
    }
});
