//! [`KafkaSink`]: produces each event, as JSON in the hub's event shape, to
//! a Kafka topic, keyed by its scope, for a hub that consumes the topic
//! (`PULSEHUB_KAFKA_TOPICS`; no mapping needed for this shape).
//!
//! Contract (the [`Sink`] one): a batch is done once the brokers have
//! acknowledged every message of it; a message that failed is produced
//! again (the same bytes and key) after a pause, until it is acknowledged
//! or the run stops. The key makes a scope's events one partition's, so
//! the hub's feed keeps the order they were generated in. The topic is
//! created (3 partitions) when it does not exist.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::event::Event;
use crate::sink::{Delivery, Sink, Totals};
use crate::stop::Stop;

/// Partitions of a topic this sink creates.
const PARTITIONS: i32 = 3;
const RETRY: Duration = Duration::from_millis(500);

pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    destination: String,
}

impl KafkaSink {
    /// Connects to `brokers` and creates `topic` if it is missing.
    pub async fn new(brokers: &str, topic: &str) -> anyhow::Result<KafkaSink> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "10000");
        let admin: AdminClient<DefaultClientContext> =
            config.create().context("Kafka admin client")?;
        let created = admin
            .create_topics(
                &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .with_context(|| format!("creating topic {topic} on {brokers}"))?;
        for r in created {
            match r {
                Ok(_) => tracing::info!("created topic {topic} ({PARTITIONS} partitions)"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
            }
        }
        Ok(KafkaSink {
            producer: config.create().context("Kafka producer")?,
            topic: topic.to_string(),
            destination: format!("kafka://{brokers}/{topic}"),
        })
    }
}

impl Sink for KafkaSink {
    fn destination(&self) -> &str {
        &self.destination
    }

    async fn deliver(
        &mut self,
        batch: &[Event],
        stop: &Stop,
        totals: &mut Totals,
    ) -> anyhow::Result<Delivery> {
        let encoded: Vec<Vec<u8>> = batch
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<_, _>>()
            .context("cannot encode events")?;
        let mut left: Vec<usize> = (0..batch.len()).collect();
        while !left.is_empty() {
            let sends = left.iter().map(|&i| {
                let record = FutureRecord::to(&self.topic)
                    .key(batch[i].scope.as_str())
                    .payload(encoded[i].as_slice());
                let producer = &self.producer;
                async move { (i, producer.send(record, Duration::from_secs(10)).await) }
            });
            let results = tokio::select! {
                r = futures_util::future::join_all(sends) => r,
                _ = stop.signalled() => {
                    totals.unconfirmed += left.len() as u64;
                    return Ok(Delivery::Stopped);
                }
            };
            left.clear();
            for (i, result) in results {
                if let Err((e, _)) = result {
                    tracing::warn!("producing to {}: {e}; retrying", self.topic);
                    totals.errors += 1;
                    left.push(i);
                }
            }
            if !left.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.signalled() => {
                        totals.unconfirmed += left.len() as u64;
                        return Ok(Delivery::Stopped);
                    }
                }
            }
        }
        totals.sent += batch.len() as u64;
        totals.accepted += batch.len() as u64;
        Ok(Delivery::Done)
    }
}
