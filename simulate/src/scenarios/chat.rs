//! Chat traffic: `message.sent` and `reaction` on the shared chats
//! `c1..cN` (always `open`). Chats have no lifecycle, so any person may
//! write or react at any time; messages are mostly short.

use rand::Rng;
use serde_json::json;

use super::step::Step;
use crate::world::World;

const EMOJI: &[&str] = &["👍", "❤️", "😂", "🎉", "👏", "🔥", "😮", "🙏"];

/// Someone writes in a chat (`chars` long).
pub fn message(w: &mut World) -> Step {
    let actor = w.someone();
    let chars = chars(w);
    Step {
        kind: "message.sent",
        actor,
        subject: w.chat(),
        data: json!({ "chars": chars }),
    }
}

/// Someone reacts in a chat.
pub fn reaction(w: &mut World) -> Step {
    let actor = w.someone();
    let emoji = EMOJI[w.rng.gen_range(0..EMOJI.len())];
    Step {
        kind: "reaction",
        actor,
        subject: w.chat(),
        data: json!({ "emoji": emoji }),
    }
}

/// A message length: mostly short, sometimes long.
fn chars(w: &mut World) -> u32 {
    if w.rng.gen_bool(0.8) {
        w.rng.gen_range(2..=80)
    } else {
        w.rng.gen_range(80..=600)
    }
}
