//! `pulsehub-loadtest`: the command line over the scenarios.
//!
//! ```text
//! pulsehub-loadtest [--url URL,...] [--json FILE] [--check] <SCENARIO> [options]
//! ```
//! Exit codes: 0 done, 1 the run could not be carried out, 2 `--check` saw
//! loss, duplication, disorder or failures.

use clap::{Args, Parser, Subcommand};
use pulsehub_loadtest::kafka::KafkaOut;
use pulsehub_loadtest::publisher::Via;
use pulsehub_loadtest::report::Report;
use pulsehub_loadtest::scenarios::{abuse, connect, fanout, idle, ingest, presence, reconnect};
use pulsehub_loadtest::target::{loopback_sources, Target, DEMO_INGEST_KEY, DEMO_JWT_SECRET};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pulsehub-loadtest",
    version,
    about = "Load generator for pulsehub (loopback targets only)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args)]
struct Global {
    /// Hub URLs, round robin (comma-separated or repeated).
    #[arg(
        long = "url",
        global = true,
        env = "PULSEHUB_LOADTEST_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    urls: Vec<String>,
    /// HS256 secret to mint browser tokens with.
    #[arg(long, global = true, env = "PULSEHUB_JWT_SECRET", hide_env_values = true, default_value = DEMO_JWT_SECRET)]
    jwt_secret: String,
    /// Ingest key for `POST /api/events`.
    #[arg(long, global = true, env = "PULSEHUB_INGEST_KEY", hide_env_values = true, default_value = DEMO_INGEST_KEY)]
    ingest_key: String,
    /// Local source addresses (127.x.y.z), round robin; each gives ~28,000
    /// ports. Default: the kernel's choice, or 127.0.0.1.. when the
    /// connections need more than one address.
    #[arg(long, global = true, value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    /// Exit with 2 on loss, duplication, disorder or failed connections.
    #[arg(long, global = true)]
    check: bool,
    /// No progress bar.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, global = true, default_value_t = 900)]
    max_seconds: u64,
    /// Limit for one connect + handshake + welcome, in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    handshake_timeout: f64,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open C connections; connect-to-welcome latency and rate.
    Connect {
        #[arg(short = 'c', long, default_value_t = 1000)]
        connections: usize,
        /// Handshakes in flight at most.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Connections started per second (0: as fast as allowed).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Seconds to hold them open.
        #[arg(long, default_value_t = 1.0)]
        hold: f64,
    },
    /// C subscribers, a publisher at E events/s; loss, order, latency.
    Fanout {
        #[command(flatten)]
        run: FanoutArgs,
    },
    /// `fanout` through Kafka: the events are produced to a topic the hubs
    /// consume (start them with PULSEHUB_KAFKA_BROKERS and
    /// PULSEHUB_KAFKA_TOPICS=<topic>; no mapping: the messages are in the
    /// hub's event shape); latency is Kafka produce → WebSocket delivery.
    Bus {
        #[command(flatten)]
        run: FanoutArgs,
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        kafka: String,
        /// The topic (created with 3 partitions when missing).
        #[arg(long, default_value = "pulsehub.loadtest")]
        topic: String,
    },
    /// Clients join and leave at a rate; time until every replica agrees.
    Presence {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Joins (and leaves) per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        poll_ms: u64,
        /// Seconds to wait for agreement.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Hold C idle connections; the hub's memory per connection.
    Idle {
        #[arg(short = 'c', long, default_value_t = 1000)]
        connections: usize,
        #[command(flatten)]
        hubs: HubPids,
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Subscribe each connection to one feed.
        #[arg(long)]
        subscribe: bool,
        /// Seconds between connecting and measuring.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// Seconds to hold.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Seconds after leaving before the last measurement.
        #[arg(long, default_value_t = 5.0)]
        after: f64,
    },
    /// Kill (and restart) a replica under load; time to live again, loss.
    Reconnect {
        #[arg(short = 'c', long, default_value_t = 1000)]
        connections: usize,
        #[arg(short = 'e', long, default_value_t = 200.0)]
        rate: f64,
        #[arg(short = 'd', long, default_value_t = 20.0)]
        duration: f64,
        /// Seconds after publishing starts.
        #[arg(long, default_value_t = 5.0)]
        disrupt_after: f64,
        /// Process to signal.
        #[arg(long)]
        kill_pid: Option<u32>,
        /// KILL or TERM.
        #[arg(long, default_value = "KILL")]
        signal: String,
        /// Shell command that disrupts instead of --kill-pid.
        #[arg(long)]
        kill_cmd: Option<String>,
        /// Shell command started after the disruption (e.g. the hub again);
        /// stopped with SIGTERM when the scenario ends.
        #[arg(long)]
        restart_cmd: Option<String>,
        #[arg(long, default_value_t = 0.0)]
        restart_delay: f64,
        #[arg(long, default_value_t = 30.0)]
        drain: f64,
        #[arg(long, default_value_t = 200)]
        connect_concurrency: usize,
    },
    /// Batches posted back to back; committed events per second.
    Ingest {
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Events in all.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Stop after this many seconds at most.
        #[arg(short = 'd', long, default_value_t = 30.0)]
        duration: f64,
        #[arg(long, default_value_t = 1)]
        scopes: usize,
        /// Give every event an idempotency key (the hub then claims keys in
        /// each commit, as it does for every bus message).
        #[arg(long)]
        keys: bool,
    },
    /// Hostile clients (slowloris, over the per-user limit, never reading,
    /// floods) while W subscribers read a feed; loss, hub memory.
    Abuse {
        /// Well-behaved subscribers.
        #[arg(short = 'c', long, default_value_t = 200)]
        subscribers: usize,
        /// Slowloris connections trickling a request head at once.
        #[arg(long, default_value_t = 500)]
        slowloris: usize,
        /// Connections one user tries to hold with the same token.
        #[arg(long, default_value_t = 100)]
        over_limit: usize,
        /// Subscribers that never read their socket.
        #[arg(long, default_value_t = 50)]
        never_reading: usize,
        /// Clients flooding malformed, oversized and too many frames.
        #[arg(long, default_value_t = 50)]
        flooders: usize,
        /// Events per second during the attack.
        #[arg(short = 'e', long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds the attack (and the publishing) lasts.
        #[arg(short = 'd', long, default_value_t = 30.0)]
        duration: f64,
        /// The hub's PULSEHUB_REQUEST_TIMEOUT_SECS: a slowloris connection
        /// open for twice this plus 5 s was never closed by the hub.
        #[arg(long, default_value_t = 10.0)]
        request_timeout: f64,
        /// Milliseconds between a slowloris connection's bytes.
        #[arg(long, default_value_t = 100)]
        trickle_ms: u64,
        /// SO_RCVBUF of the never-reading subscribers, in bytes.
        #[arg(long, default_value_t = 4096)]
        recv_buffer: u32,
        #[command(flatten)]
        pacing: Pacing,
        #[command(flatten)]
        swarm: SwarmArgs,
        /// Seconds at most to wait for the hub's memory to settle afterwards.
        #[arg(long, default_value_t = 15.0)]
        settle: f64,
        #[command(flatten)]
        hubs: HubPids,
    },
}

/// The options of `fanout` (and `bus`).
#[derive(Args)]
struct FanoutArgs {
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Spread subscribers over this many scopes.
    #[arg(long, default_value_t = 1)]
    scopes: usize,
    /// Events per second (all scopes).
    #[arg(short = 'e', long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    #[command(flatten)]
    pacing: Pacing,
    #[command(flatten)]
    swarm: SwarmArgs,
    #[command(flatten)]
    hubs: HubPids,
}

impl FanoutArgs {
    fn opts(self, via: Via, progress: bool) -> fanout::FanoutOpts {
        fanout::FanoutOpts {
            connections: self.connections,
            scopes: self.scopes,
            rate: self.rate,
            duration: secs(self.duration),
            tick: self.pacing.tick(),
            inflight: self.pacing.inflight,
            connect_concurrency: self.swarm.connect_concurrency,
            drain: secs(self.swarm.drain),
            hub_pids: self.hubs.pids,
            progress,
            via,
        }
    }
}

/// How the publisher paces its ingest requests (`fanout`, `abuse`).
#[derive(Args)]
struct Pacing {
    /// Milliseconds between ingest requests (each carries the events due).
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Ingest requests in flight at most.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
}

impl Pacing {
    fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(1))
    }
}

/// The subscribers reading the feed that is published to (`fanout`,
/// `abuse`; `reconnect` waits longer for its stragglers).
#[derive(Args)]
struct SwarmArgs {
    /// Subscriber handshakes in flight at most.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds to wait for stragglers once publishing (or the attack) ended.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

/// The hub processes to measure (`fanout`: CPU time; `idle`, `abuse`: memory).
#[derive(Args)]
struct HubPids {
    /// The hub's pid (comma-separated for several replicas): its CPU time
    /// (fanout) or VmRSS (idle, abuse).
    #[arg(long = "hub-pid", value_name = "PID", value_delimiter = ',')]
    pids: Vec<u32>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

/// Raises the soft descriptor limit to the hard one (10,000 connections
/// need 10,000 descriptors).
fn raise_fd_limit() {
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn connections_of(s: &Scenario) -> usize {
    match s {
        Scenario::Connect { connections, .. }
        | Scenario::Fanout {
            run: FanoutArgs { connections, .. },
        }
        | Scenario::Bus {
            run: FanoutArgs { connections, .. },
            ..
        }
        | Scenario::Idle { connections, .. }
        | Scenario::Reconnect { connections, .. } => *connections,
        Scenario::Presence { clients, .. } => *clients,
        Scenario::Ingest { .. } => 0,
        Scenario::Abuse {
            subscribers,
            slowloris,
            over_limit,
            never_reading,
            flooders,
            ..
        } => subscribers + slowloris + over_limit + never_reading + flooders,
    }
}

async fn run(cli: Cli) -> anyhow::Result<Report> {
    let g = &cli.global;
    let progress = !g.no_progress;
    let mut sources = g.source_addrs.clone();
    let per_address = 25_000;
    let needed = connections_of(&cli.scenario).div_ceil(per_address);
    if sources.is_empty() && needed > 1 {
        sources = loopback_sources(needed);
    }
    let mut target = Target::new(&g.urls, &g.jwt_secret, &g.ingest_key)?.with_sources(sources)?;
    target.handshake_timeout = secs(g.handshake_timeout);
    let target = Arc::new(target);
    Ok(match cli.scenario {
        Scenario::Connect {
            connections,
            concurrency,
            rate,
            hold,
        } => {
            let opts = connect::ConnectOpts {
                connections,
                concurrency,
                rate,
                hold: secs(hold),
                progress,
                ..Default::default()
            };
            Report::Connect(connect::run(target, &opts).await?)
        }
        Scenario::Fanout { run } => {
            Report::Fanout(fanout::run(target, &run.opts(Via::Http, progress)).await?)
        }
        Scenario::Bus { run, kafka, topic } => {
            let via = Via::Kafka(KafkaOut::new(&kafka, &topic).await?);
            Report::Fanout(fanout::run(target, &run.opts(via, progress)).await?)
        }
        Scenario::Presence {
            clients,
            rounds,
            rate,
            poll_ms,
            timeout,
        } => {
            let opts = presence::PresenceOpts {
                clients,
                rounds,
                rate,
                poll: Duration::from_millis(poll_ms.max(1)),
                timeout: secs(timeout),
                progress,
            };
            Report::Presence(presence::run(target, &opts).await?)
        }
        Scenario::Idle {
            connections,
            hubs,
            concurrency,
            subscribe,
            settle,
            hold,
            after,
        } => {
            let opts = idle::IdleOpts {
                connections,
                hub_pids: hubs.pids,
                concurrency,
                subscribe,
                settle: secs(settle),
                hold: secs(hold),
                after: secs(after),
                progress,
            };
            Report::Idle(idle::run(target, &opts).await?)
        }
        Scenario::Reconnect {
            connections,
            rate,
            duration,
            disrupt_after,
            kill_pid,
            signal,
            kill_cmd,
            restart_cmd,
            restart_delay,
            drain,
            connect_concurrency,
        } => {
            let signal = match signal.to_ascii_uppercase().trim_start_matches("SIG") {
                "KILL" | "9" => libc::SIGKILL,
                "TERM" | "15" => libc::SIGTERM,
                other => anyhow::bail!("--signal {other}: use KILL or TERM"),
            };
            let opts = reconnect::ReconnectOpts {
                connections,
                rate,
                duration: secs(duration),
                disrupt_after: secs(disrupt_after),
                kill_pid,
                signal,
                kill_cmd,
                restart_cmd,
                restart_delay: secs(restart_delay),
                drain: secs(drain),
                connect_concurrency,
                progress,
                ..Default::default()
            };
            Report::Reconnect(reconnect::run(target, &opts).await?)
        }
        Scenario::Ingest {
            parallel,
            batch,
            events,
            duration,
            scopes,
            keys,
        } => {
            let opts = ingest::IngestOpts {
                parallel,
                batch,
                events,
                duration: secs(duration),
                scopes,
                keys,
                progress,
            };
            Report::Ingest(ingest::run(target, &opts).await?)
        }
        Scenario::Abuse {
            subscribers,
            slowloris,
            over_limit,
            never_reading,
            flooders,
            rate,
            duration,
            request_timeout,
            trickle_ms,
            recv_buffer,
            pacing,
            swarm,
            settle,
            hubs,
        } => {
            let opts = abuse::AbuseOpts {
                subscribers,
                slowloris,
                over_limit,
                never_reading,
                flooders,
                rate,
                duration: secs(duration),
                tick: pacing.tick(),
                inflight: pacing.inflight,
                connect_concurrency: swarm.connect_concurrency,
                request_timeout: secs(request_timeout),
                trickle: Duration::from_millis(trickle_ms.max(1)),
                recv_buffer,
                drain: secs(swarm.drain),
                settle: secs(settle),
                hub_pids: hubs.pids,
                progress,
            };
            Report::Abuse(Box::new(abuse::run(target, &opts).await?))
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    let json = cli.global.json.clone();
    let check = cli.global.check;
    let limit = Duration::from_secs(cli.global.max_seconds);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pulsehub-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async move {
        match tokio::time::timeout(limit, run(cli)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "gave up after --max-seconds {}",
                limit.as_secs()
            )),
        }
    });
    // Whatever is still running (clients, a restarted hub) ends with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pulsehub-loadtest: {e:#}");
            return ExitCode::from(1);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
        if let Err(e) = std::fs::write(&path, report.json() + "\n") {
            eprintln!("pulsehub-loadtest: writing {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let problems = report.problems();
    if check {
        if problems.is_empty() {
            println!("check              passed");
        } else {
            for p in &problems {
                println!("check FAILED       {p}");
            }
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
