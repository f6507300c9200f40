//! The scenarios, each a function from a target and options to a report.

pub mod abuse;
pub mod connect;
pub mod fanout;
pub mod idle;
pub mod ingest;
pub mod presence;
pub mod reconnect;
