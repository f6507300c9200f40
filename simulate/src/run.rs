//! [`run()`]: one simulation, from options to the final summary.
//!
//! - Refuses, before sending anything, a rate outside (0, 1,000,000] events
//!   per second, a URL the HTTP sink cannot reach, and what
//!   [`Simulator::new`] refuses.
//! - Stops on Ctrl-C (at once; a batch in flight is reported as
//!   unconfirmed), after `--count` events have been delivered, or after
//!   `--duration` seconds.
//! - Logs what it is about to do, a progress line every 5 s ([`pace`]) and a
//!   final summary (sent, accepted, duplicates, errors, effective rate, and
//!   any unconfirmed events) however it ends.
//!
//! [`pace`]: crate::pace

use std::time::Duration;

use anyhow::bail;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::HttpSink;
use crate::kafka::KafkaSink;
use crate::options::SimulateArgs;
use crate::pace::{pump, Pace};
use crate::simulator::{random_run_id, SimConfig, Simulator};
use crate::sink::{Sink, Totals};
use crate::stop::Stop;

/// Runs the simulation until Ctrl-C, `--count` or `--duration`: into
/// Kafka with `--kafka`, else to the hub's `POST /api/events`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    match args.kafka.as_deref() {
        Some(brokers) => {
            let sink = KafkaSink::new(brokers, &args.topic).await?;
            run_into(sink, args).await
        }
        None => {
            let sink = HttpSink::new(&args.url, args.ingest_key.clone())?;
            run_into(sink, args).await
        }
    }
}

async fn run_into(mut sink: impl Sink, args: SimulateArgs) -> anyhow::Result<()> {
    if !args.rate.is_finite() || args.rate <= 0.0 || args.rate > 1_000_000.0 {
        bail!(
            "--rate must be a number of events per second in (0, 1000000], got {}",
            args.rate
        );
    }
    let mut sim = Simulator::new(SimConfig {
        scopes: args.scopes.clone(),
        users: args.users as usize,
        chats: args.chats as usize,
        seed: args.seed,
        run_id: args.run_id.clone().unwrap_or_else(random_run_id),
    })?;
    let run_id = sim.run_id().to_owned();

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                tracing::info!("Ctrl-C: stopping the simulation");
                let _ = stop_tx.send(true);
            }
            Err(err) => tracing::warn!("cannot listen for Ctrl-C: {err}"),
        }
    });

    tracing::info!(
        "simulating {} ev/s into {} for scopes {} (run {}, {} users{})",
        args.rate,
        sink.destination(),
        sim.scopes().join(","),
        run_id,
        args.users,
        args.seed.map(|s| format!(", seed {s}")).unwrap_or_default()
    );

    let start = Instant::now();
    let deadline = args.duration.map(|secs| start + Duration::from_secs(secs));
    let stop = Stop::new(stop_rx, deadline);
    let mut totals = Totals::default();
    let result = pump(
        &mut sim,
        &mut sink,
        &stop,
        &mut totals,
        Pace {
            rate: args.rate,
            count: args.count,
            max_batch: args.max_batch as usize,
            start,
        },
    )
    .await;
    ctrl_c.abort();

    tracing::info!(
        "simulate finished (run {run_id}): {}{}",
        totals.summary(start.elapsed()),
        if totals.unconfirmed > 0 {
            format!(
                ", {} events unconfirmed (interrupted before the hub answered)",
                totals.unconfirmed
            )
        } else {
            String::new()
        }
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accepted, fake_hub};
    use serde_json::Value;
    use std::collections::HashSet;

    #[tokio::test]
    async fn run_sends_count_events_then_stops() {
        let (url, seen) = fake_hub(|_, body| (202, "", accepted(body))).await;
        let args = SimulateArgs {
            url,
            kafka: None,
            topic: String::new(),
            ingest_key: "k3y".into(),
            scopes: vec!["demo".into(), "acme".into()],
            rate: 200.0,
            count: Some(57),
            duration: Some(20),
            users: 10,
            chats: 3,
            seed: Some(1),
            run_id: None,
            max_batch: 7,
        };
        let started = std::time::Instant::now();
        run(args).await.expect("run");
        assert!(started.elapsed() < Duration::from_secs(5));
        let seen = seen.lock().expect("lock").clone();
        let events: Vec<&Value> = seen
            .iter()
            .flat_map(|s| s.body.as_array().into_iter().flatten())
            .collect();
        assert_eq!(events.len(), 57);
        assert!(seen
            .iter()
            .all(|s| s.body.as_array().map_or(0, Vec::len) <= 7));
        let keys: HashSet<&str> = events.iter().filter_map(|e| e["key"].as_str()).collect();
        assert_eq!(keys.len(), 57);
    }

    #[tokio::test]
    async fn run_stops_after_duration() {
        let (url, seen) = fake_hub(|_, body| (202, "", accepted(body))).await;
        let args = SimulateArgs {
            url,
            kafka: None,
            topic: String::new(),
            ingest_key: "k3y".into(),
            scopes: vec!["demo".into()],
            rate: 20.0,
            count: None,
            duration: Some(1),
            users: 5,
            chats: 2,
            seed: None,
            run_id: Some("dur".into()),
            max_batch: 500,
        };
        let started = std::time::Instant::now();
        run(args).await.expect("run");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let n: usize = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.body.as_array().map_or(0, Vec::len))
            .sum();
        assert!((12..=30).contains(&n), "{n} events in 1 s at 20/s");
    }

    #[tokio::test]
    async fn run_refuses_a_bad_rate() {
        let args = SimulateArgs {
            url: "http://127.0.0.1:9".into(),
            kafka: None,
            topic: String::new(),
            ingest_key: "k".into(),
            scopes: vec!["demo".into()],
            rate: 0.0,
            count: Some(1),
            duration: None,
            users: 5,
            chats: 2,
            seed: None,
            run_id: None,
            max_batch: 10,
        };
        assert!(run(args).await.is_err());
    }
}
