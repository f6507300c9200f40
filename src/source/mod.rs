//! Sources: every way events come in. `POST /api/events` is one
//! (`routes::ingest`), the bus consumers are the others (Kafka, Redis
//! Streams). They differ in transport only.
//!
//! Contract (DESIGN.md, "Sources and clients"):
//! - A source turns its input into the events of one batch and sends the
//!   same [`crate::ingest::Ingest`] as HTTP ([`batch`]); it learns, per
//!   message in input order, whether it was stored, a duplicate, or
//!   refused, and acknowledges upstream only what is committed.
//! - A bus message becomes an event through the mapping file ([`mapping`],
//!   `PULSEHUB_MAPPING_FILE`) and the very validation of `POST /api/events`
//!   ([`decode`]); what is refused is dead-lettered by its source, never
//!   retried in a loop.
//! - The mapping file is read and checked before any source starts
//!   ([`Sources::prepare`]): a mistake stops the start-up, naming the file,
//!   line and field.
//! - Each source reports whether it is connected ([`health`]) and stops
//!   after the batch in hand when the hub stops ([`Sources::stopped`]).

pub mod batch;
pub mod decode;
pub mod health;
pub mod kafka;
pub mod mapping;
pub mod redis_streams;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use actix::Recipient;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The bus sources of this replica.
#[derive(Default)]
pub struct Sources {
    pub health: Arc<health::Health>,
    decoder: Arc<decode::Decoder>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Sources {
    /// Reads and checks the mapping file; nothing is started yet.
    pub fn prepare(config: &Config) -> anyhow::Result<Sources> {
        let mapping = match config.mapping_file.as_deref().filter(|f| !f.is_empty()) {
            Some(file) => {
                let m = mapping::Mapping::load(file).map_err(anyhow::Error::msg)?;
                tracing::info!(file, rules = m.names().count(), "mapping loaded");
                m
            }
            None => mapping::Mapping::default(),
        };
        Ok(Sources {
            decoder: Arc::new(decode::Decoder::new(mapping)),
            ..Sources::default()
        })
    }

    /// Starts every configured source (on the current actix runtime); each
    /// sends its batches to `ingest` and stops when `stopping` turns true.
    pub fn start(
        self,
        config: &Config,
        instance: &str,
        ingest: Recipient<Ingest>,
        metrics: Arc<Metrics>,
        stopping: watch::Receiver<bool>,
    ) -> anyhow::Result<Sources> {
        let shared = || batch::Shared {
            decoder: self.decoder.clone(),
            ingest: ingest.clone(),
            metrics: metrics.clone(),
            health: self.health.clone(),
            stopping: stopping.clone(),
        };
        let mut tasks = Vec::new();
        if let Some(settings) = kafka::Settings::from_config(config, instance) {
            self.log_unmapped(&settings.topics, "topic");
            tasks.extend(kafka::start(settings, shared())?);
        }
        if let Some(settings) = redis_streams::Settings::from_config(config, instance) {
            self.log_unmapped(&settings.streams, "stream");
            tasks.extend(redis_streams::start(settings, shared())?);
        }
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(self)
    }

    fn log_unmapped(&self, names: &[String], what: &str) {
        for name in names.iter().filter(|n| !self.decoder.maps(n)) {
            tracing::info!(
                name = %name,
                "no mapping rule for this {what}: its messages must be in the hub's event shape"
            );
        }
    }

    /// Waits, at most `limit`, until every source has finished its batch in
    /// hand and stopped (call after the stop signal).
    pub async fn stopped(&self, limit: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        if tasks.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("bus sources not stopped in time");
        }
    }
}
