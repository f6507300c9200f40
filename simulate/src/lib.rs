//! `pulsehub-simulate`: feeds a running hub with a realistic, stateful stream
//! of domain events, for demos and soak tests.
//!
//! An event passes these modules in this order:
//!
//! - [`options`]: the command line ([`SimulateArgs`]).
//! - [`simulator`]: [`Simulator`] turns a seed, a run tag and timestamps
//!   into events, purely and deterministically. [`world`] is the population
//!   every scope shares, [`scenarios`] the subjects and lifecycles of one
//!   scope, [`event`] the shape that leaves the process (PROTOCOL.md, "An
//!   event as ingested").
//! - [`pace`]: how many events each tick, cut into batches, until [`Stop`]
//!   says the run is over ([`stop`]).
//! - [`sink`]: where batches go ([`Sink`]); [`http`] posts them to
//!   `POST /api/events`, retrying what may succeed later; [`kafka`]
//!   produces them to a Kafka topic the hub consumes (`--kafka`).
//! - [`run()`]: wires these together for one run and logs its progress.
//!
//! Generation knows nothing of delivery: a sink sees finished [`Event`]s
//! only, so another transport is one more [`Sink`].

pub mod event;
pub mod http;
pub mod kafka;
pub mod options;
pub mod pace;
pub mod run;
pub mod scenarios;
pub mod simulator;
pub mod sink;
pub mod stop;
pub mod world;

#[cfg(test)]
mod testing;

pub use event::{Actor, Event, Subject};
pub use http::HttpSink;
pub use kafka::KafkaSink;
pub use options::SimulateArgs;
pub use run::run;
pub use simulator::{SimConfig, Simulator};
pub use sink::{Delivery, Sink, Totals};
pub use stop::Stop;
