//! Domain events and notifications: validating what services post, and the
//! one rendering of each as a wire frame, used both for live delivery and for
//! replay from PostgreSQL so the two are byte-for-byte the same.

use crate::error::{Detail, HubError};
use crate::protocol::{encode, valid_kind, valid_scope, valid_user_id, Channel, ServerFrame};
use bytestring::ByteString;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Most events in one `POST /api/events`.
pub const MAX_BATCH: usize = 1000;
/// Largest `data` of one event, serialized.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
const MAX_TEXT: usize = 256;

/// A subject as carried by an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub kind: String,
    pub id: String,
    pub state: Option<String>,
}

/// A validated event, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub scope: String,
    pub kind: String,
    pub actor: Option<Value>,
    pub subject: Option<Subject>,
    pub data: Value,
    pub key: Option<String>,
    pub at: DateTime<Utc>,
}

impl NewEvent {
    /// The subject as stored and sent: `{"type","id","state"?}`.
    pub fn subject_json(&self) -> Option<Value> {
        self.subject.as_ref().map(|s| {
            let mut m = Map::new();
            m.insert("type".into(), s.kind.clone().into());
            m.insert("id".into(), s.id.clone().into());
            if let Some(state) = &s.state {
                m.insert("state".into(), state.clone().into());
            }
            Value::Object(m)
        })
    }
}

/// Renders a timestamp the way every frame carries it (UTC, milliseconds).
pub fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored event's fields as they go on the wire.
pub struct EventView<'a> {
    pub id: &'a Uuid,
    pub kind: &'a str,
    pub actor: Option<&'a Value>,
    pub subject: Option<&'a Value>,
    pub data: &'a Value,
    pub at: &'a DateTime<Utc>,
}

/// The `event` frame of a stored event.
pub fn event_frame(scope: &str, offset: i64, e: &EventView<'_>) -> ByteString {
    let mut event = Map::new();
    event.insert("id".into(), e.id.to_string().into());
    event.insert("kind".into(), e.kind.into());
    if let Some(a) = e.actor {
        event.insert("actor".into(), a.clone());
    }
    if let Some(s) = e.subject {
        event.insert("subject".into(), s.clone());
    }
    event.insert("data".into(), e.data.clone());
    event.insert("at".into(), timestamp(e.at).into());
    encode(&ServerFrame::Event {
        channel: &Channel::Feed(scope.to_string()).to_string(),
        offset,
        event: &Value::Object(event),
    })
}

/// Validates the body of `POST /api/events`: one event or an array of them.
/// Every problem of every item is reported; any problem rejects the batch.
pub fn validate_batch(body: &Value) -> Result<Vec<NewEvent>, HubError> {
    let (items, single) = match body {
        Value::Array(items) => (items.as_slice(), false),
        Value::Object(_) => (std::slice::from_ref(body), true),
        _ => {
            return Err(HubError::BadRequest(
                "body must be an event object or an array of events".into(),
            ))
        }
    };
    if items.is_empty() {
        return Err(HubError::BadRequest("empty batch".into()));
    }
    if items.len() > MAX_BATCH {
        return Err(HubError::TooLarge(format!(
            "{} events in one request; the limit is {MAX_BATCH}",
            items.len()
        )));
    }
    let now = Utc::now();
    let mut details = Vec::new();
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match validate_event(item, now) {
            Ok(event) => events.push(event),
            Err(problems) => details.extend(problems.into_iter().map(|d| Detail {
                index: (!single).then_some(index),
                ..d
            })),
        }
    }
    if details.is_empty() {
        Ok(events)
    } else {
        Err(HubError::Invalid {
            message: format!("{} invalid field(s); nothing was stored", details.len()),
            details,
        })
    }
}

type Problems = Vec<(String, String)>;

/// Validates one event as `POST /api/events` validates each item of its
/// body (an event without `at` gets `now`). On failure, every problem, one
/// [`Detail`] per field at fault (`index` unset: the caller knows where the
/// item came from). Every source validates with this.
pub fn validate_event(item: &Value, now: DateTime<Utc>) -> Result<NewEvent, Vec<Detail>> {
    let mut problems = Problems::new();
    check_event(item, now, &mut problems).ok_or_else(|| {
        problems
            .into_iter()
            .map(|(field, message)| Detail {
                index: None,
                field,
                message,
            })
            .collect()
    })
}

fn check_event(item: &Value, now: DateTime<Utc>, problems: &mut Problems) -> Option<NewEvent> {
    let Some(obj) = item.as_object() else {
        problems.push(("".into(), "an event must be a JSON object".into()));
        return None;
    };
    let scope = required_str(obj, "scope", problems, |s| {
        valid_scope(s)
            .then_some(())
            .ok_or("must match [A-Za-z0-9_.-]{1,64}")
    });
    let kind = required_str(obj, "kind", problems, |s| {
        valid_kind(s)
            .then_some(())
            .ok_or("must match [a-z0-9_.:-]{1,64}")
    });
    let actor = obj.get("actor").filter(|v| !v.is_null()).and_then(|a| {
        let user = a.as_object();
        let id = user.and_then(|u| u.get("id")).and_then(Value::as_str);
        match id {
            Some(id) if valid_user_id(id) => {}
            _ => {
                problems.push((
                    "actor.id".into(),
                    "actor must be an object with a string 'id' (1-128 characters)".into(),
                ));
                return None;
            }
        }
        let name = user.and_then(|u| u.get("name")).filter(|n| !n.is_null());
        if name.is_some_and(|n| n.as_str().is_none_or(|s| s.chars().count() > MAX_TEXT)) {
            problems.push((
                "actor.name".into(),
                "must be a string of at most 256 characters".into(),
            ));
            return None;
        }
        let mut out = Map::new();
        out.insert("id".into(), id?.into());
        if let Some(n) = name {
            out.insert("name".into(), n.clone());
        }
        Some(Value::Object(out))
    });
    let subject = obj.get("subject").filter(|v| !v.is_null()).and_then(|s| {
        let Some(s) = s.as_object() else {
            problems.push(("subject".into(), "must be an object".into()));
            return None;
        };
        let field = |name: &str, problems: &mut Problems, required: bool| -> Option<String> {
            match s.get(name) {
                Some(Value::String(v)) if (1..=MAX_TEXT).contains(&v.chars().count()) => {
                    Some(v.clone())
                }
                None | Some(Value::Null) if !required => None,
                _ => {
                    problems.push((
                        format!("subject.{name}"),
                        "must be a string of 1-256 characters".into(),
                    ));
                    None
                }
            }
        };
        let kind = field("type", problems, true);
        let id = field("id", problems, true);
        let state = field("state", problems, false);
        Some(Subject {
            kind: kind?,
            id: id?,
            state,
        })
    });
    let data = match obj.get("data") {
        None | Some(Value::Null) => Some(json!({})),
        Some(d @ Value::Object(_)) => {
            if d.to_string().len() > MAX_DATA_BYTES {
                problems.push(("data".into(), "must be at most 16 KiB".into()));
                None
            } else {
                Some(d.clone())
            }
        }
        Some(_) => {
            problems.push(("data".into(), "must be an object".into()));
            None
        }
    };
    let key = match obj.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if (1..=MAX_TEXT).contains(&k.chars().count()) => Some(k.clone()),
        Some(_) => {
            problems.push(("key".into(), "must be a string of 1-256 characters".into()));
            None
        }
    };
    let at = match obj.get("at") {
        None | Some(Value::Null) => Some(now),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                problems.push(("at".into(), "must be an RFC 3339 timestamp".into()));
                None
            }
        },
        Some(_) => {
            problems.push(("at".into(), "must be an RFC 3339 timestamp".into()));
            None
        }
    };
    if !problems.is_empty() {
        return None;
    }
    Some(NewEvent {
        event_id: Uuid::now_v7(),
        scope: scope?,
        kind: kind?,
        actor,
        subject,
        data: data?,
        key,
        // PostgreSQL keeps microseconds: truncate so live and replayed frames agree.
        at: at?.trunc_subsecs(6),
    })
}

fn required_str(
    obj: &Map<String, Value>,
    field: &str,
    problems: &mut Problems,
    check: impl Fn(&str) -> Result<(), &'static str>,
) -> Option<String> {
    match obj.get(field) {
        Some(Value::String(s)) => match check(s) {
            Ok(()) => Some(s.clone()),
            Err(why) => {
                problems.push((field.into(), why.into()));
                None
            }
        },
        None | Some(Value::Null) => {
            problems.push((field.into(), "is required".into()));
            None
        }
        Some(_) => {
            problems.push((field.into(), "must be a string".into()));
            None
        }
    }
}

/// A validated notification, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub id: Uuid,
    pub channel: Channel,
    pub level: String,
    pub title: String,
    pub body: String,
    pub at: DateTime<Utc>,
}

const LEVELS: [&str; 4] = ["info", "success", "warning", "error"];

/// Validates the body of `POST /api/notifications`.
pub fn validate_notification(body: &Value) -> Result<NewNotification, HubError> {
    let Some(obj) = body.as_object() else {
        return Err(HubError::BadRequest("body must be a JSON object".into()));
    };
    let mut problems = Problems::new();
    let channel = required_str(obj, "target", &mut problems, |t| match Channel::parse(t) {
        Ok(Channel::System | Channel::User(_)) => Ok(()),
        _ => Err("must be 'system' or 'user:{id}'"),
    })
    .and_then(|t| Channel::parse(&t).ok());
    let level = required_str(obj, "level", &mut problems, |l| {
        LEVELS
            .contains(&l)
            .then_some(())
            .ok_or("must be one of info, success, warning, error")
    });
    let title = required_str(obj, "title", &mut problems, |t| {
        (1..=MAX_TEXT)
            .contains(&t.chars().count())
            .then_some(())
            .ok_or("must be 1-256 characters")
    });
    let body = match obj.get("body") {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(b)) if b.len() <= MAX_DATA_BYTES => Some(b.clone()),
        Some(_) => {
            problems.push(("body".into(), "must be a string of at most 16 KiB".into()));
            None
        }
    };
    match (channel, level, title, body) {
        (Some(channel), Some(level), Some(title), Some(body)) if problems.is_empty() => {
            Ok(NewNotification {
                id: Uuid::now_v7(),
                channel,
                level,
                title,
                body,
                at: Utc::now().trunc_subsecs(6),
            })
        }
        _ => Err(HubError::Invalid {
            message: "invalid notification; nothing was stored".into(),
            details: problems
                .into_iter()
                .map(|(field, message)| Detail {
                    index: None,
                    field,
                    message,
                })
                .collect(),
        }),
    }
}

/// The `notification` frame of a stored notification.
pub fn notification_frame(
    channel: &str,
    offset: i64,
    id: &Uuid,
    level: &str,
    title: &str,
    body: &str,
    at: &DateTime<Utc>,
) -> ByteString {
    encode(&ServerFrame::Notification {
        channel,
        offset,
        notification: &json!({
            "id": id.to_string(),
            "level": level,
            "title": title,
            "body": body,
            "at": timestamp(at),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_event() {
        let body = json!({"scope":"demo","kind":"message.sent",
            "actor":{"id":"alice","name":"Alice"},
            "subject":{"type":"chat","id":"c9","state":"open"},
            "data":{"chars":42},"key":"msg-9f1c","at":"2026-11-21T21:00:00Z"});
        let events = validate_batch(&body).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.subject.as_ref().unwrap().state.as_deref(), Some("open"));
        assert_eq!(timestamp(&e.at), "2026-11-21T21:00:00.000Z");
        assert_eq!(e.subject_json().unwrap()["type"], "chat");
    }

    #[test]
    fn reports_every_bad_item_with_its_index() {
        let body = json!([
            {"scope":"demo","kind":"ok"},
            {"scope":"bad scope","kind":"Upper"},
            {"kind":"x","data":[1],"at":"yesterday","subject":{"type":"t"}}
        ]);
        let err = validate_batch(&body).unwrap_err();
        assert_eq!(err.code(), "bad_request");
        let fields: Vec<_> = err
            .details()
            .iter()
            .map(|d| (d.index.unwrap(), d.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (1, "scope"),
                (1, "kind"),
                (2, "scope"),
                (2, "subject.id"),
                (2, "data"),
                (2, "at")
            ]
        );
    }

    #[test]
    fn limits_batch_and_data_size() {
        let many = Value::Array(vec![json!({"scope":"s","kind":"k"}); MAX_BATCH + 1]);
        assert_eq!(validate_batch(&many).unwrap_err().code(), "too_large");
        let big = json!({"scope":"s","kind":"k","data":{"x":"a".repeat(MAX_DATA_BYTES)}});
        assert_eq!(validate_batch(&big).unwrap_err().details()[0].field, "data");
        assert!(validate_batch(&json!([])).is_err());
        assert!(validate_batch(&json!("x")).is_err());
    }

    #[test]
    fn notifications() {
        let n = validate_notification(
            &json!({"target":"user:bob","level":"warning","title":"Hi","body":"b"}),
        )
        .unwrap();
        assert_eq!(n.channel, Channel::User("bob".into()));
        let e = validate_notification(&json!({"target":"feed:x","level":"loud"})).unwrap_err();
        let fields: Vec<_> = e.details().iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, vec!["target", "level", "title"]);
    }
}
