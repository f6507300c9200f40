//! Test harness: a real hub on port 0 over a fresh PostgreSQL database per
//! test (cloned from a migrated template), real WebSocket and HTTP clients.
//! Tests `use crate::helpers::*`; each file provides one thing:
//!
//! - `config`: test secrets, patience, the hub configuration, free ports;
//! - `database`: fresh databases cloned from a migrated template;
//! - `app`: [`TestApp`], hubs served in this process (one, or a cluster);
//! - `ws`: [`WsClient`], the tungstenite client;
//! - `raw_ws`: the load generator's client read by hand (no automatic pongs);
//! - `hub_process`: [`HubProcess`], the `pulsehub` binary as a child;
//! - `redis`: the shared Redis and [`PrivateRedis`];
//! - `redis_cluster`: [`RedisCluster`], a Redis Cluster of a test's own;
//! - `postgres`: [`PrivatePostgres`], a PostgreSQL server of a test's own
//!   that it stops (fast or like a crash) and starts again;
//! - `feed`: event batches, frame offsets, the nothing-stored check;
//! - `streams`: [`TestStreams`], Redis stream keys of a test's own, and the
//!   hub's feed and metrics read back;
//! - `kafka`: [`Tansu`], a Kafka-API broker of a test's own;
//! - `seed`: seed 001's bus messages and the feed's actors read back;
//! - `jam`: [`Jam`], an ingest queue made full for backpressure tests.

mod app;
mod config;
mod database;
mod feed;
mod hub_process;
mod jam;
mod kafka;
mod postgres;
mod raw_ws;
mod redis;
mod redis_cluster;
mod seed;
mod streams;
mod ws;

pub use app::*;
pub use config::*;
pub use database::*;
pub use feed::*;
pub use hub_process::*;
pub use kafka::*;
pub use postgres::*;
pub use raw_ws::*;
pub use redis::*;
pub use redis_cluster::*;
pub use seed::*;
pub use streams::*;
pub use ws::*;
