//! Long-poll clients in presence, free of actors and I/O.
//!
//! A user whose history long-poll (`GET …/history?since=N&wait=S` on a
//! scope's channel) is held is present in that scope like a WebSocket
//! session: one session per user and scope on this replica, whatever the
//! number of polls in flight, named [`session_id`]. A poll ending does not
//! end the session at once: the client polls again right after an answer,
//! so the session lingers for the presence grace and a poll that comes
//! within it carries on with no frame at all. When the grace has passed
//! with no poll, the session leaves as of the moment the last poll ended,
//! so the user's `leave` comes one grace after that (not two), unless the
//! user has other sessions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The presence session of `user`'s long-polls on this replica.
pub fn session_id(user: &str) -> String {
    format!("poll:{user}")
}

#[derive(Debug)]
struct Held {
    polls: usize,
    /// When the last poll ended (none in flight since).
    ended_at: Option<Instant>,
}

/// Polls in flight per (scope, user).
#[derive(Debug, Default)]
pub struct Polls {
    held: HashMap<(String, String), Held>,
}

impl Polls {
    /// A poll starts; `true` when the user's poll session must join the
    /// scope (it was not there, nor lingering).
    pub fn start(&mut self, scope: &str, user: &str) -> bool {
        let held = self
            .held
            .entry((scope.to_string(), user.to_string()))
            .or_insert(Held {
                polls: 0,
                ended_at: None,
            });
        let new = held.polls == 0 && held.ended_at.is_none();
        held.polls += 1;
        held.ended_at = None;
        new
    }

    /// A poll ends (the answer was sent, or the client went away).
    pub fn end(&mut self, scope: &str, user: &str, now: Instant) {
        if let Some(held) = self.held.get_mut(&(scope.to_string(), user.to_string())) {
            held.polls = held.polls.saturating_sub(1);
            if held.polls == 0 {
                held.ended_at = Some(now);
            }
        }
    }

    /// Sessions with no poll for `grace`: (scope, user, when the last poll
    /// ended), forgotten here; the caller makes them leave as of then.
    pub fn expire(&mut self, grace: Duration, now: Instant) -> Vec<(String, String, Instant)> {
        let mut gone = Vec::new();
        self.held.retain(|(scope, user), held| match held.ended_at {
            Some(t) if now.duration_since(t) >= grace => {
                gone.push((scope.clone(), user.clone(), t));
                false
            }
            _ => true,
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_user_and_scope_lingering_between_polls() {
        let mut p = Polls::default();
        let t = Instant::now();
        let grace = Duration::from_secs(2);
        assert!(p.start("demo", "alice"), "first poll joins");
        assert!(!p.start("demo", "alice"), "a second tab's poll does not");
        assert!(p.start("other", "alice"), "scopes are apart");
        p.end("demo", "alice", t);
        assert!(p.expire(grace, t + grace).is_empty(), "one poll still held");
        p.end("demo", "alice", t + Duration::from_secs(1));
        // The next poll within the grace carries on: no join, no leave.
        assert!(p.expire(grace, t + Duration::from_secs(2)).is_empty());
        assert!(!p.start("demo", "alice"));
        p.end("demo", "alice", t + Duration::from_secs(3));
        assert!(p.expire(grace, t + Duration::from_secs(4)).is_empty());
        let gone = p.expire(grace, t + Duration::from_secs(5));
        assert_eq!(
            gone,
            [(
                "demo".to_string(),
                "alice".to_string(),
                t + Duration::from_secs(3)
            )]
        );
        // Gone means a new poll joins again; unknown ends are ignored.
        assert!(p.start("demo", "alice"));
        p.end("nope", "bob", t);
    }
}
