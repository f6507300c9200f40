//! [`KafkaOut`]: the publisher's way into a hub that consumes Kafka (the
//! `bus` scenario): each event is produced, as JSON in the hub's event
//! shape, to one topic, keyed by its scope (so a scope's events keep their
//! order in one partition), and counts as sent once the brokers
//! acknowledged it. The topic is created (3 partitions) when missing.

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::time::Duration;

const PARTITIONS: i32 = 3;

#[derive(Clone)]
pub struct KafkaOut {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KafkaOut({})", self.topic)
    }
}

impl KafkaOut {
    pub async fn new(brokers: &str, topic: &str) -> anyhow::Result<KafkaOut> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "2")
            .set("message.timeout.ms", "10000");
        let admin: AdminClient<DefaultClientContext> = config.create()?;
        let created = admin
            .create_topics(
                &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .with_context(|| format!("creating topic {topic} on {brokers}"))?;
        for r in created {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
            }
        }
        Ok(KafkaOut {
            producer: config.create()?,
            topic: topic.to_string(),
        })
    }

    /// Produces the events of a request body (an array) and waits for
    /// every acknowledgement; how many were produced.
    pub async fn produce(&self, body: &Value) -> anyhow::Result<u64> {
        let events = body.as_array().map(Vec::as_slice).unwrap_or_default();
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let payload = e.to_string();
            let key = e["scope"].as_str().unwrap_or_default().to_string();
            let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("producing to {}: {e}", self.topic))?;
            pending.push(delivery);
        }
        for p in pending {
            p.await
                .context("delivery report")?
                .map_err(|(e, _)| anyhow::anyhow!("producing to {}: {e}", self.topic))?;
        }
        Ok(events.len() as u64)
    }
}
