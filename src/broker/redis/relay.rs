//! What both subscribers (one Redis, a cluster) do with what arrives from
//! the other replicas: frames to the hub (their own dropped), gossip to
//! presence and stats, and the resync after anything may have been missed.

use super::ops::{Op, Shared};
use super::wire::{decode_frames, unix_micros, Envelope, Gossip};
use crate::broker::presence::RemotePresence;
use crate::broker::{Inbound, Notice};
use crate::frame::{Publish, Resync};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What both subscribers (one Redis, a cluster) do with what arrives:
/// frames to the hub, gossip to presence and stats, and the resync.
pub struct Relay {
    pub prefix: Arc<str>,
    pub instance: Arc<str>,
    pub gossip_channel: String,
    pub inbound: Inbound,
    pub shared: Arc<Shared>,
    pub ops: mpsc::Sender<Op>,
}

impl Relay {
    /// The subscription (re)covers everything wanted: anything published
    /// while it did not is in PostgreSQL, and the other replicas are asked
    /// for their presence.
    pub fn up(&self) {
        self.resync();
        self.hello();
    }

    /// Frames may have been missed: sessions read the gap from PostgreSQL.
    pub fn resync(&self) {
        self.inbound.resync.do_send(Resync);
    }

    /// Asks the other replicas for their whole presence.
    pub fn hello(&self) {
        self.gossip(Gossip::Hello);
    }

    pub fn gossip(&self, gossip: Gossip) {
        if let Some(payload) = Envelope::encode(&self.instance, gossip) {
            let _ = self.ops.try_send(Op::Publish(
                format!("{}:gossip", self.prefix),
                payload,
                None,
            ));
        }
    }

    pub fn dispatch(&self, channel: &str, payload: &[u8]) {
        self.shared.metrics.broker_received.inc();
        if channel == self.gossip_channel {
            let Some(Envelope {
                i: instance,
                gossip,
            }) = Envelope::decode(payload)
            else {
                return;
            };
            if *instance == *self.instance {
                return;
            }
            let presence = &self.inbound.presence;
            match gossip {
                Gossip::Hello => presence.do_send(RemotePresence::ViewWanted),
                Gossip::User { scope, id, user } => presence.do_send(RemotePresence::User {
                    instance,
                    scope,
                    id,
                    user,
                }),
                Gossip::View { scopes } => {
                    presence.do_send(RemotePresence::View { instance, scopes })
                }
                Gossip::Committed { scopes } => {
                    self.inbound.notices.do_send(Notice::Committed { scopes })
                }
                Gossip::Dropped => self.resync(),
            }
            return;
        }
        let Some(name) = channel
            .strip_prefix(&*self.prefix)
            .and_then(|c| c.strip_prefix(":c:"))
        else {
            return;
        };
        match decode_frames(Bytes::copy_from_slice(payload)) {
            Some(relay) if *relay.origin != *self.instance => {
                if let Some(sent) = relay.sent_us {
                    let us = unix_micros().saturating_sub(sent);
                    self.shared.metrics.stages.relay.observe(us as f64 / 1e6);
                }
                self.inbound
                    .hub
                    .do_send(Publish::new(name.into(), relay.frames.into()))
            }
            Some(_) => {}
            None => tracing::warn!(channel = name, "malformed frames from redis"),
        }
    }
}
