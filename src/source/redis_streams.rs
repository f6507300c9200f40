//! Redis Streams source: consumes `PULSEHUB_REDIS_STREAMS` in one consumer
//! group shared by every replica (the consumer's name is the replica's).
//!
//! Contract:
//! - Each stream has one task and one connection; it reads batches with
//!   `XREADGROUP` and handles them one after the other, so within a
//!   replica a stream's entries reach the feed in stream order.
//! - An entry is acknowledged (`XACK`) only after its event is committed
//!   to PostgreSQL (stored, or a duplicate of a key stored before), or
//!   after it was added to the dead-letter stream; both in one `MULTI`.
//!   An entry's key defaults to `redis:{stream}:{entry id}`, so an entry
//!   delivered again (after a crash, a lost connection, a claim) is a
//!   duplicate: never stored or counted twice.
//! - When ingest answers `unavailable` (queue full, database down) the
//!   same batch is offered again after a pause, and nothing more is read
//!   meanwhile: never dropped, never acknowledged.
//! - On (re)connecting, the consumer first takes back the entries it was
//!   given and did not acknowledge (`XREADGROUP … 0`), then new ones (`>`).
//!   Entries left pending by a consumer idle for
//!   `PULSEHUB_REDIS_STREAMS_CLAIM_IDLE_MS` (a replica that died) are
//!   claimed with `XAUTOCLAIM` and handled the same way.
//! - A bad entry (no message field, too large, not JSON, not mappable,
//!   invalid) is added to the dead-letter stream with its original fields
//!   and `dlq_reason`, `dlq_error`, `dlq_stream`, `dlq_id`, `dlq_group`,
//!   `dlq_consumer`, counted, logged once, and acknowledged.
//! - A lost connection is retried with backoff; `/ready` names the stream
//!   meanwhile. A graceful stop finishes the batch in hand, then stops.

use super::batch::{commit_messages, Fate, Shared};
use super::decode::{Reason, Refusal, MAX_MESSAGE_BYTES};
use crate::config::{Config, StreamStart};
use crate::events::NewEvent;
use crate::metrics::{DeadLetterLabels, Metrics, StreamLabels};
use chrono::Utc;
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
    StreamReadOptions, StreamReadReply,
};
use redis::AsyncCommands;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The `source` label and `/ready` component prefix.
pub const NAME: &str = "redis_streams";
/// How long one `XREADGROUP` waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Every other Redis call gives up after this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often the lag and pending gauges are refreshed.
const LAG_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Longest pause before a batch refused with `unavailable` is offered again.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What the consumer needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub streams: Vec<String>,
    pub group: String,
    /// This replica's consumer name.
    pub consumer: String,
    /// The entry field with the message, or `*` for all fields.
    pub field: String,
    pub start: StreamStart,
    /// Dead-letter stream per stream, in the order of `streams`.
    pub dead_letters: Vec<String>,
    pub batch: usize,
    pub claim_idle: Duration,
}

impl Settings {
    /// `None` when no stream is configured.
    pub fn from_config(config: &Config, consumer: &str) -> Option<Settings> {
        let streams = config.streams();
        if streams.is_empty() {
            return None;
        }
        Some(Settings {
            url: config.streams_url()?.to_string(),
            dead_letters: streams
                .iter()
                .map(|s| config.dead_letter_stream(s))
                .collect(),
            streams,
            group: config.redis_streams_group.clone(),
            consumer: consumer.to_string(),
            field: config.redis_streams_field.clone(),
            start: config.redis_streams_start,
            // A batch larger than the ingest queue could never be taken.
            batch: config.redis_streams_batch.min(config.ingest_queue).max(1),
            claim_idle: Duration::from_millis(config.redis_streams_claim_idle_ms),
        })
    }
}

/// Starts one consumer task per stream (on the current actix runtime).
pub fn start(settings: Settings, shared: Shared) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let client = redis::Client::open(settings.url.as_str())?;
    let settings = Arc::new(settings);
    let shared = Arc::new(shared);
    let tasks = settings
        .streams
        .iter()
        .zip(&settings.dead_letters)
        .map(|(stream, dead_letter)| {
            let consumer = Consumer {
                client: client.clone(),
                settings: settings.clone(),
                shared: shared.clone(),
                stream: stream.clone(),
                dead_letter: dead_letter.clone(),
                component: format!("{NAME}:{stream}"),
                labels: Metrics::stream(NAME, stream),
                stopping: shared.stopping.clone(),
            };
            shared.health.register(&consumer.component);
            actix::spawn(consumer.run())
        })
        .collect();
    Ok(tasks)
}

struct Consumer {
    client: redis::Client,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    stream: String,
    dead_letter: String,
    /// Its name in `/ready`.
    component: String,
    labels: StreamLabels,
    stopping: watch::Receiver<bool>,
}

/// A batch as read: the entries and what each decoded to.
struct Batch {
    entries: Vec<StreamId>,
    decoded: Vec<Result<NewEvent, Refusal>>,
}

impl Consumer {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = self.session(&mut backoff).await;
            self.shared
                .metrics
                .source
                .up
                .get_or_create(&self.labels)
                .set(0);
            match result {
                Ok(()) => {
                    tracing::info!(stream = %self.stream, "redis streams consumer stopped");
                    return;
                }
                Err(e) => {
                    self.shared
                        .metrics
                        .source
                        .errors
                        .get_or_create(&self.labels)
                        .inc();
                    self.shared.health.down(&self.component, &e);
                    tracing::warn!(stream = %self.stream, error = %e, "redis streams: reconnecting");
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One connection's life: `Ok` when stopping, `Err` when it failed.
    async fn session(&mut self, backoff: &mut Duration) -> Result<(), String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(BLOCK + TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        self.create_group(&mut conn).await?;
        self.shared.health.up(&self.component);
        self.shared
            .metrics
            .source
            .up
            .get_or_create(&self.labels)
            .set(1);
        *backoff = BACKOFF_MIN;
        tracing::info!(
            stream = %self.stream,
            group = %self.settings.group,
            consumer = %self.settings.consumer,
            "consuming redis stream"
        );

        // Entries given to this consumer before and not acknowledged first
        // (`Some(cursor)`), then new ones.
        let mut own_pending = Some("0-0".to_string());
        let claim_every = (self.settings.claim_idle / 2).max(Duration::from_millis(50));
        let mut next_claim = Instant::now();
        let mut next_lag = Instant::now();
        loop {
            if self.stopped() {
                return Ok(());
            }
            if Instant::now() >= next_lag {
                self.refresh_lag(&mut conn).await?;
                next_lag = Instant::now() + LAG_EVERY;
            }
            if Instant::now() >= next_claim {
                self.claim(&mut conn).await?;
                next_claim = Instant::now() + claim_every;
            }
            let entries = match &own_pending {
                Some(cursor) => self.read(&mut conn, cursor, None).await?,
                None => {
                    let mut stop = self.stopping.clone();
                    tokio::select! {
                        read = self.read(&mut conn, ">", Some(BLOCK)) => read?,
                        // Entries a dropped read was given stay pending:
                        // read again at the next start, or claimed.
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                    }
                }
            };
            if own_pending.is_some() {
                own_pending = entries.last().map(|e| e.id.clone());
            }
            if !entries.is_empty() {
                self.handle(&mut conn, entries).await?;
            }
        }
    }

    /// `XGROUP CREATE … MKSTREAM`; a group that exists already is fine.
    async fn create_group(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let start = match self.settings.start {
            StreamStart::New => "$",
            StreamStart::All => "0",
        };
        let created: redis::RedisResult<()> =
            timed(conn.xgroup_create_mkstream(&self.stream, &self.settings.group, start)).await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %self.stream, group = %self.settings.group, "created consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(format!("XGROUP CREATE: {e}")),
        }
    }

    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        id: &str,
        block: Option<Duration>,
    ) -> Result<Vec<StreamId>, String> {
        let mut opts = StreamReadOptions::default()
            .group(&self.settings.group, &self.settings.consumer)
            .count(self.settings.batch);
        if let Some(b) = block {
            opts = opts.block(b.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&self.stream], &[id], &opts)
            .await
            .map_err(|e| format!("XREADGROUP: {e}"))?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Takes over, and handles, entries left pending by a consumer that has
    /// been idle for the claim time.
    async fn claim(&mut self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let mut cursor = "0-0".to_string();
        loop {
            let opts = StreamAutoClaimOptions::default().count(self.settings.batch);
            let reply: StreamAutoClaimReply = timed(conn.xautoclaim_options(
                &self.stream,
                &self.settings.group,
                &self.settings.consumer,
                self.settings.claim_idle.as_millis() as u64,
                &cursor,
                opts,
            ))
            .await
            .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
            if !reply.claimed.is_empty() {
                let n = reply.claimed.len();
                tracing::info!(stream = %self.stream, entries = n, "claimed entries of an idle consumer");
                self.shared
                    .metrics
                    .source
                    .claimed
                    .get_or_create(&self.labels)
                    .inc_by(n as u64);
                self.handle(conn, reply.claimed).await?;
            }
            if reply.next_stream_id == "0-0" || self.stopped() {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
    }

    async fn refresh_lag(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let info: StreamInfoGroupsReply = timed(conn.xinfo_groups(&self.stream))
            .await
            .map_err(|e| format!("XINFO GROUPS: {e}"))?;
        if let Some(g) = info.groups.iter().find(|g| g.name == self.settings.group) {
            let m = &self.shared.metrics.source;
            m.pending.get_or_create(&self.labels).set(g.pending as i64);
            // Redis cannot always tell (after deletions): keep the last value.
            if let Some(lag) = g.lag {
                m.lag.get_or_create(&self.labels).set(lag as i64);
            }
        }
        Ok(())
    }

    /// Commits one batch, then dead-letters and acknowledges it.
    async fn handle(
        &mut self,
        conn: &mut MultiplexedConnection,
        entries: Vec<StreamId>,
    ) -> Result<(), String> {
        let now = Utc::now();
        let decoded = entries.iter().map(|e| self.decode(e, now)).collect();
        let batch = Batch { entries, decoded };
        let started = Instant::now();
        let Some(fates) = self.commit(&batch).await else {
            // Stopping: the batch stays pending, for the next start or a claim.
            return Ok(());
        };
        if batch.decoded.iter().any(Result::is_ok) {
            self.shared
                .metrics
                .source
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }

        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut refused = Vec::new();
        let mut duplicates = 0;
        for (entry, fate) in batch.entries.iter().zip(&fates) {
            match fate {
                Fate::Stored(_) => {}
                Fate::Duplicate => duplicates += 1,
                Fate::Refused(r) => {
                    self.dead_letter(&mut pipe, entry, r);
                    refused.push((entry.id.as_str(), *r));
                }
            }
        }
        let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
        pipe.xack(&self.stream, &self.settings.group, &ids).ignore();
        timed(pipe.query_async::<()>(conn))
            .await
            .map_err(|e| format!("XACK: {e}"))?;

        let m = &self.shared.metrics.source;
        m.consumed
            .get_or_create(&self.labels)
            .inc_by(ids.len() as u64);
        m.duplicates.get_or_create(&self.labels).inc_by(duplicates);
        for (id, r) in refused {
            m.dead_lettered
                .get_or_create(&DeadLetterLabels {
                    source: NAME.into(),
                    stream: self.stream.clone(),
                    reason: r.reason.code().into(),
                })
                .inc();
            tracing::warn!(
                stream = %self.stream,
                id,
                reason = r.reason.code(),
                error = %r.message,
                dead_letter = %self.dead_letter,
                "entry dead-lettered"
            );
        }
        Ok(())
    }

    /// Offers the batch to ingest until it is committed; `None` when the
    /// hub stops first.
    async fn commit<'a>(&mut self, batch: &'a Batch) -> Option<Vec<Fate<'a>>> {
        let mut wait = BACKOFF_MIN;
        let mut warned = false;
        loop {
            match commit_messages(&self.shared.ingest, &batch.decoded).await {
                Ok(fates) => return Some(fates),
                Err(e) => {
                    self.shared
                        .metrics
                        .source
                        .retries
                        .get_or_create(&self.labels)
                        .inc();
                    if !warned {
                        tracing::warn!(stream = %self.stream, error = %e, "ingest unavailable: holding the batch and retrying");
                        warned = true;
                    }
                    if self.pause(wait).await {
                        return None;
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn decode(&self, entry: &StreamId, now: chrono::DateTime<Utc>) -> Result<NewEvent, Refusal> {
        let key = || format!("redis:{}:{}", self.stream, entry.id);
        let field = self.settings.field.as_str();
        if field == "*" {
            let size: usize = entry
                .map
                .iter()
                .map(|(k, v)| k.len() + bytes(v).len())
                .sum();
            if size > MAX_MESSAGE_BYTES {
                return Err(Refusal::new(
                    Reason::TooLarge,
                    format!("{size} bytes; the limit is {MAX_MESSAGE_BYTES}"),
                ));
            }
            let fields: Map<String, Value> = entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&bytes(v)).into()))
                .collect();
            return self
                .shared
                .decoder
                .decode_value(&self.stream, Value::Object(fields), key, now);
        }
        match entry.map.get(field) {
            Some(v) => self
                .shared
                .decoder
                .decode(&self.stream, &bytes(v), key, now),
            None => Err(Refusal::new(
                Reason::NoPayload,
                format!("the entry has no field '{field}' (PULSEHUB_REDIS_STREAMS_FIELD)"),
            )),
        }
    }

    /// Adds an entry to the dead-letter stream: its own fields, and why.
    fn dead_letter(&self, pipe: &mut redis::Pipeline, entry: &StreamId, r: &Refusal) {
        let mut fields: Vec<(&str, Cow<'_, [u8]>)> = entry
            .map
            .iter()
            .map(|(k, v)| (k.as_str(), bytes(v)))
            .collect();
        fields.sort();
        let cmd = pipe.cmd("XADD").arg(&self.dead_letter).arg("*");
        for (k, v) in &fields {
            cmd.arg(*k).arg(v.as_ref());
        }
        cmd.arg("dlq_reason")
            .arg(r.reason.code())
            .arg("dlq_error")
            .arg(&r.message)
            .arg("dlq_stream")
            .arg(&self.stream)
            .arg("dlq_id")
            .arg(&entry.id)
            .arg("dlq_group")
            .arg(&self.settings.group)
            .arg("dlq_consumer")
            .arg(&self.settings.consumer)
            .ignore();
    }

    fn stopped(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Waits `d`; `true` when the hub began stopping meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        let mut stop = self.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stopped(),
            _ = stop.wait_for(|s| *s) => true,
        }
    }
}

/// A field's value as bytes (Redis returns bulk strings; others written out).
fn bytes(v: &redis::Value) -> Cow<'_, [u8]> {
    match v {
        redis::Value::BulkString(b) => Cow::Borrowed(b.as_slice()),
        redis::Value::SimpleString(s) => Cow::Borrowed(s.as_bytes()),
        redis::Value::Int(i) => Cow::Owned(i.to_string().into_bytes()),
        _ => Cow::Borrowed(&[]),
    }
}

/// A Redis call that gives up after [`TIMEOUT`].
async fn timed<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
    }
}
