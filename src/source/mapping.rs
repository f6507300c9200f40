//! The mapping file (`PULSEHUB_MAPPING_FILE`, TOML): how a foreign message
//! becomes an event, per topic or stream, as data rather than code.
//!
//! Contract:
//! - A message from a topic (Kafka) or stream (Redis Streams) without a
//!   rule is taken as it is: it must already be in the hub's event shape.
//! - A rule names, per event field (`scope`, `kind`, `actor`, `subject`,
//!   `data`, `key`, `at`), where its value comes from: a field path (a JSON
//!   Pointer, RFC 6901, such as `"/checkInData/name"`; `""` is the whole
//!   message) or a table (constants, value maps, transforms). A field the
//!   rule does not name is the message's own field of that name.
//! - [`Mapping::apply`] only reshapes: the result is then validated exactly
//!   as `POST /api/events` validates an item ([`crate::events`]).
//! - Every mistake in the file (TOML syntax, an unknown field, a field path
//!   that is no JSON Pointer, an unknown transform) is found by
//!   [`Mapping::parse`], reported with the file, line, column and field,
//!   before anything is consumed.

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// The fields of an event, as a message in the hub's shape carries them.
const EVENT_FIELDS: [&str; 7] = ["scope", "kind", "actor", "subject", "data", "key", "at"];

/// Every rule of a mapping file, by topic or stream name.
#[derive(Debug, Default)]
pub struct Mapping {
    rules: BTreeMap<String, Rule>,
}

impl Mapping {
    /// Reads and checks a mapping file.
    pub fn load(path: &str) -> Result<Mapping, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        Mapping::parse(&text, path)
    }

    /// Parses and checks a mapping; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Mapping, String> {
        let parsed: File = toml::from_str(text).map_err(|e| describe(&e, text, file))?;
        let mut rules = parsed.topic;
        for (name, rule) in parsed.stream {
            if rules.contains_key(&name) {
                return Err(format!(
                    "{file}: \"{name}\" has a rule under both [topic] and [stream]; keep one"
                ));
            }
            rules.insert(name, rule);
        }
        Ok(Mapping { rules })
    }

    /// The topics and streams that have a rule.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }

    /// The message from `origin` (a topic or stream name) in the hub's event
    /// shape; the error says which field could not be mapped and why.
    pub fn apply(&self, origin: &str, message: Value) -> Result<Value, String> {
        match self.rules.get(origin) {
            None => Ok(message),
            Some(rule) => rule.apply(&message),
        }
    }
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    topic: BTreeMap<String, Rule>,
    #[serde(default)]
    stream: BTreeMap<String, Rule>,
}

/// How the messages of one topic or stream become events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    scope: Option<Text>,
    kind: Option<Text>,
    actor: Option<PathOr<ActorTable>>,
    subject: Option<PathOr<SubjectTable>>,
    data: Option<PathOr<BTreeMap<String, PathOr<Constant>>>>,
    key: Option<Text>,
    at: Option<PathOr<TimeTable>>,
}

impl Rule {
    fn apply(&self, message: &Value) -> Result<Value, String> {
        let mut out = Map::new();
        if let Value::Object(own) = message {
            for field in EVENT_FIELDS {
                if let Some(v) = own.get(field) {
                    out.insert(field.into(), v.clone());
                }
            }
        }
        let mut set = |field: &str, value: Option<Value>| match value {
            Some(v) => out.insert(field.into(), v),
            None => out.remove(field),
        };
        for (field, text) in [("scope", &self.scope), ("kind", &self.kind)] {
            if let Some(text) = text {
                let value = text.resolve(message).map_err(|e| format!("{field}: {e}"))?;
                let value =
                    value.ok_or_else(|| format!("{field}: {} is missing", text.origin()))?;
                set(field, Some(value.into()));
            }
        }
        if let Some(key) = &self.key {
            let value = key.resolve(message).map_err(|e| format!("key: {e}"))?;
            set("key", value.map(Value::from));
        }
        if let Some(actor) = &self.actor {
            let value = match actor {
                PathOr::Path(p) => p.get(message).cloned(),
                PathOr::Table(t) => t.apply(message).map_err(|e| format!("actor.{e}"))?,
            };
            set("actor", value);
        }
        if let Some(subject) = &self.subject {
            let value = match subject {
                PathOr::Path(p) => p.get(message).cloned(),
                PathOr::Table(t) => t.apply(message).map_err(|e| format!("subject.{e}"))?,
            };
            set("subject", value);
        }
        if let Some(data) = &self.data {
            let value = match data {
                PathOr::Path(p) => p.get(message).cloned(),
                PathOr::Table(fields) => Some(Value::Object(
                    fields
                        .iter()
                        .filter_map(|(name, field)| {
                            let v = match field {
                                PathOr::Path(p) => p.get(message).cloned(),
                                PathOr::Table(c) => Some(c.value.clone()),
                            };
                            v.map(|v| (name.clone(), v))
                        })
                        .collect(),
                )),
            };
            set("data", value);
        }
        if let Some(at) = &self.at {
            let value = match at {
                PathOr::Path(p) => p.get(message).cloned(),
                PathOr::Table(t) => t.apply(message).map_err(|e| format!("at: {e}"))?,
            };
            set("at", value);
        }
        Ok(Value::Object(out))
    }
}

/// A field path: a JSON Pointer (RFC 6901) into the message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Pointer(String);

impl TryFrom<String> for Pointer {
    type Error = String;
    fn try_from(path: String) -> Result<Self, String> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(format!(
                "field path \"{path}\" must start with '/' (a JSON Pointer such as \
                 \"/{path}\"), or be \"\" for the whole message"
            ));
        }
        let mut chars = path.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "field path \"{path}\": '~' must be followed by 0 ('~') or 1 ('/')"
                ));
            }
        }
        Ok(Pointer(path))
    }
}

impl Pointer {
    fn get<'a>(&self, message: &'a Value) -> Option<&'a Value> {
        message.pointer(&self.0).filter(|v| !v.is_null())
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Either a field path (a TOML string) or a table of options.
#[derive(Debug)]
enum PathOr<T> {
    Path(Pointer),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for PathOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = PathOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field path such as \"/checkInData/name\", or a table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Pointer::try_from(s.to_string())
                    .map(PathOr::Path)
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(PathOr::Table)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A constant value: `{ value = … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Constant {
    value: Value,
}

/// A text field (`scope`, `kind`, `key`, an actor's or subject's part):
/// a field path, or `{ from | value, map, transform, default }`.
#[derive(Debug)]
struct Text {
    from: Source,
    /// Raw values replaced as a whole (looked up before any transform).
    map: BTreeMap<String, String>,
    /// Applied in order to a value the map does not name.
    transform: Vec<Transform>,
    /// When the path is missing (taken as it is, not transformed).
    default: Option<String>,
}

#[derive(Debug)]
enum Source {
    Path(Pointer),
    Value(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextTable {
    from: Option<Pointer>,
    value: Option<String>,
    #[serde(default)]
    map: BTreeMap<String, String>,
    #[serde(default)]
    transform: Vec<Transform>,
    default: Option<String>,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = match PathOr::<TextTable>::deserialize(d)? {
            PathOr::Path(p) => {
                return Ok(Text {
                    from: Source::Path(p),
                    map: BTreeMap::new(),
                    transform: Vec::new(),
                    default: None,
                })
            }
            PathOr::Table(t) => t,
        };
        let from = match (table.from, table.value) {
            (Some(p), None) => Source::Path(p),
            (None, Some(v)) => Source::Value(v),
            _ => {
                return Err(de::Error::custom(
                    "give exactly one of `from` (a field path) and `value` (a constant)",
                ))
            }
        };
        Ok(Text {
            from,
            map: table.map,
            transform: table.transform,
            default: table.default,
        })
    }
}

impl Text {
    /// The value, mapped and transformed; `None` when its path is missing
    /// and there is no default.
    fn resolve(&self, message: &Value) -> Result<Option<String>, String> {
        let raw = match &self.from {
            Source::Value(v) => v.clone(),
            Source::Path(p) => match p.get(message) {
                None => return Ok(self.default.clone()),
                Some(v) => scalar(v).ok_or_else(|| format!("{p} is {}", kind_of(v)))?,
            },
        };
        if let Some(mapped) = self.map.get(&raw) {
            return Ok(Some(mapped.clone()));
        }
        Ok(Some(self.transform.iter().fold(raw, |s, t| t.apply(&s))))
    }

    fn origin(&self) -> String {
        match &self.from {
            Source::Path(p) => p.to_string(),
            Source::Value(v) => format!("\"{v}\""),
        }
    }
}

/// Simple rewrites of a text value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Transform {
    Lowercase,
    Uppercase,
    /// `_` → `.` (`MESSAGE_SENT` → `MESSAGE.SENT`).
    UnderscoreToDot,
    /// Leading and trailing white space removed.
    Trim,
}

impl Transform {
    fn apply(self, s: &str) -> String {
        match self {
            Transform::Lowercase => s.to_lowercase(),
            Transform::Uppercase => s.to_uppercase(),
            Transform::UnderscoreToDot => s.replace('_', "."),
            Transform::Trim => s.trim().to_string(),
        }
    }
}

/// `actor = { id = …, name = … }`: no actor when `id` is missing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorTable {
    id: Text,
    name: Option<Text>,
}

impl ActorTable {
    fn apply(&self, message: &Value) -> Result<Option<Value>, String> {
        let Some(id) = self.id.resolve(message).map_err(|e| format!("id: {e}"))? else {
            return Ok(None);
        };
        let mut actor = Map::new();
        actor.insert("id".into(), id.into());
        if let Some(name) = &self.name {
            if let Some(n) = name.resolve(message).map_err(|e| format!("name: {e}"))? {
                actor.insert("name".into(), n.into());
            }
        }
        Ok(Some(Value::Object(actor)))
    }
}

/// `subject = { type = …, id = …, state = … }`: no subject when `type` or
/// `id` is missing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectTable {
    #[serde(rename = "type")]
    kind: Text,
    id: Text,
    state: Option<Text>,
}

impl SubjectTable {
    fn apply(&self, message: &Value) -> Result<Option<Value>, String> {
        let kind = self
            .kind
            .resolve(message)
            .map_err(|e| format!("type: {e}"))?;
        let id = self.id.resolve(message).map_err(|e| format!("id: {e}"))?;
        let (Some(kind), Some(id)) = (kind, id) else {
            return Ok(None);
        };
        let mut subject = Map::new();
        subject.insert("type".into(), kind.into());
        subject.insert("id".into(), id.into());
        if let Some(state) = &self.state {
            if let Some(s) = state.resolve(message).map_err(|e| format!("state: {e}"))? {
                subject.insert("state".into(), s.into());
            }
        }
        Ok(Some(Value::Object(subject)))
    }
}

/// `at = { from = …, format = … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeTable {
    from: Pointer,
    #[serde(default)]
    format: TimeFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
enum TimeFormat {
    /// An RFC 3339 string, as the hub's own shape carries it.
    #[default]
    #[serde(rename = "rfc3339")]
    Rfc3339,
    /// Seconds since 1970 (a number or a numeric string).
    #[serde(rename = "unix_s")]
    UnixSeconds,
    /// Milliseconds since 1970 (a number or a numeric string).
    #[serde(rename = "unix_ms")]
    UnixMillis,
}

impl TimeTable {
    fn apply(&self, message: &Value) -> Result<Option<Value>, String> {
        let Some(v) = self.from.get(message) else {
            return Ok(None);
        };
        let millis = match self.format {
            TimeFormat::Rfc3339 => return Ok(Some(v.clone())),
            TimeFormat::UnixSeconds => number(v).map(|s| s * 1000.0),
            TimeFormat::UnixMillis => number(v),
        };
        let at = millis
            .filter(|ms| ms.is_finite())
            .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(ms as i64))
            .ok_or_else(|| format!("{} is not a unix time", self.from))?;
        Ok(Some(crate::events::timestamp(&at).into()))
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A scalar as text: strings as they are, numbers and booleans written out.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object, not text",
        Value::Array(_) => "an array, not text",
        _ => "not text",
    }
}

/// `file:line:column: field: message` for a TOML or mapping error.
fn describe(e: &toml::de::Error, text: &str, file: &str) -> String {
    let (line, column) = e.span().map_or((0, 0), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    });
    // Without the input, toml's message names the keys: "…\nin `a.b`".
    let mut bare = e.clone();
    bare.set_input(None);
    let bare = bare.to_string();
    let field = bare
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    let message = e.message().trim();
    match (line, field) {
        (0, Some(f)) => format!("{file}: {f}: {message}"),
        (0, None) => format!("{file}: {message}"),
        (_, Some(f)) => format!("{file}:{line}:{column}: {f}: {message}"),
        (_, None) => format!("{file}:{line}:{column}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = include_str!("../../examples/mappings/live-dashboard.toml");
    const TOPIC: &str = "platform.analytics.check-in.v1";

    fn example() -> Mapping {
        Mapping::parse(EXAMPLE, "live-dashboard.toml").unwrap()
    }

    #[test]
    fn seed_001_check_in() {
        let m = example();
        let msg = json!({"type": "CHECK_IN_PROCESSED", "eventId": "evt_191cc94a7cf1",
            "organizationId": "org_abc123", "checkInData": {"id": "user_123", "name": "John Doe"}});
        let e = m.apply(TOPIC, msg).unwrap();
        assert_eq!(e["scope"], "evt_191cc94a7cf1");
        assert_eq!(e["kind"], "check_in");
        assert_eq!(e["actor"], json!({"id": "user_123", "name": "John Doe"}));
        assert_eq!(e["data"]["organization"], "org_abc123");
        assert!(crate::events::validate_event(&e, Utc::now()).is_ok(), "{e}");
    }

    #[test]
    fn seed_001_counters_become_the_dashboards_kinds() {
        let m = example();
        for (ty, kind) in [
            ("MESSAGE_SENT", "message.sent"),
            ("POLL_VOTE_CAST", "poll.vote"),
            ("QUESTION_ASKED", "question.asked"),
            ("QUESTION_UPVOTED", "question.upvoted"),
            ("REACTION_SENT", "reaction"),
        ] {
            let msg = json!({"type": ty, "eventId": "evt_1", "organizationId": "org_1"});
            let e = m.apply(TOPIC, msg).unwrap();
            assert_eq!(
                (e["scope"].as_str(), e["kind"].as_str()),
                (Some("evt_1"), Some(kind))
            );
            assert!(e.get("actor").is_none(), "no check-in data, no actor: {e}");
            crate::events::validate_event(&e, Utc::now()).unwrap();
        }
    }

    #[test]
    fn unmapped_sources_and_fields_pass_through() {
        let m = example();
        let own = json!({"scope": "demo", "kind": "x", "extra": 1});
        assert_eq!(m.apply("another.topic", own.clone()).unwrap(), own);
        // A field the rule does not name is the message's own.
        let msg = json!({"type": "MESSAGE_SENT", "eventId": "e", "key": "k1", "subject": {"type": "chat", "id": "c"}});
        let e = m.apply(TOPIC, msg).unwrap();
        assert_eq!(
            (e["key"].as_str(), e["subject"]["id"].as_str()),
            (Some("k1"), Some("c"))
        );
        assert!(e.get("type").is_none(), "only event fields are taken: {e}");
    }

    #[test]
    fn missing_or_ill_typed_values_are_named() {
        let m = example();
        let err = m.apply(TOPIC, json!({"type": "MESSAGE_SENT"})).unwrap_err();
        assert_eq!(err, "scope: \"/eventId\" is missing");
        let err = m
            .apply(TOPIC, json!({"type": {"x": 1}, "eventId": "e"}))
            .unwrap_err();
        assert_eq!(err, "kind: \"/type\" is an object, not text");
        let err = m
            .apply(
                TOPIC,
                json!({"type": "X", "eventId": "e", "checkInData": {"id": ["u"]}}),
            )
            .unwrap_err();
        assert_eq!(err, "actor.id: \"/checkInData/id\" is an array, not text");
    }

    #[test]
    fn every_kind_of_field_spec() {
        let m = Mapping::parse(
            r#"
            [stream.orders]
            scope = { value = "shop" }
            kind = { from = "/event", transform = ["trim", "lowercase", "underscore_to_dot"], map = { "Legacy" = "order.legacy" } }
            key = "/id"
            actor = "/who"
            subject = { type = { value = "order" }, id = "/order/id", state = { from = "/order/status", transform = ["lowercase"], default = "unknown" } }
            data = { total = "/order/total", channel = { value = "web" }, absent = "/nope" }
            at = { from = "/ts", format = "unix_ms" }
            "#,
            "t.toml",
        )
        .unwrap();
        let msg = json!({"event": " ORDER_PLACED ", "id": 42, "who": {"id": "u1"},
            "order": {"id": "o9", "total": 12.5, "status": "PAID"}, "ts": 1_700_000_000_123_i64});
        let e = m.apply("orders", msg).unwrap();
        assert_eq!(
            e,
            json!({"scope": "shop", "kind": "order.placed", "key": "42", "actor": {"id": "u1"},
                "subject": {"type": "order", "id": "o9", "state": "paid"},
                "data": {"total": 12.5, "channel": "web"}, "at": "2023-11-14T22:13:20.123Z"})
        );
        let e = m
            .apply("orders", json!({"event": "Legacy", "order": {"id": "o1"}}))
            .unwrap();
        assert_eq!(e["kind"], "order.legacy", "the map wins over transforms");
        assert_eq!(e["subject"]["state"], "unknown", "default when missing");
        assert!(e.get("key").is_none() && e.get("actor").is_none());
        let err = m
            .apply("orders", json!({"event": "x", "ts": "soon"}))
            .unwrap_err();
        assert_eq!(err, "at: \"/ts\" is not a unix time");
        // Seconds, and the whole message as data.
        let m = Mapping::parse(
            "[topic.t]\nat = { from = \"/t\", format = \"unix_s\" }\ndata = \"\"\n",
            "t.toml",
        )
        .unwrap();
        let e = m
            .apply("t", json!({"scope": "s", "kind": "k", "t": "1700000000"}))
            .unwrap();
        assert_eq!(e["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(e["data"]["t"], "1700000000");
    }

    #[test]
    fn mistakes_are_reported_with_file_line_and_field() {
        let cases = [
            (
                "[topic.a]\nscope = \"eventId\"\n",
                "m.toml:2:9: topic.a.scope: field path \"eventId\" must start with '/'",
            ),
            (
                "[topic.a]\nscope = \"/e\"\nkind = { from = \"/type\", transform = [\"snake\"] }\n",
                "m.toml:3:39: topic.a.kind.transform: unknown variant `snake`",
            ),
            (
                "[topic.a]\nkind = { from = \"/t\", value = \"x\" }\n",
                "m.toml:2:8: topic.a.kind: give exactly one of `from`",
            ),
            (
                "[topic.a]\nscop = \"/e\"\n",
                "m.toml:2:1: topic.a: unknown field `scop`",
            ),
            ("[topics.a]\n", "m.toml:1:2: unknown field `topics`"),
            (
                "[topic.a]\nscope = \"/a~2b\"\n",
                "m.toml:2:9: topic.a.scope: field path \"/a~2b\": '~'",
            ),
            (
                "[topic.a]\nat = { from = \"/t\", format = \"iso\" }\n",
                "m.toml:2:30: topic.a.at.format: unknown variant `iso`",
            ),
            ("[topic.a]\nscope = \n", "m.toml:2:9: "),
            (
                "[topic.a]\n[stream.a]\n",
                "m.toml: \"a\" has a rule under both",
            ),
        ];
        for (text, expected) in cases {
            let err = Mapping::parse(text, "m.toml").unwrap_err();
            assert!(
                err.starts_with(expected),
                "{text:?}\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn the_example_names_seed_001s_topic() {
        assert_eq!(example().names().collect::<Vec<_>>(), vec![TOPIC]);
    }
}
