//! Integration tests: a real hub, real PostgreSQL, real WebSocket clients.

mod helpers;
mod ingest;
