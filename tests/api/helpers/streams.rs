//! Redis Streams for the bus tests: stream keys of a test's own on the
//! shared Redis (under a fresh prefix, deleted when dropped), entries added
//! and read back, the consumer group's state, the hub configured to consume
//! them through the example mapping, and the hub's metrics.

use super::app::TestApp;
use super::config::PATIENCE;
use super::redis::redis_url;
use pulsehub::config::Config;
use redis::streams::{StreamInfoGroupsReply, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The example mapping shipped for seed 001.
pub const EXAMPLE_MAPPING: &str = include_str!("../../../examples/mappings/live-dashboard.toml");
/// The topic the example mapping names.
pub const SEED_TOPIC: &str = "platform.analytics.check-in.v1";

/// Stream keys of one test (`{prefix}:{name}`), removed when dropped.
pub struct TestStreams {
    pub prefix: String,
    conn: redis::aio::MultiplexedConnection,
}

/// An entry's fields as read back (as text).
pub type Fields = BTreeMap<String, String>;

impl TestStreams {
    pub async fn new() -> TestStreams {
        let client = redis::Client::open(redis_url()).unwrap();
        TestStreams {
            prefix: format!("pulsehub_test_{}", uuid::Uuid::new_v4().simple()),
            conn: client.get_multiplexed_async_connection().await.unwrap(),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The hub configuration that consumes `stream` (group `pulsehub`),
    /// mapping it with the example mapping.
    pub fn consume(&self, config: &mut Config, stream: &str) {
        config.redis_streams = vec![stream.to_string()];
        config.redis_streams_url = Some(redis_url());
        config.mapping_file = Some(self.example_mapping_for(stream));
    }

    /// The example mapping, its rule renamed from seed 001's topic to
    /// `stream`, written to a file of this test.
    pub fn example_mapping_for(&self, stream: &str) -> String {
        let text = EXAMPLE_MAPPING.replace(SEED_TOPIC, stream);
        assert_ne!(text, EXAMPLE_MAPPING, "the example names {SEED_TOPIC}");
        let path = std::env::temp_dir().join(format!("{}-mapping.toml", self.prefix));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// `XADD stream * data <json>`; returns the entry id.
    pub async fn add(&mut self, stream: &str, message: &Value) -> String {
        self.add_fields(stream, &[("data", message.to_string().as_bytes())])
            .await
    }

    /// Adds every message in one pipeline, in order.
    pub async fn add_all(&mut self, stream: &str, messages: &[Value]) {
        let mut pipe = redis::pipe();
        for m in messages {
            pipe.xadd(stream, "*", &[("data", m.to_string())]).ignore();
        }
        let _: () = pipe.query_async(&mut self.conn).await.unwrap();
    }

    /// `XGROUP CREATE stream pulsehub $ MKSTREAM`, as a replica would.
    pub async fn create_group(&mut self, stream: &str) {
        let _: () = self
            .conn
            .xgroup_create_mkstream(stream, "pulsehub", "$")
            .await
            .unwrap();
    }

    pub async fn add_fields(&mut self, stream: &str, fields: &[(&str, &[u8])]) -> String {
        self.conn.xadd(stream, "*", fields).await.unwrap()
    }

    /// The fields of every entry of a stream, in order.
    pub async fn entries(&mut self, stream: &str) -> Vec<Fields> {
        let reply: StreamRangeReply = self.conn.xrange_all(stream).await.unwrap();
        reply
            .ids
            .into_iter()
            .map(|e| {
                e.map
                    .iter()
                    .map(|(k, v)| {
                        let text = match v {
                            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            other => format!("{other:?}"),
                        };
                        (k.clone(), text)
                    })
                    .collect()
            })
            .collect()
    }

    /// `(pending, lag)` of the group on `stream`.
    pub async fn group(&mut self, stream: &str, group: &str) -> (usize, Option<usize>) {
        let info: StreamInfoGroupsReply = self.conn.xinfo_groups(stream).await.unwrap();
        let g = info
            .groups
            .iter()
            .find(|g| g.name == group)
            .unwrap_or_else(|| panic!("no group {group} on {stream}"));
        (g.pending, g.lag)
    }

    /// Reads `count` new entries as `consumer` and never acknowledges them:
    /// what a consumer killed between reading and acknowledging leaves.
    pub async fn read_and_die(
        &mut self,
        stream: &str,
        consumer: &str,
        count: usize,
    ) -> Vec<String> {
        let opts = StreamReadOptions::default()
            .group("pulsehub", consumer)
            .count(count);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[stream], &[">"], &opts)
            .await
            .unwrap();
        reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(|e| e.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Moves the group's position back to the start (`XGROUP SETID … 0`):
    /// every entry is delivered again, as after a crash before `XACK`.
    pub async fn rewind(&mut self, stream: &str) {
        let _: () = redis::cmd("XGROUP")
            .arg("SETID")
            .arg(stream)
            .arg("pulsehub")
            .arg("0")
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }
}

impl Drop for TestStreams {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("{}-mapping.toml", self.prefix)),
        );
        let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// The value of a metric line at a `/metrics` URL, 0 when it is not there.
pub async fn metric_at(http: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

impl TestApp {
    /// The value of a metric line (`name{labels}` as Prometheus prints it),
    /// 0 when it is not there yet.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(&self.http, &self.url("/metrics"), series).await
    }

    /// Every event of `scope`'s feed, in offset order (read with a token
    /// for the scope, page by page).
    pub async fn feed(&self, scope: &str) -> Vec<Value> {
        let token = self.token("reader", &[scope]);
        let mut items = Vec::new();
        loop {
            let (status, body) = self
                .get(
                    &format!(
                        "/api/channels/feed:{scope}/history?since={}&limit=1000",
                        items.len()
                    ),
                    &token,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body["items"].as_array().unwrap().clone();
            if page.is_empty() {
                return items;
            }
            items.extend(page);
        }
    }

    /// Waits (up to [`PATIENCE`], then panics with `what`) until the feed of
    /// `scope` holds at least `n` events; returns them all.
    pub async fn feed_reaches(&self, scope: &str, n: usize, what: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE * 3;
        loop {
            let feed = self.feed(scope).await;
            if feed.len() >= n {
                return feed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} of {n} events in feed:{scope}",
                feed.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to [`PATIENCE`]) until the metric reaches `at_least`.
    pub async fn metric_reaches(&self, series: &str, at_least: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + PATIENCE * 3;
        loop {
            let v = self.metric(series).await;
            if v >= at_least {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is {v}, expected at least {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
