//! `pulsehub-loadtest`: drives one pulsehub or several replicas (round
//! robin) with real WebSocket and HTTP clients and measures what they see.
//!
//! Scenarios are plain async functions (`scenarios::fanout::run`, …) taking
//! a [`target::Target`] and their options and returning a report, so tests
//! can run them against a hub they started. The binary (`main.rs`) is a thin
//! command line over them.
//!
//! Dependencies point one way: the leaves (`target`, `measure`,
//! `first_error`, `run_info`, `client`, `raw`, `kafka`, `publisher`, `stages`, `swarm`) ← `scenarios` ← `report` ← the
//! binary. A scenario never imports `report`; `report` gathers the
//! scenarios' results.
//!
//! Every target must be a loopback address: this tool loads this machine
//! only. Every scenario is bounded in connections and time.

pub mod client;
pub mod first_error;
pub mod kafka;
pub mod measure;
pub mod publisher;
pub mod raw;
pub mod report;
pub mod run_info;
pub mod scenarios;
pub mod stages;
pub mod swarm;
pub mod target;

pub use report::Report;
pub use scenarios::fanout::{FanoutOpts, FanoutReport};
pub use target::Target;
