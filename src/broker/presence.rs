//! The presence seam, beside the broker's: how this replica's presence
//! reaches the other replicas, and theirs reaches this one.
//!
//! Presence frames never travel between replicas. Each replica keeps its own
//! sessions' presence, shares it through a [`PresenceManager`], merges what
//! the others share, and builds the frames its clients see from the merged
//! view ([`crate::presence`]); those frames go through
//! [`Broker::publish`](super::Broker::publish) on a channel that is not
//! relayed.
//!
//! Contract:
//! - [`PresenceManager::share_user`] tells every other replica that one
//!   user's entry in a scope changed here (`None`: none of that user's
//!   sessions is here any more). Sent as it happens; best effort.
//! - [`PresenceManager::share_view`] sends this replica's whole local
//!   presence, which replaces what the others knew of it. The presence hub
//!   sends it every third of the TTL (a replica not heard from for the TTL
//!   is forgotten, so its users leave) and when asked
//!   ([`RemotePresence::ViewWanted`]).
//! - What the other replicas share arrives as [`RemotePresence`] at
//!   [`Inbound::presence`](super::Inbound::presence), in the order each of
//!   them sent it; never what this replica shared itself.
//! - A single node has nobody to share with: its manager does nothing.

use crate::protocol::PresenceUser;
use actix::Message;
use std::collections::HashMap;

/// How this replica's presence reaches the other replicas.
pub trait PresenceManager: Send + Sync + 'static {
    /// One user's entry in `scope` changed on this replica (`None`: gone
    /// from this replica).
    fn share_user(&self, scope: String, id: String, user: Option<PresenceUser>);

    /// This replica's whole local presence: scope → its users here.
    fn share_view(&self, scopes: HashMap<String, Vec<PresenceUser>>);
}

/// Presence from another replica, for the presence hub.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub enum RemotePresence {
    /// One user's entry on replica `instance` changed (`None`: gone there).
    User {
        instance: String,
        scope: String,
        id: String,
        user: Option<PresenceUser>,
    },
    /// Replica `instance`'s whole local presence, replacing what was known
    /// of it.
    View {
        instance: String,
        scopes: HashMap<String, Vec<PresenceUser>>,
    },
    /// Another replica (re)connected and knows nothing of this one's
    /// presence: share the whole view now.
    ViewWanted,
}
