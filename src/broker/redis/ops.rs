//! What both the one-Redis and the cluster tasks share on the way out: the
//! queued writes ([`Op`]), sending them as one pipeline (`PUBLISH` or
//! `SPUBLISH`), dropping them (counted; claims granted), the broker's
//! health, and the timings every Redis call obeys.

use crate::metrics::Metrics;
use bytes::Bytes;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Writes waiting for Redis; beyond this they are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// Writes sent in one pipeline at most.
pub const PIPELINE: usize = 512;
/// Every Redis call gives up after this.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle subscription connection is checked.
pub const PING_EVERY: Duration = Duration::from_secs(1);
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);

pub enum Op {
    /// Channel, payload, and for frames when they were handed over
    /// (the `publish` stage; gossip is not timed).
    Publish(String, Bytes, Option<Instant>),
    Claim(String, Duration, oneshot::Sender<bool>),
}

pub struct Shared {
    pub subscribed: AtomicBool,
    pub writable: AtomicBool,
    pub error: Mutex<String>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn fail(&self, what: &str, e: impl std::fmt::Display) {
        self.metrics.broker_errors.inc();
        let msg = format!("{what}: {e}");
        tracing::warn!(error = %msg, "redis");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }
}

/// One pipeline, publishing with `publish` (`PUBLISH`, or `SPUBLISH` on a
/// cluster node); `false` when the connection must be replaced.
pub async fn send_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &mut Vec<Op>,
    publish: &'static str,
    shared: &Shared,
    instance: &str,
) -> bool {
    let mut pipe = redis::pipe();
    let mut claims = Vec::new();
    let mut publishes = 0u64;
    let mut handed = Vec::new();
    for op in batch.drain(..) {
        match op {
            Op::Publish(channel, payload, at) => {
                pipe.cmd(publish)
                    .arg(channel)
                    .arg(payload.as_ref())
                    .ignore();
                publishes += 1;
                handed.extend(at);
            }
            Op::Claim(key, ttl, reply) => {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64);
                claims.push(reply);
            }
        }
    }
    match tokio::time::timeout(TIMEOUT, pipe.query_async::<Vec<redis::Value>>(conn)).await {
        Ok(Ok(values)) => {
            shared.metrics.broker_published.inc_by(publishes);
            for at in handed {
                shared
                    .metrics
                    .stages
                    .publish
                    .observe(at.elapsed().as_secs_f64());
            }
            for (reply, value) in claims.into_iter().zip(values) {
                let _ = reply.send(!matches!(value, redis::Value::Nil));
            }
            true
        }
        outcome => {
            match outcome {
                Ok(Err(e)) => shared.fail("publishing", e),
                _ => shared.fail("publishing", "timed out"),
            }
            shared.metrics.broker_dropped.inc_by(publishes);
            for reply in claims {
                let _ = reply.send(true);
            }
            false
        }
    }
}

pub fn drop_batch(batch: &mut Vec<Op>, shared: &Shared) {
    for op in batch.drain(..) {
        match op {
            Op::Publish(..) => {
                shared.metrics.broker_dropped.inc();
            }
            Op::Claim(_, _, reply) => {
                let _ = reply.send(true);
            }
        }
    }
}

pub async fn call<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}
