//! What every HTTP handler and WebSocket session shares: the configuration,
//! the keys, the pool and the actors' addresses.
//!
//! Built once by [`crate::startup`] and handed to actix-web as
//! `web::Data<AppState>`; nothing in it is mutable except the `stopping`
//! signal and the connection counts (both internally synchronised).

use crate::auth::TokenKeys;
use crate::broker::Broker;
use crate::config::Config;
use crate::connections::address::TrustedProxies;
use crate::connections::Connections;
use crate::db::Pool;
use crate::hub::Hub;
use crate::ingest::Committer;
use crate::metrics::Metrics;
use crate::presence::PresenceHub;
use crate::source::Sources;
use crate::stats::StatsAggregator;
use actix::Addr;
use std::os::fd::RawFd;
use std::sync::Arc;

pub struct AppState {
    pub config: Config,
    pub instance: String,
    pub tokens: TokenKeys,
    /// Connection admission: the replica's, the addresses' and the users' counts.
    pub connections: Arc<Connections>,
    /// Whose forwarding headers name the client's address.
    pub proxies: TrustedProxies,
    pub ingest_key: String,
    pub pool: Pool,
    pub hub: Addr<Hub>,
    pub presence: Addr<PresenceHub>,
    pub ingest: Addr<Committer>,
    pub stats: Addr<StatsAggregator>,
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<Metrics>,
    /// The bus consumers (their health for `/ready`).
    pub sources: Sources,
    /// Becomes `true` when a graceful stop begins: long-polls answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

/// The raw descriptor of a connection's socket (set in `on_connect`).
#[derive(Clone, Copy)]
pub struct ConnFd(pub RawFd);
