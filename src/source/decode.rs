//! From a bus message to a validated event, or the reason it is refused.
//!
//! Contract: a message is refused when it is too large, not JSON, cannot
//! be mapped ([`super::mapping`]) or fails the same validation as an item
//! of `POST /api/events` ([`crate::events::validate_event`], the same
//! messages). A message that names no `key` gets the one its place on the
//! bus gives, so a redelivery is a duplicate.

use super::mapping::Mapping;
use crate::events::{validate_event, NewEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Largest message a source takes, as large as a `POST /api/events` body.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Why a message was refused: a stable code, carried by dead letters and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The bus entry has no message where the hub is told to look.
    NoPayload,
    TooLarge,
    NotJson,
    Mapping,
    Invalid,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoPayload => "no_payload",
            Reason::TooLarge => "too_large",
            Reason::NotJson => "not_json",
            Reason::Mapping => "mapping",
            Reason::Invalid => "invalid",
        }
    }
}

/// A refused message: why, and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// Decodes the messages of every source with one mapping.
#[derive(Debug, Default)]
pub struct Decoder {
    mapping: Mapping,
}

impl Decoder {
    pub fn new(mapping: Mapping) -> Self {
        Decoder { mapping }
    }

    /// Whether the mapping has a rule for `origin`.
    pub fn maps(&self, origin: &str) -> bool {
        self.mapping.names().any(|n| n == origin)
    }

    /// One message's bytes from `origin` (a topic or stream); `key`: the
    /// idempotency key its coordinates give, used when it names none.
    pub fn decode(
        &self,
        origin: &str,
        payload: &[u8],
        key: impl FnOnce() -> String,
        now: DateTime<Utc>,
    ) -> Result<NewEvent, Refusal> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(Refusal::new(
                Reason::TooLarge,
                format!("{} bytes; the limit is {MAX_MESSAGE_BYTES}", payload.len()),
            ));
        }
        let message = serde_json::from_slice(payload)
            .map_err(|e| Refusal::new(Reason::NotJson, format!("malformed JSON: {e}")))?;
        self.decode_value(origin, message, key, now)
    }

    /// A message already parsed (e.g. a Redis entry's fields).
    pub fn decode_value(
        &self,
        origin: &str,
        message: Value,
        key: impl FnOnce() -> String,
        now: DateTime<Utc>,
    ) -> Result<NewEvent, Refusal> {
        let mut event = self
            .mapping
            .apply(origin, message)
            .map_err(|e| Refusal::new(Reason::Mapping, e))?;
        if let Value::Object(fields) = &mut event {
            if fields.get("key").is_none_or(Value::is_null) {
                fields.insert("key".into(), key().into());
            }
        }
        validate_event(&event, now).map_err(|details| {
            let problems: Vec<String> = details
                .iter()
                .map(|d| match d.field.as_str() {
                    "" => d.message.clone(),
                    field => format!("{field}: {}", d.message),
                })
                .collect();
            Refusal::new(Reason::Invalid, problems.join("; "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let text = "[stream.s]\nscope = \"/room\"\nkind = { value = \"msg\" }\n";
        Decoder::new(Mapping::parse(text, "m.toml").unwrap())
    }

    fn refusal(r: Result<NewEvent, Refusal>) -> (&'static str, String) {
        let r = r.unwrap_err();
        (r.reason.code(), r.message)
    }

    #[test]
    fn keys_from_coordinates_unless_named() {
        let d = decoder();
        let now = Utc::now();
        let e = d
            .decode("s", br#"{"room":"r1"}"#, || "redis:s:1-0".into(), now)
            .unwrap();
        assert_eq!((e.scope.as_str(), e.kind.as_str()), ("r1", "msg"));
        assert_eq!(e.key.as_deref(), Some("redis:s:1-0"));
        let e = d
            .decode(
                "other",
                br#"{"scope":"a","kind":"k","key":"own"}"#,
                || "x".into(),
                now,
            )
            .unwrap();
        assert_eq!(e.key.as_deref(), Some("own"));
    }

    #[test]
    fn refusals_say_why() {
        let d = decoder();
        let now = Utc::now();
        let key = || String::from("k");
        assert_eq!(refusal(d.decode("s", b"{nope", key, now)).0, "not_json");
        assert_eq!(
            refusal(d.decode("s", b"{}", key, now)),
            ("mapping", "scope: \"/room\" is missing".into())
        );
        // The same messages as POST /api/events, field by field.
        assert_eq!(
            refusal(d.decode("other", br#"{"scope":"bad scope","data":[1]}"#, key, now)),
            (
                "invalid",
                "scope: must match [A-Za-z0-9_.-]{1,64}; kind: is required; data: must be an object"
                    .into()
            )
        );
        assert_eq!(
            refusal(d.decode("other", b"42", key, now)),
            ("invalid", "an event must be a JSON object".into())
        );
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(refusal(d.decode("s", &big, key, now)).0, "too_large");
    }
}
