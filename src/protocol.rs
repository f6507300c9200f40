//! The wire types of PROTOCOL.md, and nothing else: client commands (parsed
//! leniently enough to say *what* is wrong), channel names, and server frames.
//!
//! Every server frame is built as a [`ServerFrame`] and encoded once with
//! [`encode`]; the resulting [`ByteString`] is shared, never re-serialized.

use crate::error::HubError;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A scope name: `[A-Za-z0-9_.-]{1,64}`.
pub fn valid_scope(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An event kind: `[a-z0-9_.:-]{1,64}`.
pub fn valid_kind(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
        })
}

/// A user id (JWT `sub`, `user:{id}`): 1–128 characters, no whitespace or
/// control characters.
pub fn valid_user_id(s: &str) -> bool {
    (1..=128).contains(&s.chars().count())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A channel a connection can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    Stats(String),
    Presence(String),
    Feed(String),
    User(String),
    System,
}

impl Channel {
    /// Parses a channel name: an unknown family is `not_found`, a malformed
    /// name `bad_request`.
    pub fn parse(name: &str) -> Result<Channel, HubError> {
        if name == "system" {
            return Ok(Channel::System);
        }
        let Some((family, rest)) = name.split_once(':') else {
            return Err(HubError::NotFound(format!(
                "unknown channel '{}'",
                clip(name)
            )));
        };
        let scoped = |make: fn(String) -> Channel| {
            if valid_scope(rest) {
                Ok(make(rest.to_string()))
            } else {
                Err(HubError::BadRequest(format!(
                    "malformed scope in channel '{}'",
                    clip(name)
                )))
            }
        };
        match family {
            "stats" => scoped(Channel::Stats),
            "presence" => scoped(Channel::Presence),
            "feed" => scoped(Channel::Feed),
            "user" if valid_user_id(rest) => Ok(Channel::User(rest.to_string())),
            "user" => Err(HubError::BadRequest(format!(
                "malformed user id in channel '{}'",
                clip(name)
            ))),
            _ => Err(HubError::NotFound(format!(
                "unknown channel family '{}'",
                clip(family)
            ))),
        }
    }

    /// The scope this channel belongs to, for presence and authorization.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Channel::Stats(s) | Channel::Presence(s) | Channel::Feed(s) => Some(s),
            Channel::User(_) | Channel::System => None,
        }
    }

    /// Recoverable channels carry offsets and can be replayed with `since`.
    pub fn recoverable(&self) -> bool {
        matches!(self, Channel::Feed(_) | Channel::User(_) | Channel::System)
    }

    /// Whether this channel's frames travel between replicas. Presence
    /// frames do not: every replica makes them from the merged view.
    pub fn relayed(&self) -> bool {
        !matches!(self, Channel::Presence(_))
    }

    /// The scope whose stats a channel named `name` carries (`stats:{scope}`).
    pub fn stats_scope(name: &str) -> Option<&str> {
        name.strip_prefix("stats:").filter(|s| valid_scope(s))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Stats(s) => write!(f, "stats:{s}"),
            Channel::Presence(s) => write!(f, "presence:{s}"),
            Channel::Feed(s) => write!(f, "feed:{s}"),
            Channel::User(u) => write!(f, "user:{u}"),
            Channel::System => f.write_str("system"),
        }
    }
}

/// Truncates user input quoted back in error messages.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A command from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Subscribe {
        channel: String,
        since: Option<i64>,
    },
    Unsubscribe {
        channel: String,
    },
    Activity {
        action: Option<String>,
        target: Option<String>,
    },
    Ping,
    Refresh {
        token: String,
    },
}

/// A parsed command with its optional `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub reference: Option<i64>,
    pub command: Command,
}

/// Why a text frame is not a command, with the `ref` when it could be read.
#[derive(Debug)]
pub struct Rejected {
    pub reference: Option<i64>,
    pub error: HubError,
}

#[derive(Deserialize)]
struct SubscribeBody {
    channel: String,
    since: Option<i64>,
}
#[derive(Deserialize)]
struct ChannelBody {
    channel: String,
}
#[derive(Deserialize)]
struct ActivityBody {
    action: Option<String>,
    target: Option<String>,
}
#[derive(Deserialize)]
struct RefreshBody {
    token: String,
}

/// The `ref` of a frame that will not be parsed (too large, over the rate,
/// not JSON), read cheaply so its error still names the command: the first
/// `"ref"` key followed by `:` and an integer. `None` when there is none.
/// A `"ref"` inside a string value is always escaped (`\"ref\"`), so it
/// cannot be mistaken for the key; one nested in an object value could.
pub fn sniff_ref(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("\"ref\"") {
        let mut i = from + at + 5;
        from = i;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let start = i;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        // An integer ends the value: not `1.5`, `1e3` or `12abc`.
        let ends = bytes
            .get(i)
            .is_none_or(|b| b.is_ascii_whitespace() || matches!(b, b',' | b'}'));
        return ends.then(|| text[start..i].parse().ok()).flatten();
    }
    None
}

/// Parses one inbound text frame.
pub fn parse_command(text: &str) -> Result<Request, Rejected> {
    let bad = |reference, msg: String| Rejected {
        reference,
        error: HubError::BadRequest(msg),
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(sniff_ref(text), format!("malformed JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(bad(None, "a frame must be a JSON object".into()));
    };
    let reference = match map.get("ref") {
        None | Some(Value::Null) => None,
        Some(r) => Some(
            r.as_i64()
                .ok_or_else(|| bad(None, "'ref' must be an integer".into()))?,
        ),
    };
    let Some(kind) = map.get("type") else {
        return Err(bad(reference, "missing field 'type'".into()));
    };
    let Some(kind) = kind.as_str().map(str::to_owned) else {
        return Err(bad(reference, "'type' must be a string".into()));
    };
    let kind = kind.as_str();
    fn body<T: for<'de> Deserialize<'de>>(
        value: Value,
        kind: &str,
        reference: Option<i64>,
    ) -> Result<T, Rejected> {
        serde_json::from_value(value).map_err(|e| Rejected {
            reference,
            error: HubError::BadRequest(format!("invalid '{kind}': {e}")),
        })
    }
    let command = match kind {
        "subscribe" => {
            let b: SubscribeBody = body(value, kind, reference)?;
            if b.since.is_some_and(|s| s < 0) {
                return Err(bad(reference, "'since' must not be negative".into()));
            }
            Command::Subscribe {
                channel: b.channel,
                since: b.since,
            }
        }
        "unsubscribe" => Command::Unsubscribe {
            channel: body::<ChannelBody>(value, kind, reference)?.channel,
        },
        "activity" => {
            let b: ActivityBody = body(value, kind, reference)?;
            Command::Activity {
                action: b.action,
                target: b.target,
            }
        }
        "ping" => Command::Ping,
        "refresh" => Command::Refresh {
            token: body::<RefreshBody>(value, kind, reference)?.token,
        },
        other => {
            return Err(Rejected {
                reference,
                error: HubError::NotFound(format!("unknown command type '{}'", clip(other))),
            })
        }
    };
    Ok(Request { reference, command })
}

/// `{"id","name"}` of a user, as in `welcome` and `leave`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRef {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A present user, as in presence `sync`, `join` and `update`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceUser {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: PresenceStatus,
    pub sessions: usize,
    pub since: String,
    pub last_active: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Idle,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresenceOp {
    Sync,
    Join,
    Leave,
    Update,
}

/// Every frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        session: &'a str,
        user: &'a UserRef,
        instance: &'a str,
        heartbeat: u64,
    },
    Subscribed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<i64>,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Unsubscribed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<i64>,
        channel: &'a str,
    },
    Stats {
        channel: &'a str,
        version: i64,
        changed: &'a [String],
        stats: &'a Value,
    },
    Presence {
        channel: &'a str,
        op: PresenceOp,
        count: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        users: Option<&'a [PresenceUser]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a Value>,
    },
    Event {
        channel: &'a str,
        offset: i64,
        event: &'a Value,
    },
    Notification {
        channel: &'a str,
        offset: i64,
        notification: &'a Value,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<i64>,
    },
    Ok {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<i64>,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<i64>,
        code: &'a str,
        message: &'a str,
    },
}

/// Serializes a frame once; the bytes are then shared by every recipient.
pub fn encode(frame: &ServerFrame<'_>) -> ByteString {
    // Serializing these types cannot fail: no maps with non-string keys.
    serde_json::to_string(frame)
        .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"encoding"}"#.into())
        .into()
}

/// The `error` frame for a rejected command.
pub fn error_frame(reference: Option<i64>, error: &HubError) -> ByteString {
    encode(&ServerFrame::Error {
        reference,
        code: error.code(),
        message: &error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        parse_command(text).unwrap_err().error.code()
    }

    #[test]
    fn parses_every_command() {
        let r = parse_command(r#"{"type":"subscribe","ref":1,"channel":"feed:demo","since":3}"#)
            .unwrap();
        assert_eq!(r.reference, Some(1));
        assert_eq!(
            r.command,
            Command::Subscribe {
                channel: "feed:demo".into(),
                since: Some(3)
            }
        );
        assert_eq!(
            parse_command(r#"{"type":"ping"}"#).unwrap().command,
            Command::Ping
        );
        assert!(matches!(
            parse_command(r#"{"type":"activity","action":"viewing","target":"x"}"#)
                .unwrap()
                .command,
            Command::Activity { .. }
        ));
        assert!(matches!(
            parse_command(r#"{"type":"refresh","token":"t"}"#)
                .unwrap()
                .command,
            Command::Refresh { .. }
        ));
        assert!(matches!(
            parse_command(r#"{"type":"unsubscribe","channel":"system"}"#)
                .unwrap()
                .command,
            Command::Unsubscribe { .. }
        ));
    }

    #[test]
    fn malformed_frames_get_precise_codes() {
        assert_eq!(code("not json"), "bad_request");
        assert_eq!(code("[1,2]"), "bad_request");
        assert_eq!(code(r#"{"ref":1}"#), "bad_request");
        assert_eq!(code(r#"{"type":5}"#), "bad_request");
        assert_eq!(code(r#"{"type":"subscribe"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"subscribe","channel":7}"#), "bad_request");
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"x","since":-1}"#),
            "bad_request"
        );
        assert_eq!(code(r#"{"type":"ping","ref":"a"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"dance"}"#), "not_found");
    }

    #[test]
    fn keeps_the_ref_of_a_bad_command() {
        let e = parse_command(r#"{"type":"subscribe","ref":9}"#).unwrap_err();
        assert_eq!(e.reference, Some(9));
    }

    #[test]
    fn channel_names() {
        assert_eq!(Channel::parse("system").unwrap(), Channel::System);
        assert_eq!(
            Channel::parse("feed:demo").unwrap(),
            Channel::Feed("demo".into())
        );
        assert_eq!(
            Channel::parse("user:alice@x.io").unwrap(),
            Channel::User("alice@x.io".into())
        );
        assert_eq!(
            Channel::parse("feed:a b").unwrap_err().code(),
            "bad_request"
        );
        assert_eq!(Channel::parse("feed:").unwrap_err().code(), "bad_request");
        assert_eq!(Channel::parse("video:x").unwrap_err().code(), "not_found");
        assert_eq!(Channel::parse("nothing").unwrap_err().code(), "not_found");
        for name in ["stats:a.b-c_1", "presence:x", "feed:y", "user:u", "system"] {
            assert_eq!(Channel::parse(name).unwrap().to_string(), name);
        }
    }

    #[test]
    fn names_and_kinds() {
        assert!(valid_scope("Demo_1.x-y"));
        assert!(!valid_scope(&"a".repeat(65)));
        assert!(valid_kind("message.sent"));
        assert!(!valid_kind("Message"));
    }

    #[test]
    fn frames_encode_as_documented() {
        let f = encode(&ServerFrame::Subscribed {
            reference: Some(1),
            channel: "feed:demo",
            offset: Some(4),
            recovered: Some(true),
        });
        assert_eq!(
            &*f,
            r#"{"type":"subscribed","ref":1,"channel":"feed:demo","offset":4,"recovered":true}"#
        );
        let e = error_frame(Some(3), &HubError::Forbidden("no".into()));
        assert_eq!(
            &*e,
            r#"{"type":"error","ref":3,"code":"forbidden","message":"no"}"#
        );
    }

    #[test]
    fn refs_are_read_from_frames_that_are_not_parsed() {
        assert_eq!(sniff_ref(r#"{"type":"ping","ref":41"#), Some(41));
        assert_eq!(sniff_ref(r#"{"ref" : -3 ,"type":"x"}"#), Some(-3));
        assert_eq!(sniff_ref(r#"{"pad":"x","ref":7}"#), Some(7));
        assert_eq!(sniff_ref(r#"{"a":"\"ref\": 9","ref":2}"#), Some(2));
        for none in [
            r#"{"type":"ping"}"#,
            r#"{"ref":"abc"}"#,
            r#"{"ref":1.5}"#,
            r#"{"ref":}"#,
            r#"{"type":"ref","x":1}"#,
            "not json",
            "",
        ] {
            assert_eq!(sniff_ref(none), None, "{none}");
        }
    }
}
