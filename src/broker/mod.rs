//! The broker seam: how frames reach the sessions of every replica, and how
//! replicas tell each other what clients never see. Presence has its own
//! seam beside this one ([`presence::PresenceManager`]); a broker carries
//! frames, claims and [`Notice`]s and knows nothing of presence.
//!
//! Contract:
//! - [`Broker::publish`] is the one road into the hub for every frame
//!   (feeds, notifications, stats, presence). It delivers pre-encoded frames
//!   to this replica's hub at once, in call order (so local clients never
//!   depend on Redis), and, when the channel is relayed
//!   ([`Channel::relayed`](crate::protocol::Channel::relayed)), to every
//!   other replica with local interest in it. A channel that is not relayed
//!   (presence: every replica builds those frames from its merged view)
//!   stays on this replica.
//! - [`Broker::interest`] is called by the hub when a channel gains its first
//!   or loses its last local subscriber; a distributed broker subscribes to
//!   what is wanted here (and relayed) and nothing else.
//! - [`Broker::notify`] sends a [`Notice`] to every other replica; it arrives
//!   at their [`Inbound::notices`]. Best effort: a notice lost while the
//!   broker is down is not sent again.
//! - [`Broker::claim`] lets one replica of the cluster do a piece of work per
//!   window (stats). It answers `true` when the broker cannot tell.
//! - After a reconnection the broker sends [`Resync`] to the hub: frames may
//!   have been missed, and sessions read the gap from PostgreSQL by offset.

pub mod memory;
pub mod presence;
pub mod redis;

use crate::frame::{Frames, Publish, Resync};
use actix::{Message, Recipient};
use futures_util::future::BoxFuture;
use presence::RemotePresence;
use std::time::Duration;

/// Health of the broker, for `/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Down(String),
}

/// What one replica tells the others about the data they share, apart from
/// frames (nothing here reaches a client as such).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum Notice {
    /// Events were committed in these scopes: what is derived from them
    /// (their stats) is stale.
    Committed { scopes: Vec<String> },
}

/// Where a broker delivers what comes from elsewhere.
#[derive(Clone)]
pub struct Inbound {
    /// Frames, from [`Broker::publish`] here and on other replicas.
    pub hub: Recipient<Publish>,
    /// The broker reconnected.
    pub resync: Recipient<Resync>,
    /// Other replicas' presence ([`presence::PresenceManager`]).
    pub presence: Recipient<RemotePresence>,
    /// Other replicas' [`Notice`]s.
    pub notices: Recipient<Notice>,
}

pub trait Broker: Send + Sync + 'static {
    /// Sends frames of one channel to this replica's subscribers and, if the
    /// channel is relayed, to every other replica's.
    fn publish(&self, channel: &str, frames: Frames);

    /// This replica gained (`true`) or lost its last (`false`) local
    /// subscriber of `channel`.
    fn interest(&self, _channel: &str, _interested: bool) {}

    /// Sends a notice to every other replica.
    fn notify(&self, _notice: Notice) {}

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
