//! Frames on their way to sessions: the leaf types every producer (ingest,
//! stats, presence), the broker and the hub share.
//!
//! Contract:
//! - A frame is encoded once by its producer ([`crate::protocol::encode`])
//!   and travels as the same bytes (`ByteString`, shared through [`Frames`])
//!   to every subscriber on every replica.
//! - Every frame carries its position in its channel ([`Outbound::seq`]): the
//!   offset on a recoverable channel, the version of a stats snapshot, the
//!   sequence number of a presence diff. Sessions drop duplicates and find
//!   gaps by it alone.
//! - [`Publish`] is the one message by which frames enter a hub; [`Resync`]
//!   tells it that frames may have been missed (the broker reconnected).

use actix::Message;
use bytestring::ByteString;
use std::sync::Arc;
use std::time::Instant;

/// One encoded frame and its position in its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub seq: i64,
    pub text: ByteString,
}

/// Frames of one channel, in order, shared by every recipient.
pub type Frames = Arc<[Outbound]>;

/// Frames for this replica's subscribers of `channel` (broker → hub).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub channel: Arc<str>,
    pub frames: Frames,
    /// When the frames entered this replica (published here, or received
    /// from the broker): the hub's dispatch time is measured from it.
    pub at: Instant,
}

impl Publish {
    /// Frames entering this replica now.
    pub fn new(channel: Arc<str>, frames: Frames) -> Self {
        Publish {
            channel,
            frames,
            at: Instant::now(),
        }
    }
}

/// The broker reconnected: frames may have been missed. Every session reads
/// its recoverable channels from its position onwards.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Resync;
