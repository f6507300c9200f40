//! Single-node broker: publishing is handing the frames to the local hub;
//! there are no other replicas to notify or share presence with.

use super::presence::PresenceManager;
use super::Broker;
use crate::frame::{Frames, Publish};
use crate::protocol::PresenceUser;
use actix::Recipient;
use std::collections::HashMap;

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
        self.hub.do_send(Publish::new(channel.into(), frames));
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

impl PresenceManager for InMemoryBroker {
    fn share_user(&self, _scope: String, _id: String, _user: Option<PresenceUser>) {}

    fn share_view(&self, _scopes: HashMap<String, Vec<PresenceUser>>) {}
}
