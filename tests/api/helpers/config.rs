//! How every test hub is set up: the test secrets, how long a test waits,
//! the configuration an in-process hub starts from, and free ports for the
//! processes a test starts (hubs, Redis, nginx).

use clap::Parser;
use pulsehub::config::Config;
use std::time::Duration;

pub const SECRET: &str = "test-secret-0123456789";
pub const INGEST_KEY: &str = "test-ingest-key-0123456789";
/// How long a test waits for a frame that must come.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    config: Config,
}

/// A hub configuration for tests: short timers, test secrets.
pub fn test_config() -> Config {
    let mut c = Wrap::parse_from(["test"]).config;
    c.bind = "127.0.0.1:0".into();
    c.jwt_secret = Some(SECRET.into());
    c.ingest_key = Some(INGEST_KEY.into());
    c.demo = false;
    c.instance_id = Some("hub-test".into());
    c.workers = 2;
    c.db_pool = 8;
    c.presence_grace_ms = 300;
    c.stats_debounce_ms = 50;
    c.stats_max_wait_ms = 200;
    c.stats_tick_ms = 1000;
    c.allowed_origins = vec![];
    c
}

/// A loopback port free right now, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
