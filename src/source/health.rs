//! Whether each configured source is connected, for `/ready`.
//!
//! Contract: a source registers each of its parts (e.g. one Redis stream)
//! as down ("not connected yet") before it starts, and reports every change;
//! [`Health::snapshot`] lists them all, so `/ready` names any that is down.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    /// Component name → `None` when up, or why it is down.
    parts: Mutex<BTreeMap<String, Option<String>>>,
}

impl Health {
    pub fn register(&self, name: &str) {
        self.set(name, Some("not connected yet".into()));
    }

    pub fn up(&self, name: &str) {
        self.set(name, None);
    }

    pub fn down(&self, name: &str, why: &str) {
        self.set(name, Some(why.to_string()));
    }

    /// Every part: its name, and `None` when up or why it is down.
    pub fn snapshot(&self) -> Vec<(String, Option<String>)> {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn set(&self, name: &str, state: Option<String>) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.insert(name.to_string(), state);
    }
}
