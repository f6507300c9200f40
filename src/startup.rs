//! Wiring: builds the actors, the pool and the HTTP server from a `Config`,
//! and stops them gracefully.
//!
//! `Application::build` binds first (port 0 in tests), so the caller knows
//! the port before serving. A graceful stop (SIGTERM/SIGINT or
//! [`Stopper::stop`]) stops accepting connections, commits every queued
//! event (answering their requests), closes every session with 1001, takes
//! its connections out of the cluster's per-user counts, then lets the
//! server finish.

use crate::auth::TokenKeys;
use crate::broker::presence::PresenceManager;
use crate::broker::redis::{RedisBroker, Target};
use crate::broker::{memory::InMemoryBroker, Broker, Inbound};
use crate::config::Config;
use crate::connections::address::TrustedProxies;
use crate::connections::cluster::ClusterCounts;
use crate::connections::{Connections, Limits};
use crate::db;
use crate::hub::Hub;
use crate::ingest::{self, Committer};
use crate::metrics::Metrics;
use crate::origin::{self, AllowedOrigins};
use crate::presence::{self, PresenceHub};
use crate::source::Sources;
use crate::state::{AppState, ConnFd};
use crate::stats::{self, StatsAggregator};
use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel lets sent data go unacknowledged before it drops a
/// connection: the backstop for clients that vanish or stop reading.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Application {
    port: u16,
    server: Server,
    stopper: Stopper,
}

/// Stops an [`Application`] gracefully; cheap to clone.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    state: web::Data<AppState>,
}

impl Application {
    /// Prepares the database, starts the actors and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        // A mistake in the mapping file stops the start before anything runs.
        let sources = Sources::prepare(&config)?;
        db::prepare(&config.database_url).await?;
        let pool = db::pool(&config.database_url, config.db_pool, config.db_timeout())?;
        let listener =
            TcpListener::bind(&config.bind).with_context(|| format!("binding {}", config.bind))?;
        let port = listener.local_addr()?.port();

        // Actors' addresses exist before the actors, so the broker and the
        // presence manager (which deliver to them) can be built first and
        // handed to everyone. One value is both.
        let hub_ctx = Context::<Hub>::new();
        let presence_ctx = Context::<PresenceHub>::new();
        let stats_ctx = Context::<StatsAggregator>::new();
        let instance = config.instance();
        let metrics = Arc::new(Metrics::new());
        let inbound = Inbound {
            hub: hub_ctx.address().recipient(),
            resync: hub_ctx.address().recipient(),
            presence: presence_ctx.address().recipient(),
            notices: stats_ctx.address().recipient(),
        };
        let cluster_nodes = config.cluster_nodes();
        let target = match &config.redis_url {
            _ if !cluster_nodes.is_empty() => Some(Target::Cluster(cluster_nodes)),
            Some(url) => Some(Target::Single(url.clone())),
            _ => None,
        };
        let (broker, replicas): (Arc<dyn Broker>, Arc<dyn PresenceManager>) = match &target {
            Some(target) => {
                let redis = Arc::new(RedisBroker::start(
                    target,
                    &config.redis_prefix,
                    &instance,
                    inbound,
                    metrics.clone(),
                )?);
                (redis.clone(), redis)
            }
            None => {
                let memory = Arc::new(InMemoryBroker::new(inbound.hub));
                (memory.clone(), memory)
            }
        };
        let aggregator = stats_ctx.run(StatsAggregator::new(
            pool.clone(),
            broker.clone(),
            stats::Settings {
                debounce: config.stats_debounce(),
                max_wait: config.stats_max_wait(),
                tick: config.stats_tick(),
                active_window: Duration::from_secs(config.active_window_secs),
            },
            metrics.clone(),
        ));
        let ingest = Committer::new(
            pool.clone(),
            broker.clone(),
            aggregator.clone().recipient(),
            metrics.clone(),
            ingest::Settings {
                queue_max: config.ingest_queue,
                batch_max: config.batch_max,
                retention: Duration::from_secs(config.retention_hours * 3600),
            },
        )
        .start();
        let hub = hub_ctx.run(Hub::new(
            broker.clone(),
            aggregator.clone().recipient(),
            metrics.clone(),
            Duration::from_millis(config.coalesce_ms),
            Duration::from_millis(config.reorder_ms),
        ));
        let presence = presence_ctx.run(PresenceHub::new(
            broker.clone(),
            replicas,
            aggregator.clone().recipient(),
            presence::Timers {
                grace: config.presence_grace(),
                idle: config.idle(),
                ttl: config.presence_ttl(),
            },
        ));

        // The per-user count lives in Redis when there is one: its own
        // connection (request/response with a short timeout on the
        // handshake's path, unlike the broker's queued writes).
        let cluster_counts = match &target {
            _ if config.max_connections_per_user == 0 => None,
            Some(Target::Single(url)) => Some(ClusterCounts::start(
                url,
                &config.redis_prefix,
                &instance,
                config.connection_ttl(),
            )?),
            Some(Target::Cluster(seeds)) => Some(ClusterCounts::start_on_cluster(
                seeds,
                &config.redis_prefix,
                &instance,
                config.connection_ttl(),
            )?),
            None => None,
        };
        let connections = Connections::new(
            Limits {
                total: config.max_connections,
                per_address: config.max_connections_per_address,
                per_user: config.max_connections_per_user,
            },
            cluster_counts,
            metrics.clone(),
        );
        let proxies = TrustedProxies::parse(&config.trusted_proxies).map_err(anyhow::Error::msg)?;

        let stopping = tokio::sync::watch::Sender::new(false);
        let sources = sources.start(
            &config,
            &instance,
            ingest.clone().recipient(),
            metrics.clone(),
            stopping.subscribe(),
        )?;
        let state = web::Data::new(AppState {
            instance,
            tokens: TokenKeys::new(config.jwt_secret().unwrap_or_default()),
            connections,
            proxies,
            ingest_key: config.ingest_key().unwrap_or_default().to_string(),
            pool,
            hub,
            presence,
            ingest,
            stats: aggregator,
            broker,
            metrics,
            sources,
            stopping,
            config: config.clone(),
        });
        let data = state.clone();
        let origins = web::Data::new(AllowedOrigins(config.allowed_origins.clone()));
        let send_buffer = config.socket_send_buffer;
        let server = HttpServer::new(move || {
            // The last `wrap` runs first: log, then refuse foreign origins,
            // then CORS for the allowed ones.
            App::new()
                .app_data(data.clone())
                .app_data(origins.clone())
                .wrap(origin::cors(&origins))
                .wrap(actix_web::middleware::from_fn(origin::guard))
                .wrap(actix_web::middleware::from_fn(
                    crate::telemetry::log_request,
                ))
                .configure(crate::routes::configure)
        })
        .on_connect(move |conn, ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                ext.insert(ConnFd(tcp.as_raw_fd()));
                tune_socket(tcp, send_buffer);
            }
        })
        .workers(if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.workers
        })
        // Slowloris: a connection that has not sent its request head in time
        // gets 408 and is closed (bodies: `routes::json_body`).
        .client_request_timeout(config.request_timeout())
        .disable_signals()
        .shutdown_timeout(config.shutdown_secs)
        .listen(listener)?
        .run();
        tracing::info!(
            port,
            instance = %state.instance,
            broker = state.broker.name(),
            "pulsehub listening on {}",
            config.bind
        );
        Ok(Application {
            port,
            stopper: Stopper {
                server: server.handle(),
                state,
            },
            server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests inspect the actors through it).
    pub fn state(&self) -> web::Data<AppState> {
        self.stopper.state.clone()
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves until stopped; SIGTERM and SIGINT stop gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stopper = self.stopper.clone();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: stopping gracefully");
            stopper.stop().await;
        });
        self.server.await
    }
}

impl Stopper {
    pub async fn stop(&self) {
        let state = &self.state;
        self.server.pause().await;
        state.stopping.send_replace(true);
        let limit = Duration::from_secs(state.config.shutdown_secs);
        let deadline = tokio::time::Instant::now() + limit;
        // The bus sources commit and acknowledge the batch in hand first.
        state.sources.stopped(limit).await;
        let (done, drained) = tokio::sync::oneshot::channel();
        state.ingest.do_send(ingest::Drain { done });
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::error!("ingest queue not drained in time");
        }
        let closed = state.hub.send(crate::hub::Shutdown).await.unwrap_or(0);
        tracing::info!(sessions = closed, "sessions closed with 1001");
        // Told to go elsewhere, the clients must find their slots free there.
        state.connections.forget_all(Duration::from_secs(2)).await;
        self.server.stop(true).await;
    }
}

/// Options of every accepted socket. Failures are ignored: each is an
/// optimisation or a backstop, and the connection works without it.
fn tune_socket(tcp: &actix_web::rt::net::TcpStream, send_buffer: usize) {
    // Frames are pushed as they come: do not hold small writes back.
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let _ = sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    // A fixed send buffer also turns off the kernel's autotuning, which
    // would let a stalled connection hold up to `tcp_wmem`'s maximum
    // (4 MiB here) on top of its outbox.
    if send_buffer > 0 {
        let _ = sock.set_send_buffer_size(send_buffer);
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
