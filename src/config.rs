//! Configuration: one `Config`, read from command-line flags and environment
//! variables (flags win). Every variable the hub reads is declared here and
//! nowhere else; the README's configuration table mirrors this file.
//!
//! Durations are plain fields (`*_ms`, `*_secs`) so tests can shorten them.

use clap::{Args, ValueEnum};
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where a new Redis Streams consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamStart {
    /// Entries added after the group is created (`$`).
    New,
    /// Every entry the stream holds (`0`).
    All,
}

/// Secrets used when the hub runs in demo mode and none were given.
pub const DEMO_JWT_SECRET: &str = "pulsehub-demo-secret-change-me";
/// See [`DEMO_JWT_SECRET`].
pub const DEMO_INGEST_KEY: &str = "pulsehub-demo-ingest-key";

/// Everything `pulsehub serve` needs. Its `Debug` masks secrets and the
/// passwords in URLs, so printing a `Config` never leaks them.
#[derive(Clone, Args)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "PULSEHUB_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// HTTP worker threads (0: one per CPU core).
    #[arg(long, env = "PULSEHUB_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// PostgreSQL URL. The database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/pulsehub"
    )]
    pub database_url: String,

    /// Database connection pool size.
    #[arg(long, env = "PULSEHUB_DB_POOL", default_value_t = 16)]
    pub db_pool: usize,

    /// Longest wait for a database connection (a free one from the pool, a
    /// new one, or the check of an idle one); past it the request is
    /// answered 503 `unavailable`. Keeps a PostgreSQL outage from holding
    /// requests and commits.
    #[arg(long, env = "PULSEHUB_DB_TIMEOUT_MS", default_value_t = 2000)]
    pub db_timeout_ms: u64,

    /// Redis URL for fan-out across replicas. Unset: single node, in-memory broker.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis Cluster seed nodes for fan-out (comma-separated
    /// `redis://host:port` URLs; one is enough, more survive a seed being
    /// down): channels go over sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`,
    /// Redis 7 or later). Set this or `REDIS_URL`, not both.
    #[arg(long, env = "PULSEHUB_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// Prefix of every Redis key and channel (replicas of one cluster share it).
    #[arg(long, env = "PULSEHUB_REDIS_PREFIX", default_value = "pulsehub")]
    pub redis_prefix: String,

    /// Seconds after which another replica's presence, unrefreshed, expires
    /// (its users leave). Refreshed every third of this.
    #[arg(long, env = "PULSEHUB_PRESENCE_TTL_SECS", default_value_t = 15)]
    pub presence_ttl_secs: u64,

    /// HS256 secret that signs browser tokens (JWT).
    #[arg(long, env = "PULSEHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Key that services present as `Authorization: Bearer <key>` to ingest.
    #[arg(long, env = "PULSEHUB_INGEST_KEY", hide_env_values = true)]
    pub ingest_key: Option<String>,

    /// Demo mode: built-in demo secrets when none are given. Never in production.
    #[arg(long, env = "PULSEHUB_DEMO", default_value_t = false)]
    pub demo: bool,

    /// This replica's name, shown in `welcome` (default: host name and pid).
    #[arg(long, env = "PULSEHUB_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Seconds between server pings; a connection silent for three intervals is closed.
    #[arg(long, env = "PULSEHUB_HEARTBEAT_SECS", default_value_t = 20)]
    pub heartbeat_secs: u64,

    /// Seconds without `activity` after which a present user becomes `idle`.
    #[arg(long, env = "PULSEHUB_IDLE_SECS", default_value_t = 300)]
    pub idle_secs: u64,

    /// Grace before a user's last session leaving is announced as `leave`.
    #[arg(long, env = "PULSEHUB_PRESENCE_GRACE_MS", default_value_t = 2000)]
    pub presence_grace_ms: u64,

    /// Stats of a scope are recomputed at most once per window (trailing edge).
    #[arg(long, env = "PULSEHUB_STATS_DEBOUNCE_MS", default_value_t = 250)]
    pub stats_debounce_ms: u64,

    /// A steadily changing scope still gets a snapshot at least this often.
    #[arg(long, env = "PULSEHUB_STATS_MAX_WAIT_MS", default_value_t = 1000)]
    pub stats_max_wait_ms: u64,

    /// How often watched scopes are recomputed so time windows slide.
    #[arg(long, env = "PULSEHUB_STATS_TICK_MS", default_value_t = 5000)]
    pub stats_tick_ms: u64,

    /// `active_subjects` counts subjects with an event in this many seconds.
    #[arg(long, env = "PULSEHUB_ACTIVE_WINDOW_SECS", default_value_t = 900)]
    pub active_window_secs: u64,

    /// Feed and notification history and idempotency keys are kept this many
    /// hours, then dropped by whole UTC day (so up to a day longer; keys by
    /// whole week).
    #[arg(long, env = "PULSEHUB_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u64,

    /// Items sent on subscribing to a recoverable channel without `since`.
    #[arg(long, env = "PULSEHUB_RECENT_ITEMS", default_value_t = 20)]
    pub recent_items: i64,

    /// Largest inbound WebSocket frame, bytes (larger: `too_large` error;
    /// over 16 times this: close 1009).
    #[arg(long, env = "PULSEHUB_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Sustained commands per second per connection.
    #[arg(long, env = "PULSEHUB_COMMAND_RATE", default_value_t = 20)]
    pub command_rate: u32,

    /// Command burst per connection.
    #[arg(long, env = "PULSEHUB_COMMAND_BURST", default_value_t = 50)]
    pub command_burst: u32,

    /// Rate-limited commands tolerated per minute before closing with 1008.
    #[arg(long, env = "PULSEHUB_ABUSE_LIMIT", default_value_t = 100)]
    pub abuse_limit: u32,

    /// Subscriptions per connection.
    #[arg(long, env = "PULSEHUB_MAX_SUBSCRIPTIONS", default_value_t = 128)]
    pub max_subscriptions: usize,

    /// Unsent frames after which a connection is a slow consumer (closed, 1008).
    #[arg(long, env = "PULSEHUB_OUTBOX_FRAMES", default_value_t = 1000)]
    pub outbox_frames: usize,

    /// Unsent bytes after which a connection is a slow consumer (closed, 1008).
    #[arg(long, env = "PULSEHUB_OUTBOX_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub outbox_bytes: usize,

    /// A channel published to again within this many milliseconds of its
    /// last delivery has its frames held and delivered together at the end
    /// of the window (fewer wake-ups and writes under load). 0: never held.
    #[arg(long, env = "PULSEHUB_COALESCE_MS", default_value_t = 0)]
    pub coalesce_ms: u64,

    /// Milliseconds a replica holds a feed's or user channel's frames that
    /// arrive past a hole in its offsets (typically its own commit before
    /// another replica's earlier one, relayed through Redis), so that they
    /// go out in order instead of every subscriber reading the hole from
    /// PostgreSQL. A hole still open at the window's end is left to the
    /// sessions, as with 0 (never held).
    #[arg(long, env = "PULSEHUB_REORDER_MS", default_value_t = 50)]
    pub reorder_ms: u64,

    /// Events waiting to be committed before ingest answers 503.
    #[arg(long, env = "PULSEHUB_INGEST_QUEUE", default_value_t = 100_000)]
    pub ingest_queue: usize,

    /// Most events committed in one transaction.
    #[arg(long, env = "PULSEHUB_BATCH_MAX", default_value_t = 5000)]
    pub batch_max: usize,

    /// Mapping file (TOML) saying how the messages of each bus topic or
    /// stream become events (README, "Consume your event bus"). Unset:
    /// every message must already be in the hub's event shape.
    #[arg(long, env = "PULSEHUB_MAPPING_FILE")]
    pub mapping_file: Option<String>,

    /// Redis Streams to consume (comma-separated stream keys). Empty: none.
    #[arg(long, env = "PULSEHUB_REDIS_STREAMS", value_delimiter = ',')]
    pub redis_streams: Vec<String>,

    /// Redis that holds the streams (default: `REDIS_URL`, the fan-out Redis).
    #[arg(long, env = "PULSEHUB_REDIS_STREAMS_URL")]
    pub redis_streams_url: Option<String>,

    /// Consumer group that all replicas share (created if missing).
    #[arg(long, env = "PULSEHUB_REDIS_STREAMS_GROUP", default_value = "pulsehub")]
    pub redis_streams_group: String,

    /// Entry field that holds the message as JSON; `*`: the entry's fields
    /// themselves are the message (values as strings).
    #[arg(long, env = "PULSEHUB_REDIS_STREAMS_FIELD", default_value = "data")]
    pub redis_streams_field: String,

    /// Where a group that pulsehub creates starts: `new` (entries added from
    /// then on) or `all` (the stream's whole history too).
    #[arg(long, env = "PULSEHUB_REDIS_STREAMS_START", value_enum, default_value_t = StreamStart::New)]
    pub redis_streams_start: StreamStart,

    /// Dead-letter stream of refused entries (`{stream}`: the stream's key).
    #[arg(
        long,
        env = "PULSEHUB_REDIS_STREAMS_DEAD_LETTER",
        default_value = "{stream}.dlq"
    )]
    pub redis_streams_dead_letter: String,

    /// Entries read (and committed together) at most per `XREADGROUP`
    /// (never more than `PULSEHUB_INGEST_QUEUE`).
    #[arg(long, env = "PULSEHUB_REDIS_STREAMS_BATCH", default_value_t = 500)]
    pub redis_streams_batch: usize,

    /// Entries delivered to a consumer and unacknowledged for this long (it
    /// died) are claimed by another (`XAUTOCLAIM`).
    #[arg(
        long,
        env = "PULSEHUB_REDIS_STREAMS_CLAIM_IDLE_MS",
        default_value_t = 30_000
    )]
    pub redis_streams_claim_idle_ms: u64,

    /// Kafka bootstrap servers (`host:port`, comma-separated). Unset: no Kafka.
    #[arg(long, env = "PULSEHUB_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Kafka topics to consume (comma-separated).
    #[arg(long, env = "PULSEHUB_KAFKA_TOPICS", value_delimiter = ',')]
    pub kafka_topics: Vec<String>,

    /// Consumer group that all replicas join.
    #[arg(long, env = "PULSEHUB_KAFKA_GROUP", default_value = "pulsehub")]
    pub kafka_group: String,

    /// Dead-letter topic of refused messages (`{topic}`: the topic's name).
    #[arg(
        long,
        env = "PULSEHUB_KAFKA_DEAD_LETTER_TOPIC",
        default_value = "{topic}.dlq"
    )]
    pub kafka_dead_letter_topic: String,

    /// Further librdkafka properties, `name=value` separated by newlines or
    /// `;` (e.g. `security.protocol=SASL_SSL;sasl.mechanism=PLAIN`), for
    /// the consumer and the dead-letter producer alike.
    #[arg(long, env = "PULSEHUB_KAFKA_PROPERTIES", default_value = "")]
    pub kafka_properties: String,

    /// Messages committed together at most (never more than
    /// `PULSEHUB_INGEST_QUEUE`).
    #[arg(long, env = "PULSEHUB_KAFKA_BATCH", default_value_t = 1000)]
    pub kafka_batch: usize,

    /// Browser origins allowed to open `/ws` and call the API (comma-separated,
    /// e.g. `https://app.example.com`; `*`: any). Listed origins also get CORS
    /// headers on the HTTP API. Empty: no Origin check and no CORS headers.
    #[arg(long, env = "PULSEHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// WebSocket connections one user may hold (0: no limit): in the whole
    /// cluster when `REDIS_URL` is set (counted in Redis), else on this
    /// replica. Over it the upgrade gets 429 `limit_reached`.
    #[arg(long, env = "PULSEHUB_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: usize,

    /// Seconds a replica's connection stays counted in Redis without being
    /// refreshed (refreshed every third of this): how long a replica that
    /// died keeps its users' slots.
    #[arg(long, env = "PULSEHUB_CONNECTION_TTL_SECS", default_value_t = 30)]
    pub connection_ttl_secs: u64,

    /// WebSocket connections this replica accepts in all (0: no limit); over
    /// it the upgrade gets 503 `unavailable` with `Retry-After`.
    #[arg(long, env = "PULSEHUB_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// WebSocket connections one client address may hold on this replica
    /// (0: no limit); over it the upgrade gets 429 `limit_reached`.
    #[arg(
        long,
        env = "PULSEHUB_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 0
    )]
    pub max_connections_per_address: usize,

    /// Proxies (IP addresses or CIDR blocks, comma-separated) whose
    /// `Forwarded` / `X-Forwarded-For` header names the client's address.
    /// Empty: the header is never trusted; the client is the TCP peer.
    #[arg(long, env = "PULSEHUB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// `SO_SNDBUF` of every accepted socket, in bytes (the kernel doubles
    /// it for its bookkeeping): the most a stalled connection holds in the
    /// kernel. 0: the kernel's default and autotuning (up to `tcp_wmem`).
    #[arg(long, env = "PULSEHUB_SOCKET_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub socket_send_buffer: usize,

    /// Seconds a client has to send a request's headers, and again its body;
    /// slower connections are closed (408).
    #[arg(long, env = "PULSEHUB_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Serve Prometheus metrics at `/metrics` (to anyone who can reach the port).
    #[arg(long, env = "PULSEHUB_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// Log format.
    #[arg(long, env = "PULSEHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Seconds a graceful stop waits for connections to close.
    #[arg(long, env = "PULSEHUB_SHUTDOWN_SECS", default_value_t = 10)]
    pub shutdown_secs: u64,
}

impl Config {
    /// The JWT secret in force: the configured one, or the demo one in demo mode.
    pub fn jwt_secret(&self) -> Option<&str> {
        non_empty(&self.jwt_secret).or(self.demo.then_some(DEMO_JWT_SECRET))
    }

    /// The ingest key in force: the configured one, or the demo one in demo mode.
    pub fn ingest_key(&self) -> Option<&str> {
        non_empty(&self.ingest_key).or(self.demo.then_some(DEMO_INGEST_KEY))
    }

    /// Checks what cannot be expressed as clap defaults.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt_secret().is_none() {
            return Err("PULSEHUB_JWT_SECRET is required (or run with --demo)".into());
        }
        if self.ingest_key().is_none() {
            return Err("PULSEHUB_INGEST_KEY is required (or run with --demo)".into());
        }
        if !self.demo {
            check_secret("PULSEHUB_JWT_SECRET", self.jwt_secret(), DEMO_JWT_SECRET)?;
            check_secret("PULSEHUB_INGEST_KEY", self.ingest_key(), DEMO_INGEST_KEY)?;
        }
        if self.heartbeat_secs == 0
            || self.command_rate == 0
            || self.command_burst == 0
            || self.request_timeout_secs == 0
            || self.db_timeout_ms == 0
        {
            return Err(
                "heartbeat, command rate, burst, request timeout and database timeout must be positive"
                    .into(),
            );
        }
        self.allowed_origins
            .iter()
            .try_for_each(|o| crate::origin::validate(o))?;
        self.validate_cluster()?;
        if self.connection_ttl_secs == 0 {
            return Err("PULSEHUB_CONNECTION_TTL_SECS must be positive".into());
        }
        crate::connections::address::TrustedProxies::parse(&self.trusted_proxies)?;
        self.validate_streams()?;
        self.validate_kafka()
    }

    /// The Redis Cluster seed nodes in force (blank and repeated ones dropped).
    pub fn cluster_nodes(&self) -> Vec<String> {
        distinct(&self.redis_cluster_nodes)
    }

    fn validate_cluster(&self) -> Result<(), String> {
        let nodes = self.cluster_nodes();
        if nodes.is_empty() {
            return Ok(());
        }
        if non_empty(&self.redis_url).is_some() {
            return Err(
                "set REDIS_URL (one Redis) or PULSEHUB_REDIS_CLUSTER_NODES (a Redis Cluster), not both"
                    .into(),
            );
        }
        if self.redis_prefix.contains('{') || self.redis_prefix.contains('}') {
            return Err(
                "PULSEHUB_REDIS_PREFIX must not contain '{' or '}' on a Redis Cluster (a hash tag would put every channel in one slot)"
                    .into(),
            );
        }
        match nodes.iter().find(|n| !n.starts_with("redis://")) {
            Some(n) => Err(format!(
                "PULSEHUB_REDIS_CLUSTER_NODES: '{}' is not a redis://host:port URL",
                redact_url(n)
            )),
            None => Ok(()),
        }
    }

    /// The Redis Streams in force (blank and repeated names dropped).
    pub fn streams(&self) -> Vec<String> {
        distinct(&self.redis_streams)
    }

    /// The Redis that holds the streams: its own URL, else `REDIS_URL`.
    pub fn streams_url(&self) -> Option<&str> {
        non_empty(&self.redis_streams_url).or(non_empty(&self.redis_url))
    }

    /// The dead-letter stream of `stream`.
    pub fn dead_letter_stream(&self, stream: &str) -> String {
        self.redis_streams_dead_letter.replace("{stream}", stream)
    }

    fn validate_streams(&self) -> Result<(), String> {
        let streams = self.streams();
        if streams.is_empty() {
            return Ok(());
        }
        if self.streams_url().is_none() {
            return Err(
                "PULSEHUB_REDIS_STREAMS needs PULSEHUB_REDIS_STREAMS_URL or REDIS_URL".into(),
            );
        }
        if self.redis_streams_batch == 0 || self.redis_streams_claim_idle_ms == 0 {
            return Err(
                "PULSEHUB_REDIS_STREAMS_BATCH and PULSEHUB_REDIS_STREAMS_CLAIM_IDLE_MS must be positive"
                    .into(),
            );
        }
        if self.redis_streams_field.trim().is_empty() || self.redis_streams_group.trim().is_empty()
        {
            return Err(
                "PULSEHUB_REDIS_STREAMS_FIELD and PULSEHUB_REDIS_STREAMS_GROUP must not be empty"
                    .into(),
            );
        }
        not_consumed(
            &streams,
            |s| self.dead_letter_stream(s),
            "stream",
            "PULSEHUB_REDIS_STREAMS_DEAD_LETTER",
        )
    }

    /// The Kafka topics in force (blank and repeated names dropped).
    pub fn kafka_topics(&self) -> Vec<String> {
        distinct(&self.kafka_topics)
    }

    /// The dead-letter topic of `topic`.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        self.kafka_dead_letter_topic.replace("{topic}", topic)
    }

    /// The librdkafka properties of `PULSEHUB_KAFKA_PROPERTIES`, in order.
    pub fn kafka_properties(&self) -> Result<Vec<(String, String)>, String> {
        self.kafka_properties
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!(
                    "PULSEHUB_KAFKA_PROPERTIES: '{p}' is not name=value"
                )),
            })
            .collect()
    }

    fn validate_kafka(&self) -> Result<(), String> {
        let topics = self.kafka_topics();
        let brokers = non_empty(&self.kafka_brokers);
        match (brokers, topics.is_empty()) {
            (None, true) => return Ok(()),
            (None, false) => {
                return Err("PULSEHUB_KAFKA_TOPICS needs PULSEHUB_KAFKA_BROKERS".into())
            }
            (Some(_), true) => {
                return Err("PULSEHUB_KAFKA_BROKERS needs PULSEHUB_KAFKA_TOPICS".into())
            }
            (Some(_), false) => {}
        }
        if self.kafka_batch == 0 || self.kafka_group.trim().is_empty() {
            return Err(
                "PULSEHUB_KAFKA_BATCH must be positive and PULSEHUB_KAFKA_GROUP not empty".into(),
            );
        }
        not_consumed(
            &topics,
            |t| self.dead_letter_topic(t),
            "topic",
            "PULSEHUB_KAFKA_DEAD_LETTER_TOPIC",
        )?;
        self.kafka_properties().map(drop)
    }

    /// This replica's name.
    pub fn instance(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "hub".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs.max(1))
    }
    pub fn connection_ttl(&self) -> Duration {
        Duration::from_secs(self.connection_ttl_secs.max(1))
    }
    pub fn presence_grace(&self) -> Duration {
        Duration::from_millis(self.presence_grace_ms)
    }
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }
    pub fn stats_debounce(&self) -> Duration {
        Duration::from_millis(self.stats_debounce_ms)
    }
    pub fn stats_max_wait(&self) -> Duration {
        Duration::from_millis(self.stats_max_wait_ms)
    }
    pub fn stats_tick(&self) -> Duration {
        Duration::from_millis(self.stats_tick_ms)
    }
}

/// Shortest secret accepted outside demo mode, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Outside demo mode a secret must not be the published demo value nor
/// guessably short. The message names the variable, never the value.
fn check_secret(name: &str, value: Option<&str>, demo: &str) -> Result<(), String> {
    let Some(value) = value else {
        return Err(format!("{name} is required (or run with --demo)"));
    };
    if value == demo {
        return Err(format!(
            "{name} is the built-in demo value, which is public; set a random secret \
             (e.g. `openssl rand -base64 32`) or run with --demo"
        ));
    }
    if value.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "{name} is shorter than {MIN_SECRET_BYTES} bytes; set a random secret \
             (e.g. `openssl rand -base64 32`) or run with --demo"
        ));
    }
    Ok(())
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field(
                "redis_cluster_nodes",
                &self
                    .redis_cluster_nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .field(
                "redis_streams_url",
                &self.redis_streams_url.as_deref().map(redact_url),
            )
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("ingest_key", &secret(&self.ingest_key))
            .field("demo", &self.demo)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// A URL with its password replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// Refuses a dead-letter stream or topic that is one of those consumed
/// (its refused messages would be consumed again).
fn not_consumed(
    names: &[String],
    dead_letter: impl Fn(&str) -> String,
    what: &str,
    variable: &str,
) -> Result<(), String> {
    for n in names {
        let dlq = dead_letter(n);
        if names.contains(&dlq) {
            return Err(format!(
                "the dead-letter {what} of '{n}' is '{dlq}', which is consumed too ({variable})"
            ));
        }
    }
    Ok(())
}

/// The names of a comma list, trimmed, without blanks and repeats.
fn distinct(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().map(|n| n.trim()) {
        if !n.is_empty() && !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Wrap::parse_from([
            "x",
            "--jwt-secret",
            "jwt-secret-value-123",
            "--ingest-key",
            "ingest-key-value-123",
            "--database-url",
            "postgres://u:pg-password@db/x",
            "--redis-url",
            "redis://:redis-password@r:6379",
        ])
        .config;
        let text = format!("{c:?}");
        for secret in [
            "jwt-secret-value-123",
            "ingest-key-value-123",
            "pg-password",
            "redis-password",
        ] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(text.contains("postgres://u:***@db/x"), "{text}");
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let c = Wrap::parse_from(["x", "--demo"]).config;
        assert_eq!(c.max_frame_bytes, 65536);
        assert_eq!((c.command_rate, c.command_burst), (20, 50));
        assert_eq!(c.max_subscriptions, 128);
        assert_eq!((c.outbox_frames, c.outbox_bytes), (1000, 4 << 20));
        assert_eq!(c.jwt_secret(), Some(DEMO_JWT_SECRET));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn secrets_are_required_outside_demo_mode() {
        let c = Wrap::parse_from(["x", "--jwt-secret", "", "--ingest-key", "k"]).config;
        assert!(c.validate().is_err());
    }

    #[test]
    fn demo_or_short_secrets_are_refused_outside_demo_mode() {
        let good = "0123456789abcdef";
        let cases = [
            (
                "demo jwt secret",
                DEMO_JWT_SECRET,
                good,
                "PULSEHUB_JWT_SECRET is the built-in demo value",
            ),
            (
                "demo ingest key",
                good,
                DEMO_INGEST_KEY,
                "PULSEHUB_INGEST_KEY is the built-in demo value",
            ),
            (
                "short jwt secret",
                "0123456789abcde",
                good,
                "PULSEHUB_JWT_SECRET is shorter than 16 bytes",
            ),
            (
                "short ingest key",
                good,
                "k3y",
                "PULSEHUB_INGEST_KEY is shorter than 16 bytes",
            ),
            (
                "blank jwt secret",
                "   ",
                good,
                "PULSEHUB_JWT_SECRET is required",
            ),
        ];
        for (name, jwt, key, expected) in cases {
            let c = Wrap::parse_from(["x", "--jwt-secret", jwt, "--ingest-key", key]).config;
            let err = c.validate().expect_err(name);
            assert!(err.starts_with(expected), "{name}: {err}");
            assert!(
                !err.contains(jwt) || jwt.trim().is_empty(),
                "{name}: secret in message"
            );
            assert!(!err.contains(key), "{name}: key in message");
        }
        let ok = Wrap::parse_from(["x", "--jwt-secret", good, "--ingest-key", good]).config;
        assert!(ok.validate().is_ok());
        // Demo mode accepts the demo values, given or built in.
        let demo = Wrap::parse_from(["x", "--demo", "--jwt-secret", DEMO_JWT_SECRET]).config;
        assert!(demo.validate().is_ok());
    }

    #[test]
    fn redis_cluster_settings_are_checked() {
        let parse = |args: &[&str]| {
            let mut all = vec!["x", "--demo"];
            all.extend_from_slice(args);
            Wrap::parse_from(all).config
        };
        let c = parse(&[
            "--redis-cluster-nodes",
            "redis://a:7000, redis://b:7001,,redis://a:7000",
        ]);
        assert_eq!(c.cluster_nodes(), ["redis://a:7000", "redis://b:7001"]);
        assert!(c.validate().is_ok());
        let refused = |args: &[&str], why: &str| {
            let e = parse(args).validate().unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        };
        refused(
            &[
                "--redis-cluster-nodes",
                "redis://a:7000",
                "--redis-url",
                "redis://r",
            ],
            "not both",
        );
        refused(
            &[
                "--redis-cluster-nodes",
                "redis://a:7000",
                "--redis-prefix",
                "{hub}",
            ],
            "must not contain",
        );
        refused(
            &["--redis-cluster-nodes", "a:7000"],
            "not a redis://host:port URL",
        );
        // The password of a node never reaches a message or a log.
        let e = parse(&["--redis-cluster-nodes", "http://u:secret-pw@a:7000"])
            .validate()
            .unwrap_err();
        assert!(!e.contains("secret-pw"), "{e}");
        let c = parse(&["--redis-cluster-nodes", "redis://:secret-pw@a:7000"]);
        assert!(!format!("{c:?}").contains("secret-pw"));
    }

    #[test]
    fn kafka_settings_are_checked_together() {
        let parse = |args: &[&str]| {
            let mut all = vec!["x", "--demo"];
            all.extend_from_slice(args);
            Wrap::parse_from(all).config
        };
        let c = parse(&["--kafka-brokers", "k:9092", "--kafka-topics", " a,b,a, "]);
        assert_eq!(c.kafka_topics(), ["a", "b"]);
        assert_eq!(c.dead_letter_topic("a"), "a.dlq");
        assert!(c.validate().is_ok());
        let errors = [
            (vec!["--kafka-topics", "a"], "PULSEHUB_KAFKA_TOPICS needs"),
            (
                vec!["--kafka-brokers", "k:9092"],
                "PULSEHUB_KAFKA_BROKERS needs",
            ),
            (
                vec!["--kafka-brokers", "k", "--kafka-topics", "a,a.dlq"],
                "the dead-letter topic of 'a'",
            ),
            (
                vec![
                    "--kafka-brokers",
                    "k",
                    "--kafka-topics",
                    "a",
                    "--kafka-properties",
                    "x",
                ],
                "PULSEHUB_KAFKA_PROPERTIES: 'x'",
            ),
        ];
        for (args, expected) in errors {
            let err = parse(&args).validate().expect_err(expected);
            assert!(err.starts_with(expected), "{err}");
        }
        let c = parse(&["--kafka-properties", "security.protocol = SSL;\n a=b=c ;"]);
        assert_eq!(
            c.kafka_properties().unwrap(),
            [
                ("security.protocol".to_string(), "SSL".to_string()),
                ("a".to_string(), "b=c".to_string())
            ]
        );
    }
}
