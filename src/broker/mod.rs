//! The broker seam: how frames reach the sessions of every replica, and how
//! replicas tell each other what clients must not see (presence state, which
//! scopes changed).
//!
//! Contract:
//! - [`Broker::publish`] delivers pre-encoded frames to this replica's hub at
//!   once (so local clients never depend on Redis) and to every other
//!   replica with local interest in the channel.
//! - [`Broker::interest`] is called by the hub when a channel gains its first
//!   or loses its last local subscriber; a distributed broker subscribes to
//!   what is wanted here and nothing else.
//! - [`Broker::gossip`] reaches every other replica's [`Inbound`] actors.
//! - [`Broker::claim`] lets one replica of the cluster do a piece of work per
//!   window (stats). It answers `true` when the broker cannot tell.
//! - After a reconnection the broker sends [`Resync`](crate::frame::Resync) to
//!   the hub: frames may have been missed, and sessions read the gap from
//!   PostgreSQL by offset.

pub mod memory;
pub mod redis;

use crate::frame::{Frames, Publish, Resync};
use crate::protocol::PresenceUser;
use actix::{Message, Recipient};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Health of the broker, for `/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Down(String),
}

/// Messages between replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Gossip {
    /// A replica's whole local presence (sent every third of the TTL).
    Presence {
        scopes: HashMap<String, Vec<PresenceUser>>,
    },
    /// One user of a scope changed on the sending replica (`None`: gone there).
    User {
        scope: String,
        id: String,
        user: Option<PresenceUser>,
    },
    /// The sender (re)connected: answer with your `Presence`.
    Hello,
    /// Events were committed in these scopes: their stats are stale.
    Dirty { scopes: Vec<String> },
}

/// A [`Gossip`] from another replica.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct FromReplica {
    pub instance: String,
    pub gossip: Gossip,
}

/// Where a broker delivers what comes from elsewhere.
#[derive(Clone)]
pub struct Inbound {
    pub hub: Recipient<Publish>,
    pub resync: Recipient<Resync>,
    pub presence: Recipient<FromReplica>,
    pub stats: Recipient<FromReplica>,
}

pub trait Broker: Send + Sync + 'static {
    /// Sends frames of one channel to every replica's local subscribers.
    fn publish(&self, channel: &str, frames: Frames);

    /// This replica gained (`true`) or lost its last (`false`) local
    /// subscriber of `channel`.
    fn interest(&self, _channel: &str, _interested: bool) {}

    /// Sends a message to every other replica.
    fn gossip(&self, _gossip: Gossip) {}

    /// Whether this replica should do the work named `key` for the next
    /// `ttl` (one replica per window wins).
    fn claim(&self, _key: &str, _ttl: Duration) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }

    fn health(&self) -> Health {
        Health::Up
    }

    /// Short name for logs and `/ready`.
    fn name(&self) -> &'static str;
}
