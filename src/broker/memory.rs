//! Single-node broker: publishing is handing the frames to the local hub.

use super::Broker;
use crate::frame::{Frames, Publish};
use actix::Recipient;

pub struct InMemoryBroker {
    hub: Recipient<Publish>,
}

impl InMemoryBroker {
    pub fn new(hub: Recipient<Publish>) -> Self {
        InMemoryBroker { hub }
    }
}

impl Broker for InMemoryBroker {
    fn publish(&self, channel: &str, frames: Frames) {
        self.hub.do_send(Publish {
            channel: channel.into(),
            frames,
        });
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
