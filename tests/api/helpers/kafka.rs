//! Kafka for the bus tests: [`Tansu`], a real Kafka-API broker of a test's
//! own (the `tansu` binary, SQLite storage in a directory of the test, so a
//! restart keeps topics, messages and committed offsets), and what a test
//! does with it through librdkafka: create topics, produce, read back.
//!
//! `tansu` is found as `$PULSEHUB_TANSU_BIN`, then `~/.cargo/bin/tansu`,
//! then on `PATH`; `scripts/services.sh kafka` installs it. Without it the
//! tests fail, saying so.

use super::config::free_port;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A message as read back: its headers and payload as text.
#[derive(Debug)]
pub struct Received {
    pub headers: BTreeMap<String, String>,
    pub payload: Option<String>,
}

/// A private `tansu broker` on a free port (killed when dropped).
pub struct Tansu {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    producer: Option<FutureProducer>,
}

/// The tansu binary (see the module doc).
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PULSEHUB_TANSU_BIN") {
        return bin.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo = PathBuf::from(home).join(".cargo/bin/tansu");
    if cargo.exists() {
        return cargo;
    }
    PathBuf::from("tansu")
}

impl Tansu {
    pub fn start() -> Tansu {
        let mut t = Tansu {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            producer: None,
        };
        t.restart();
        t
    }

    /// `host:port`, for `PULSEHUB_KAFKA_BROKERS`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and storage; waits until it listens.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).unwrap();
        let child = std::process::Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or("warn".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (scripts/services.sh kafka installs tansu)",
                    tansu_bin().display()
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates topics of `partitions` partitions.
    pub async fn create_topics(&self, topics: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
        }
    }

    fn producer(&mut self) -> &FutureProducer {
        let config = self.config();
        self.producer.get_or_insert_with(|| {
            let mut c = config;
            // Room for the too-large messages of the poison tests.
            c.set("linger.ms", "5").set("message.max.bytes", "4000000");
            c.create().unwrap()
        })
    }

    /// Produces each `(partition, payload)` in order and waits until all
    /// are acknowledged.
    pub async fn produce(&mut self, topic: &str, messages: &[(i32, Vec<u8>)]) {
        let producer = self.producer().clone();
        let mut pending = Vec::with_capacity(messages.len());
        for (partition, payload) in messages {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
                .partition(*partition)
                .payload(payload.as_slice());
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queue the message"),
            );
        }
        for p in pending {
            p.await
                .expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    }

    /// Produces JSON messages to one partition, in order.
    pub async fn produce_json(&mut self, topic: &str, partition: i32, messages: &[Value]) {
        let all: Vec<_> = messages
            .iter()
            .map(|m| (partition, m.to_string().into_bytes()))
            .collect();
        self.produce(topic, &all).await;
    }

    /// Reads `n` messages of `topic` from the start of each of its
    /// partitions (no group), or panics after `within`.
    pub async fn read(
        &self,
        topic: &str,
        partitions: i32,
        n: usize,
        within: Duration,
    ) -> Vec<Received> {
        let mut c = self.config();
        c.set(
            "group.id",
            format!("reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false");
        let consumer: StreamConsumer = c.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while out.len() < n {
            let m = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("{} of {n} messages in {topic}", out.len()))
                .unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(text).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Received {
                headers,
                payload: m.payload().map(text),
            });
        }
        out
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("tansu-{}.log", self.port));
            let _ = std::fs::copy(self.dir.path().join("tansu.log"), &keep);
            eprintln!("tansu's log: {}", keep.display());
        }
        self.stop();
    }
}
