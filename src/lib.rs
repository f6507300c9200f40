//! pulsehub: a real-time hub for live dashboards. See ARCHITECTURE.md for the
//! map of the modules and ../shared/PROTOCOL.md for the wire contract.

pub mod auth;
pub mod broker;
pub mod config;
pub mod connections;
pub mod db;
pub mod error;
pub mod events;
pub mod frame;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod origin;
pub mod presence;
pub mod protocol;
pub mod replay;
pub mod routes;
pub mod session;
pub mod source;
pub mod startup;
pub mod state;
pub mod stats;
pub mod telemetry;
