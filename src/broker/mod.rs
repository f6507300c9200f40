//! The broker seam: how frames reach the sessions of every replica.
//!
//! Producers (the stats aggregator, presence) call [`Broker::publish`] with a
//! channel and pre-encoded frames; the broker delivers them to the local
//! [`Hub`](crate::hub::Hub) of every replica with local interest in the
//! channel. [`memory::InMemoryBroker`] is the single-node default.

pub mod memory;

use crate::hub::Frames;

/// Health of the broker, for `/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Down(String),
}

pub trait Broker: Send + Sync + 'static {
    /// Sends frames of one channel to every replica's local subscribers.
    fn publish(&self, channel: &str, frames: Frames);

    /// This replica gained (`true`) or lost its last (`false`) local
    /// subscriber of `channel`; a distributed broker subscribes accordingly.
    fn interest(&self, _channel: &str, _interested: bool) {}

    fn health(&self) -> Health {
        Health::Up
    }

    /// Short name for logs and `/ready`.
    fn name(&self) -> &'static str;
}
