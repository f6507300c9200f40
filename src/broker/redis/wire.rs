//! What the Redis broker puts on the wire; replicas of one version read
//! each other's.
//!
//! - Frames, on `{prefix}:c:{channel}`: a small binary envelope
//!   `origin, count, (seq, len, bytes)*, sent` around the already-encoded
//!   frames, so they stay the bytes they were; `sent` (the publisher's wall
//!   clock, µs) times the relay and may be absent (older replicas neither
//!   write nor read it).
//! - Everything else, on `{prefix}:gossip`: one compact JSON [`Envelope`],
//!   `{"i": sender, "k": kind, …fields}`; a kind a replica does not know is
//!   dropped, so kinds can be added.
//! - On a Redis Cluster the same channels and payloads travel by sharded
//!   pub/sub (`SPUBLISH`/`SSUBSCRIBE`).

use crate::frame::Outbound;
use crate::protocol::PresenceUser;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One message on `{prefix}:gossip`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending replica (a replica drops its own messages).
    pub i: String,
    #[serde(flatten)]
    pub gossip: Gossip,
}

/// The kinds of gossip (`k`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Gossip {
    /// The sender (re)connected: every other replica answers with its `view`.
    Hello,
    /// One user's presence on the sender changed (`null`: gone there).
    User {
        scope: String,
        id: String,
        user: Option<PresenceUser>,
    },
    /// The sender's whole local presence.
    View {
        scopes: HashMap<String, Vec<PresenceUser>>,
    },
    /// Events were committed in these scopes on the sender.
    Committed { scopes: Vec<String> },
    /// The sender could not publish some frames (a cluster shard was down):
    /// every other replica resyncs its sessions from PostgreSQL. Replicas
    /// that do not know this kind drop it.
    Dropped,
}

impl Envelope {
    pub fn encode(instance: &str, gossip: Gossip) -> Option<Bytes> {
        let envelope = Envelope {
            i: instance.to_string(),
            gossip,
        };
        serde_json::to_vec(&envelope).ok().map(Bytes::from)
    }

    /// `None` when malformed.
    pub fn decode(payload: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(payload).ok()
    }
}

/// Frames as received from another replica.
#[derive(Debug)]
pub struct Relayed {
    pub origin: String,
    pub frames: Vec<Outbound>,
    /// The publisher's wall clock when it sent them, µs since the epoch.
    pub sent_us: Option<u64>,
}

/// Microseconds since the Unix epoch, by this machine's clock.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `origin, count, (seq, len, bytes)*, sent` — frames stay the bytes they were.
pub fn encode_frames(instance: &str, frames: &[Outbound]) -> Bytes {
    let size: usize = frames.iter().map(|f| f.text.len() + 12).sum();
    let mut b = BytesMut::with_capacity(instance.len() + 14 + size);
    b.put_u16(instance.len() as u16);
    b.put_slice(instance.as_bytes());
    b.put_u32(frames.len() as u32);
    for f in frames {
        b.put_i64(f.seq);
        b.put_u32(f.text.len() as u32);
        b.put_slice(f.text.as_bytes());
    }
    b.put_u64(unix_micros());
    b.freeze()
}

/// The frames of a payload; `None` when malformed.
pub fn decode_frames(mut b: Bytes) -> Option<Relayed> {
    let take = |b: &mut Bytes, n: usize| (b.remaining() >= n).then(|| b.split_to(n));
    let n = take(&mut b, 2)?.get_u16() as usize;
    let origin = String::from_utf8(take(&mut b, n)?.to_vec()).ok()?;
    let count = take(&mut b, 4)?.get_u32() as usize;
    let mut frames = Vec::with_capacity(count.min(10_000));
    for _ in 0..count {
        let seq = take(&mut b, 8)?.get_i64();
        let len = take(&mut b, 4)?.get_u32() as usize;
        let text = bytestring::ByteString::try_from(take(&mut b, len)?).ok()?;
        frames.push(Outbound { seq, text });
    }
    let sent_us = match b.remaining() {
        0 => None,
        8 => Some(b.get_u64()),
        _ => return None,
    };
    Some(Relayed {
        origin,
        frames,
        sent_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PresenceStatus;

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Outbound {
                seq: 7,
                text: r#"{"type":"event","offset":7}"#.into(),
            },
            Outbound {
                seq: -1,
                text: "é".into(),
            },
        ];
        let before = unix_micros();
        let relayed = decode_frames(encode_frames("hub-a", &frames)).unwrap();
        assert_eq!(relayed.origin, "hub-a");
        let sent = relayed.sent_us.unwrap();
        assert!(sent >= before && sent <= unix_micros(), "{sent}");
        let back = relayed.frames;
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].seq, &*back[0].text),
            (7, r#"{"type":"event","offset":7}"#)
        );
        assert_eq!((back[1].seq, &*back[1].text), (-1, "é"));
        // Truncated or garbage payloads are refused, not trusted.
        let whole = encode_frames("hub-a", &frames);
        assert!(decode_frames(whole.slice(..whole.len() - 1)).is_none());
        assert!(decode_frames(Bytes::from_static(b"\xff")).is_none());
        // A payload without the send time (an older replica) still decodes.
        let old = whole.slice(..whole.len() - 8);
        let relayed = decode_frames(old).unwrap();
        assert_eq!((relayed.frames.len(), relayed.sent_us), (2, None));
    }

    fn round_trip(gossip: Gossip, json: &str) {
        let bytes = Envelope::encode("hub-a", gossip).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), json);
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back.i, "hub-a");
        assert_eq!(Envelope::encode(&back.i, back.gossip).unwrap(), bytes);
    }

    #[test]
    fn gossip_envelopes() {
        round_trip(Gossip::Hello, r#"{"i":"hub-a","k":"hello"}"#);
        round_trip(Gossip::Dropped, r#"{"i":"hub-a","k":"dropped"}"#);
        round_trip(
            Gossip::Committed {
                scopes: vec!["demo".into()],
            },
            r#"{"i":"hub-a","k":"committed","scopes":["demo"]}"#,
        );
        round_trip(
            Gossip::User {
                scope: "demo".into(),
                id: "al".into(),
                user: None,
            },
            r#"{"i":"hub-a","k":"user","scope":"demo","id":"al","user":null}"#,
        );
        let al = PresenceUser {
            id: "al".into(),
            name: None,
            status: PresenceStatus::Online,
            sessions: 1,
            since: "s".into(),
            last_active: "a".into(),
            activity: None,
        };
        round_trip(
            Gossip::View {
                scopes: HashMap::from([("demo".into(), vec![al])]),
            },
            r#"{"i":"hub-a","k":"view","scopes":{"demo":[{"id":"al","status":"online","sessions":1,"since":"s","last_active":"a"}]}}"#,
        );
        // Not ours, or not whole: dropped.
        assert!(Envelope::decode(br#"{"i":"hub-a","k":"bye"}"#).is_none());
        assert!(Envelope::decode(br#"{"k":"hello"}"#).is_none());
    }
}
