//! Integration tests: a real hub, real PostgreSQL, real WebSocket clients.

mod abuse;
mod access;
mod bus;
mod cluster;
mod dashboard;
mod helpers;
mod ingest;
mod kafka;
mod lifecycle;
mod limits;
mod origin;
mod partitions;
mod pg_restart;
mod presence;
mod protocol;
mod redis_cluster;
mod replay;
mod smoke;
mod stats;
