//! [`Step`]: what one scenario produces for the next event — everything but
//! the scope, key and timestamp, which the simulator adds.

use serde_json::Value;

use crate::event::Subject;

/// One step of a lifecycle: what happened, who did it (an index into
/// `World::people`), to what, and the details.
pub struct Step {
    pub kind: &'static str,
    pub actor: usize,
    pub subject: Subject,
    pub data: Value,
}
