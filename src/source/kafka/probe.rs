//! The Kafka source's probe: every [`PROBE_EVERY`] until the stop, whether
//! each topic's metadata can be read (`/ready`, `source_up`), how many of
//! its partitions this replica holds (`source_partitions`) and their lag
//! (`source_lag`). librdkafka's calls block, so they run on the blocking
//! pool.

use crate::metrics::Metrics;
use crate::source::batch::Shared;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// How often health and lag are probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Each metadata or watermark call gives up after this.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Every [`PROBE_EVERY`] until the stop: whether each topic's metadata can
/// be read (`/ready`, `source_up`) and the lag of the assigned partitions.
pub async fn run<C: ConsumerContext + 'static>(
    consumer: Arc<StreamConsumer<C>>,
    name: &'static str,
    topics: Vec<String>,
    shared: Arc<Shared>,
) {
    let mut stop = shared.stopping.clone();
    loop {
        let c = consumer.clone();
        let topics = topics.clone();
        let report = tokio::task::spawn_blocking(move || probe_once(&c, &topics)).await;
        if let Ok(report) = report {
            for (topic, state) in report {
                let labels = Metrics::stream(name, &topic);
                let component = format!("{name}:{topic}");
                let m = &shared.metrics.source;
                match state {
                    Ok((partitions, lag)) => {
                        shared.health.up(&component);
                        m.up.get_or_create(&labels).set(1);
                        m.partitions.get_or_create(&labels).set(partitions);
                        m.lag.get_or_create(&labels).set(lag);
                    }
                    Err(why) => {
                        shared.health.down(&component, &why);
                        m.up.get_or_create(&labels).set(0);
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A topic's partitions assigned to this replica, and their lag.
type Assigned = (i64, i64);

/// Per topic: how many of its partitions this replica reads and their lag,
/// or why the topic cannot be read. Blocking.
fn probe_once<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topics: &[String],
) -> Vec<(String, Result<Assigned, String>)> {
    let positions = consumer.position().ok();
    topics
        .iter()
        .map(|topic| {
            let state = consumer
                .fetch_metadata(Some(topic), TIMEOUT)
                .map_err(|e| format!("metadata: {e}"))
                .and_then(|md| match md.topics().first() {
                    Some(t) if t.error().is_some() => Err(format!(
                        "topic {topic}: {:?}",
                        t.error().map(RDKafkaErrorCode::from)
                    )),
                    Some(t) if t.partitions().is_empty() => {
                        Err(format!("topic {topic} does not exist"))
                    }
                    Some(_) => Ok(()),
                    None => Err(format!("topic {topic} does not exist")),
                })
                .map(|()| lag(consumer, topic, positions.as_ref()));
            (topic.clone(), state)
        })
        .collect()
}

/// `topic`'s partitions assigned to this replica, and their messages not
/// yet read by it.
fn lag<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    positions: Option<&TopicPartitionList>,
) -> Assigned {
    let Some(positions) = positions else {
        return (0, 0);
    };
    let assigned = positions.elements_for_topic(topic);
    let lag = assigned
        .iter()
        .filter_map(|e| {
            let (low, high) = consumer
                .fetch_watermarks(topic, e.partition(), TIMEOUT)
                .ok()?;
            let read = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            Some((high - read).max(0))
        })
        .sum();
    (assigned.len() as i64, lag)
}
