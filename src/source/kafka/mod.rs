//! Kafka source: consumes `PULSEHUB_KAFKA_TOPICS` in one consumer group
//! that every replica joins (librdkafka through `rdkafka`, cooperative
//! rebalancing), with the guarantees of `POST /api/events`.
//!
//! Contract:
//! - One task per replica reads the assigned partitions and handles one
//!   batch after the other (the messages already fetched, up to
//!   `PULSEHUB_KAFKA_BATCH`), so a partition's messages reach the feed in
//!   partition order. A partition is read by one replica at a time;
//!   rebalances happen between batches.
//! - A message's offset is stored for commit only after its event is
//!   committed to PostgreSQL (stored, or a duplicate of a key stored
//!   before) or after it was dead-lettered; librdkafka commits stored
//!   offsets every second, on a revoke and on close. A message's key
//!   defaults to `kafka:{topic}:{partition}:{offset}`, so a redelivery
//!   (after a crash or a rebalance) is a duplicate: never stored or
//!   counted twice.
//! - When ingest answers `unavailable` (queue full, database down) the
//!   assigned partitions are paused, the same batch is offered again after
//!   a pause, and they resume once it is committed: nothing dropped,
//!   nothing buffered beyond librdkafka's bounded prefetch.
//! - A bad message (no payload, too large, not JSON, not mappable,
//!   invalid) is produced to its dead-letter topic
//!   (`PULSEHUB_KAFKA_DEAD_LETTER_TOPIC`) with its key, payload and headers
//!   and `dlq_reason`, `dlq_error`, `dlq_topic`, `dlq_partition`,
//!   `dlq_offset`, `dlq_group` headers (without its value, and a
//!   `dlq_value_omitted` header with the size, when the dead-letter topic
//!   refuses it as too large), counted and logged once. Its offset
//!   is stored only once the dead letter is acknowledged: while the
//!   dead-letter topic cannot be written, the batch is held (and retried).
//! - `/ready` names a topic whose brokers cannot be reached or that does
//!   not exist; the lag of the assigned partitions is a gauge.
//! - A graceful stop finishes the batch in hand, then leaves the group
//!   (committing what is stored), so another replica takes over at once.

mod dead_letter;
mod probe;

use super::batch::{commit_messages, Fate, Shared};
use super::decode::{Reason, Refusal, MAX_MESSAGE_BYTES};
use crate::config::Config;
use crate::events::NewEvent;
use crate::metrics::{Metrics, StreamLabels};
use chrono::Utc;
use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The `source` label and `/ready` component prefix.
pub const NAME: &str = "kafka";
/// A dead letter gives up after this (and is produced again).
const TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause before a held batch is offered again.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long the stop waits for the consumer to leave the group: what is
/// left of the stop deadline is the ingest drain's.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// What the consumer needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// This replica's name (the Kafka `client.id`).
    pub client_id: String,
    /// Dead-letter topic per topic.
    pub dead_letters: HashMap<String, String>,
    /// `PULSEHUB_KAFKA_PROPERTIES`, applied last.
    pub properties: Vec<(String, String)>,
    pub batch: usize,
}

impl Settings {
    /// `None` when Kafka is not configured (checked by `Config::validate`).
    pub fn from_config(config: &Config, instance: &str) -> Option<Settings> {
        let brokers = config.kafka_brokers.as_deref()?.trim();
        let topics = config.kafka_topics();
        if brokers.is_empty() || topics.is_empty() {
            return None;
        }
        Some(Settings {
            brokers: brokers.to_string(),
            dead_letters: topics
                .iter()
                .map(|t| (t.clone(), config.dead_letter_topic(t)))
                .collect(),
            topics,
            group: config.kafka_group.clone(),
            client_id: instance.to_string(),
            properties: config.kafka_properties().unwrap_or_default(),
            // A batch larger than the ingest queue could never be taken.
            batch: config.kafka_batch.min(config.ingest_queue).max(1),
        })
    }

    /// The consumer's librdkafka configuration: offsets stored by the hub
    /// and committed by librdkafka; the operator's properties last.
    fn consumer(&self) -> ClientConfig {
        let mut c = self.common();
        c.set("group.id", &self.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "latest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A replica that dies loses its partitions after this, not 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        self.apply_properties(c)
    }

    /// The dead-letter producer's configuration: the operator's
    /// properties but the consumer's own (librdkafka warns about those).
    fn producer(&self) -> ClientConfig {
        let mut c = self.common();
        c.set("message.timeout.ms", TIMEOUT.as_millis().to_string())
            // Room for a refused message as large as the hub takes, and
            // its headers; the brokers' own limit may still be lower.
            .set("message.max.bytes", (2 * MAX_MESSAGE_BYTES).to_string());
        for (k, v) in self.properties.iter().filter(|(k, _)| !consumer_only(k)) {
            c.set(k, v);
        }
        c
    }

    fn common(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        c
    }

    fn apply_properties(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Properties librdkafka knows for consumers only.
fn consumer_only(name: &str) -> bool {
    const NAMES: [&str; 9] = [
        "auto.offset.reset",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "partition.assignment.strategy",
        "isolation.level",
    ];
    NAMES.contains(&name)
        || ["fetch.", "group.", "queued.", "allow.auto.create.topics"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Starts the replica's consumer (on the current actix runtime) and its
/// health and lag probe.
pub fn start(settings: Settings, shared: Shared) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let shared = Arc::new(shared);
    let components: Vec<String> = settings
        .topics
        .iter()
        .map(|t| format!("{NAME}:{t}"))
        .collect();
    for c in &components {
        shared.health.register(c);
    }
    let labels: HashMap<String, StreamLabels> = settings
        .topics
        .iter()
        .map(|t| (t.clone(), Metrics::stream(NAME, t)))
        .collect();
    let context = Context {
        shared: shared.clone(),
        components,
        labels: labels.values().cloned().collect(),
    };
    let consumer: StreamConsumer<Context> = settings
        .consumer()
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!("Kafka consumer: {e}"))?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| anyhow::anyhow!("Kafka subscribe {topics:?}: {e}"))?;
    let producer: FutureProducer = settings
        .producer()
        .create()
        .map_err(|e| anyhow::anyhow!("Kafka dead-letter producer: {e}"))?;
    tracing::info!(
        brokers = %settings.brokers,
        topics = ?settings.topics,
        group = %settings.group,
        "consuming kafka topics"
    );
    let consumer = Arc::new(consumer);
    let settings = Arc::new(settings);
    let probe = actix::spawn(probe::run(
        consumer.clone(),
        NAME,
        settings.topics.clone(),
        shared.clone(),
    ));
    let worker = Worker {
        settings,
        shared,
        producer,
        labels,
    };
    let run = actix::spawn(async move {
        worker.run(&consumer).await;
        // The probe ends on the stop signal too; then leaving the group
        // (it commits what is stored) blocks, so on a thread of its own:
        // with the brokers gone it may outlast the stop deadline, and a
        // detached thread does not hold the process's exit up.
        let _ = probe.await;
        let (closed, done) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        match tokio::time::timeout(CLOSE_WAIT, done).await {
            Ok(_) => tracing::info!("kafka consumer stopped"),
            Err(_) => tracing::warn!(
                "kafka consumer not closed in time (brokers gone?); stopping without it"
            ),
        }
    });
    Ok(vec![run])
}

/// librdkafka's callbacks: errors turn the topics' health down.
struct Context {
    shared: Arc<Shared>,
    components: Vec<String>,
    labels: Vec<StreamLabels>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reconnects by itself and logs each failure (target
        // `librdkafka`); here they are counted, and all brokers gone says
        // why nothing flows.
        for l in &self.labels {
            self.shared.metrics.source.errors.get_or_create(l).inc();
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            tracing::warn!(reason, "kafka: all brokers are down");
            for c in &self.components {
                self.shared.health.down(c, reason);
            }
        } else {
            tracing::debug!(%error, reason, "kafka");
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %list(tpl), "kafka partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %list(tpl), "kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }
}

struct Worker {
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    producer: FutureProducer,
    labels: HashMap<String, StreamLabels>,
}

impl Worker {
    async fn run(&self, consumer: &StreamConsumer<Context>) {
        let mut stop = self.shared.stopping.clone();
        loop {
            let first = tokio::select! {
                m = consumer.recv() => m,
                _ = stop.wait_for(|s| *s) => return,
            };
            let mut batch = match first {
                Ok(m) => vec![m],
                Err(e) => {
                    // Fetch errors are per partition and retried by librdkafka.
                    tracing::warn!(error = %e, "kafka: receiving");
                    if self.pause(BACKOFF_MIN).await {
                        return;
                    }
                    continue;
                }
            };
            // What is fetched already joins the batch; nothing waits for more.
            while batch.len() < self.settings.batch {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka: receiving");
                        break;
                    }
                    None => break,
                }
            }
            if !self.handle(consumer, &batch).await {
                // Stopping with the batch unacknowledged: its offsets are
                // not stored, so the next owner reads it again.
                return;
            }
        }
    }

    /// Commits one batch, dead-letters what was refused and stores the
    /// offsets; `false` when the hub stops first.
    async fn handle(
        &self,
        consumer: &StreamConsumer<Context>,
        batch: &[BorrowedMessage<'_>],
    ) -> bool {
        let now = Utc::now();
        let decoded: Vec<Result<NewEvent, Refusal>> =
            batch.iter().map(|m| self.decode(m, now)).collect();
        let started = std::time::Instant::now();
        let Some(fates) = self.commit(consumer, &decoded).await else {
            return false;
        };
        if decoded.iter().any(Result::is_ok) {
            self.shared
                .metrics
                .source
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let refused: Vec<(&BorrowedMessage<'_>, &Refusal)> = batch
            .iter()
            .zip(&fates)
            .filter_map(|(m, f)| match f {
                Fate::Refused(r) => Some((m, *r)),
                _ => None,
            })
            .collect();
        if !self.dead_letter(&refused).await {
            return false;
        }

        // The next offset to read, per partition: the batch is in order.
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            next.insert((m.topic(), m.partition()), m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            // Infallible for an offset (only `Offset::Invalid` could fail).
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its new owner reads the batch
            // again, and finds duplicates.
            tracing::info!(error = %e, "kafka: offsets not stored");
        }

        // Counted per topic, once per batch: a metric family is a locked map.
        let mut counts: HashMap<&str, (u64, u64)> = HashMap::new();
        for (msg, fate) in batch.iter().zip(&fates) {
            let (consumed, duplicates) = counts.entry(msg.topic()).or_default();
            *consumed += 1;
            *duplicates += u64::from(matches!(fate, Fate::Duplicate));
        }
        let m = &self.shared.metrics.source;
        for (topic, (consumed, duplicates)) in counts {
            if let Some(labels) = self.labels.get(topic) {
                m.consumed.get_or_create(labels).inc_by(consumed);
                m.duplicates.get_or_create(labels).inc_by(duplicates);
            }
        }
        true
    }

    /// Offers the batch to ingest until it is committed, the partitions
    /// paused meanwhile; `None` when the hub stops first.
    async fn commit<'a>(
        &self,
        consumer: &StreamConsumer<Context>,
        decoded: &'a [Result<NewEvent, Refusal>],
    ) -> Option<Vec<Fate<'a>>> {
        let mut wait = BACKOFF_MIN;
        let mut paused: Option<TopicPartitionList> = None;
        let outcome = loop {
            match commit_messages(&self.shared.ingest, decoded).await {
                Ok(fates) => break Some(fates),
                Err(e) => {
                    for l in self.labels.values() {
                        self.shared.metrics.source.retries.get_or_create(l).inc();
                    }
                    if paused.is_none() {
                        tracing::warn!(error = %e, "ingest unavailable: pausing the kafka partitions and retrying");
                        paused = consumer.assignment().ok();
                        if let Some(tpl) = &paused {
                            let _ = consumer.pause(tpl);
                        }
                    }
                    if self.pause(wait).await {
                        break None;
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        };
        if let Some(tpl) = &paused {
            let _ = consumer.resume(tpl);
        }
        outcome
    }

    fn decode(
        &self,
        m: &BorrowedMessage<'_>,
        now: chrono::DateTime<Utc>,
    ) -> Result<NewEvent, Refusal> {
        let key = || format!("kafka:{}:{}:{}", m.topic(), m.partition(), m.offset());
        match m.payload() {
            Some(payload) => self.shared.decoder.decode(m.topic(), payload, key, now),
            None => Err(Refusal::new(Reason::NoPayload, "the message has no value")),
        }
    }

    /// Waits `d`; `true` when the hub began stopping meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.shared.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.shared.stopping.borrow(),
            _ = stop.wait_for(|s| *s) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_properties_reach_each_client_that_knows_them() {
        let settings = Settings {
            brokers: "k:9092".into(),
            topics: vec!["t".into()],
            group: "g".into(),
            client_id: "hub-a".into(),
            dead_letters: HashMap::new(),
            properties: vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("auto.offset.reset".into(), "earliest".into()),
                ("fetch.wait.max.ms".into(), "100".into()),
            ],
            batch: 10,
        };
        let consumer = settings.consumer();
        assert_eq!(consumer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        let producer = settings.producer();
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(producer.get("auto.offset.reset"), None);
        assert_eq!(producer.get("fetch.wait.max.ms"), None);
    }
}
