//! What a cluster operator watches, as Prometheus text at `GET /metrics`.
//!
//! Counters and histograms are updated where things happen (sessions, hub,
//! aggregator, broker) through one shared [`Metrics`]; gauges that are a
//! state (sessions, subscriptions, broker up) are read when scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub sessions: Gauge,
    pub subscriptions: Gauge,
    pub broker_up: Gauge,
    pub connections_total: Counter,
    pub connections_refused: Counter,
    /// Refusals by the limit that refused (`crate::connections::Limit`).
    pub connections_refused_by: Family<LimitLabels, Counter>,
    /// Handshakes where Redis could not count the user, so this replica's
    /// count decided.
    pub connection_limit_fallbacks: Counter,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub frames_dropped: Counter,
    pub slow_consumers: Counter,
    /// Publishes held by the hub behind a hole in a channel's offsets.
    pub reorder_held: Counter,
    /// Reorder windows that ended with the hole still open.
    pub reorder_expired: Counter,
    /// Pages of a channel read from PostgreSQL because a session saw a
    /// hole in its live frames.
    pub gap_reads: Counter,
    pub broker_published: Counter,
    pub broker_received: Counter,
    pub broker_errors: Counter,
    pub broker_dropped: Counter,
    pub ingest_batch_events: Histogram,
    pub commit_seconds: Histogram,
    pub stats_query_seconds: Histogram,
    pub stages: Stages,
    pub source: SourceMetrics,
}

/// The stages of one event's way from ingest to a client's socket, each a
/// series of `pulsehub_stage_seconds{stage=…}`: where a latency tail comes
/// from. Fields are the family's histograms, looked up once.
pub struct Stages {
    /// `POST /api/events` (or a bus batch) arrived → queued for the commit:
    /// body read, JSON parsed, validated, through the committer's mailbox.
    pub receive: Histogram,
    /// Queued → taken into a group commit (per job).
    pub queue: Histogram,
    /// The group commit's statements (per commit).
    pub statements: Histogram,
    /// The rest of the transaction: BEGIN and COMMIT, i.e. the WAL flush.
    pub commit: Histogram,
    /// Redis: handed to the broker → its PUBLISH acknowledged (per channel
    /// per commit; includes Redis's own fan-out to the other replicas).
    pub publish: Histogram,
    /// Redis: published on one replica → received on another (wall clocks of
    /// the two replicas: meaningful on one machine or with synced clocks).
    pub relay: Histogram,
    /// Frames entering this replica's hub → handed to every local subscriber
    /// (the hub's mailbox wait and its loop; coalesced channels excluded).
    pub dispatch: Histogram,
    /// Handed to a session → written to its socket buffer (per session).
    pub write: Histogram,
}

/// Which connection limit refused a handshake.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// One stream (or topic) of a bus source: `source` is `redis_streams` or
/// `kafka`, `stream` the stream key or topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub source: String,
    pub stream: String,
}

/// A dead-lettered message's stream and why (`decode::Reason` codes).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub source: String,
    pub stream: String,
    pub reason: String,
}

/// What the bus sources (`crate::source`) report.
pub struct SourceMetrics {
    /// Messages handled and acknowledged upstream (stored, duplicate or
    /// dead-lettered).
    pub consumed: Family<StreamLabels, Counter>,
    pub duplicates: Family<StreamLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    /// Entries taken over from a consumer that stopped (`XAUTOCLAIM`).
    pub claimed: Family<StreamLabels, Counter>,
    /// Batches offered again because ingest answered `unavailable`.
    pub retries: Family<StreamLabels, Counter>,
    pub errors: Family<StreamLabels, Counter>,
    /// Entries not yet delivered to the group.
    pub lag: Family<StreamLabels, Gauge>,
    /// Entries delivered to the group's consumers and not yet acknowledged.
    pub pending: Family<StreamLabels, Gauge>,
    /// Kafka: partitions of the topic assigned to this replica.
    pub partitions: Family<StreamLabels, Gauge>,
    pub up: Family<StreamLabels, Gauge>,
    /// From a batch offered to ingest until its commit answered (queue wait
    /// and backpressure included).
    pub commit_seconds: Histogram,
}
impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("pulsehub");
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let seconds = |r: &mut Registry, name: &str, help: &str| {
            // 100 µs … ~3.3 s
            let h = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
            r.register(name, help, h.clone());
            h
        };
        Metrics {
            sessions: gauge(
                &mut r,
                "sessions",
                "WebSocket sessions open on this replica",
            ),
            subscriptions: gauge(
                &mut r,
                "subscriptions",
                "Channel subscriptions on this replica",
            ),
            broker_up: gauge(
                &mut r,
                "broker_up",
                "1 when the broker (Redis) is connected, 0 when down",
            ),
            connections_total: counter(&mut r, "connections", "WebSocket sessions started"),
            connections_refused: counter(
                &mut r,
                "connections_refused",
                "WebSocket upgrades refused by a connection limit (user, address or replica total)",
            ),
            connections_refused_by: {
                let f = Family::<LimitLabels, Counter>::default();
                r.register(
                    "connections_refused_by_limit",
                    "WebSocket upgrades refused, by limit: user (PULSEHUB_MAX_CONNECTIONS_PER_USER), address (PULSEHUB_MAX_CONNECTIONS_PER_ADDRESS), replica (PULSEHUB_MAX_CONNECTIONS)",
                    f.clone(),
                );
                f
            },
            connection_limit_fallbacks: counter(
                &mut r,
                "connection_limit_fallbacks",
                "Handshakes whose user was counted on this replica only because Redis could not answer",
            ),
            frames_in: counter(&mut r, "frames_in", "Frames received from clients"),
            frames_out: counter(
                &mut r,
                "frames_out",
                "Frames handed to sessions for their clients",
            ),
            frames_dropped: counter(
                &mut r,
                "frames_dropped",
                "Frames not delivered to a slow consumer",
            ),
            slow_consumers: counter(
                &mut r,
                "slow_consumers",
                "Connections closed as slow consumers",
            ),
            reorder_held: counter(
                &mut r,
                "reorder_held",
                "Publishes held behind a hole in a channel's offsets until it filled",
            ),
            reorder_expired: counter(
                &mut r,
                "reorder_expired",
                "Reorder windows that ended with a hole still open (sessions read it)",
            ),
            gap_reads: counter(
                &mut r,
                "gap_reads",
                "Pages read from PostgreSQL because a session saw a hole in live frames",
            ),
            broker_published: counter(
                &mut r,
                "broker_published",
                "Messages published to the broker",
            ),
            broker_received: counter(
                &mut r,
                "broker_received",
                "Messages received from the broker",
            ),
            broker_errors: counter(
                &mut r,
                "broker_errors",
                "Broker connection and command errors",
            ),
            broker_dropped: counter(
                &mut r,
                "broker_dropped",
                "Broker writes dropped (queue full or broker down)",
            ),
            ingest_batch_events: {
                let h = Histogram::new(exponential_buckets(1.0, 2.0, 14));
                r.register(
                    "ingest_batch_events",
                    "Events committed per group commit",
                    h.clone(),
                );
                h
            },
            commit_seconds: seconds(&mut r, "commit_seconds", "Duration of a group commit"),
            stats_query_seconds: seconds(
                &mut r,
                "stats_query_seconds",
                "Duration of a scope's stats query",
            ),
            stages: Stages::register(&mut r),
            source: SourceMetrics::register(&mut r),
            registry: r,
        }
    }

    /// Labels of one stream of a source.
    pub fn stream(source: &str, stream: &str) -> StreamLabels {
        StreamLabels {
            source: source.into(),
            stream: stream.into(),
        }
    }

    /// A handshake refused by `limit` (a `crate::connections::Limit` label).
    pub fn refused(&self, limit: &'static str) {
        self.connections_refused.inc();
        self.connections_refused_by
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Stages {
    fn register(r: &mut Registry) -> Self {
        // 10 µs … ~2.6 s in steps of √2: fine enough to read a p99 off.
        let stages = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00001, std::f64::consts::SQRT_2, 37))
        });
        r.register(
            "stage_seconds",
            "Time an event spends in each stage from ingest to a client's socket",
            stages.clone(),
        );
        let stage = |stage| stages.get_or_create_owned(&StageLabels { stage });
        Stages {
            receive: stage("receive"),
            queue: stage("queue"),
            statements: stage("statements"),
            commit: stage("commit"),
            publish: stage("publish"),
            relay: stage("relay"),
            dispatch: stage("dispatch"),
            write: stage("write"),
        }
    }
}

impl SourceMetrics {
    fn register(r: &mut Registry) -> Self {
        let counters = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<StreamLabels, Counter>::default();
            r.register(name, help, f.clone());
            f
        };
        let gauges = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<StreamLabels, Gauge>::default();
            r.register(name, help, f.clone());
            f
        };
        let dead_lettered = Family::<DeadLetterLabels, Counter>::default();
        r.register(
            "source_dead_lettered",
            "Bus messages refused and sent to the dead-letter stream, by reason",
            dead_lettered.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register(
            "source_commit_seconds",
            "From a bus batch offered to ingest until its commit answered",
            commit_seconds.clone(),
        );
        SourceMetrics {
            consumed: counters(r, "source_messages", "Bus messages handled and acknowledged upstream (stored, duplicate or dead-lettered)"),
            duplicates: counters(r, "source_duplicates", "Bus messages whose key was stored before (redeliveries): not stored again"),
            dead_lettered,
            claimed: counters(r, "source_claimed", "Pending entries taken over from a consumer that stopped"),
            retries: counters(r, "source_retries", "Bus batches offered again because ingest was unavailable (backpressure)"),
            errors: counters(r, "source_errors", "Bus connection and command errors"),
            lag: gauges(r, "source_lag", "Entries of the stream not yet delivered to the group"),
            pending: gauges(r, "source_pending", "Entries delivered to the group and not yet acknowledged"),
            partitions: gauges(r, "source_partitions", "Kafka partitions of the topic assigned to this replica"),
            up: gauges(r, "source_up", "1 when the source's stream is connected, 0 when down"),
            commit_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.frames_in.inc_by(3);
        m.commit_seconds.observe(0.002);
        m.stages.queue.observe(0.0003);
        let text = m.render();
        assert!(
            text.contains("pulsehub_stage_seconds_count{stage=\"queue\"} 1"),
            "{text}"
        );
        assert!(text.contains("pulsehub_stage_seconds_count{stage=\"relay\"} 0"));
        assert!(text.contains("pulsehub_frames_in_total 3"), "{text}");
        assert!(text.contains("# TYPE pulsehub_commit_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }
}
