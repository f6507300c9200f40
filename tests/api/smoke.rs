//! Smoke runs of the load generator (`loadtest/`) against a real hub: they
//! assert behaviour (nothing lost, duplicated or reordered; every client
//! served), never timings or memory figures, which belong to
//! docs/benchmarks.md.

use crate::helpers::*;
use pulsehub_loadtest::kafka::KafkaOut;
use pulsehub_loadtest::publisher::Via;
use pulsehub_loadtest::scenarios::{abuse, connect, fanout, presence};
use pulsehub_loadtest::Target;
use std::sync::Arc;
use std::time::Duration;

fn target(app: &TestApp) -> Arc<Target> {
    Arc::new(Target::new(&[app.url("")], SECRET, INGEST_KEY).expect("a loopback target"))
}

#[actix_web::test]
async fn fanout_to_100_subscribers_loses_nothing() {
    let app = spawn_app().await;
    let opts = fanout::FanoutOpts {
        connections: 100,
        scopes: 1,
        rate: 100.0,
        duration: Duration::from_secs(3),
        drain: Duration::from_secs(20),
        ..Default::default()
    };
    let report = fanout::run(target(&app), &opts).await.expect("fanout ran");
    let d = &report.delivery;
    assert_eq!(report.subscribed, 100, "{}", report.table());
    assert_eq!(report.publish.stored, 300, "{}", report.table());
    assert_eq!(d.expected, 300 * 100, "{}", report.table());
    assert_eq!(d.delivered, d.expected, "{}", report.table());
    assert_eq!(d.lost, 0, "{}", report.table());
    assert_eq!(d.duplicated, 0, "{}", report.table());
    assert_eq!(d.out_of_order, 0, "{}", report.table());
    assert_eq!(d.disconnects, 0, "{}", report.table());
    assert!(report.problems().is_empty(), "{}", report.table());
    assert_eq!(report.latency.count, 300 * 100);
    // The hub's own stages were read: a write per subscriber per delivery
    // and at least one commit (group commit merges requests).
    let stage = |name: &str| report.stages.iter().find(|s| s.stage == name);
    let write = stage("write").unwrap_or_else(|| panic!("{}", report.table()));
    assert!(write.count >= 100, "{}", report.table());
    assert!(write.p99_ms >= write.p50_ms, "{}", report.table());
    for name in ["receive", "queue", "statements", "commit", "dispatch"] {
        assert!(stage(name).is_some(), "{name}: {}", report.table());
    }
    assert!(stage("relay").is_none(), "one hub relays nothing");
}

#[actix_web::test]
async fn fanout_over_several_scopes_keeps_each_feed_whole() {
    let app = spawn_app().await;
    let opts = fanout::FanoutOpts {
        connections: 30,
        scopes: 3,
        rate: 60.0,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(20),
        ..Default::default()
    };
    let report = fanout::run(target(&app), &opts).await.expect("fanout ran");
    assert_eq!(report.publish.stored_per_scope, vec![40, 40, 40]);
    // Each subscriber gets only its own scope's events.
    assert_eq!(report.delivery.expected, 120 * 10, "{}", report.table());
    assert!(report.problems().is_empty(), "{}", report.table());
}

#[actix_web::test]
async fn bus_through_kafka_keeps_each_feed_whole_and_in_order() {
    // The `bus` scenario: events produced to a topic the hub consumes
    // (hub-shaped, no mapping), keyed by scope over 3 partitions.
    const TOPIC: &str = "pulsehub.smoke";
    let tansu = Tansu::start();
    tansu
        .create_topics(&[TOPIC, &format!("{TOPIC}.dlq")], 3)
        .await;
    let app = spawn_with(|c| {
        c.kafka_brokers = Some(tansu.bootstrap());
        c.kafka_topics = vec![TOPIC.into()];
        c.kafka_properties = "auto.offset.reset=earliest".into();
    })
    .await;
    app.wait_ready().await;
    let opts = fanout::FanoutOpts {
        connections: 30,
        scopes: 3,
        rate: 100.0,
        duration: Duration::from_secs(3),
        drain: Duration::from_secs(30),
        via: Via::Kafka(
            KafkaOut::new(&tansu.bootstrap(), TOPIC)
                .await
                .expect("producer"),
        ),
        ..Default::default()
    };
    let report = fanout::run(target(&app), &opts).await.expect("bus ran");
    assert_eq!(report.info.scenario, "bus");
    assert_eq!(
        report.publish.stored_per_scope,
        vec![100, 100, 100],
        "{}",
        report.table()
    );
    assert_eq!(report.delivery.expected, 300 * 10, "{}", report.table());
    assert_eq!(
        report.delivery.delivered,
        report.delivery.expected,
        "{}",
        report.table()
    );
    assert!(report.problems().is_empty(), "{}", report.table());
}

#[actix_web::test]
async fn connect_and_presence_scenarios_run() {
    let app = spawn_app().await;
    let t = target(&app);
    let opts = connect::ConnectOpts {
        connections: 50,
        concurrency: 10,
        hold: Duration::ZERO,
        ..Default::default()
    };
    let report = connect::run(t.clone(), &opts).await.expect("connect ran");
    assert_eq!(report.opened, 50, "{}", report.table());
    assert_eq!(report.per_instance.get("hub-test"), Some(&50));
    let opts = presence::PresenceOpts {
        clients: 10,
        rounds: 1,
        rate: 100.0,
        ..Default::default()
    };
    let report = presence::run(t, &opts).await.expect("presence ran");
    assert!(report.problems().is_empty(), "{}", report.table());
    assert_eq!(report.join_agreement.count, 1);
    assert_eq!(report.leave_agreement.count, 1);
}

/// Publishes faster than the coalescing window, straight into the hub: each
/// subscriber gets every frame once, in order, whether held or not.
#[actix_web::test]
async fn rapid_publishes_arrive_whole_and_in_order() {
    use pulsehub::frame::{Outbound, Publish};
    let app = spawn_with(|c| c.coalesce_ms = 20).await;
    let mut readers = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut c = app.connect(user, &["demo"]).await;
        c.subscribe("feed:demo", Some(0)).await;
        readers.push(c);
    }
    let channel: std::sync::Arc<str> = "feed:demo".into();
    for offset in 1..=500i64 {
        let text = serde_json::json!({"type": "event", "channel": "feed:demo", "offset": offset});
        let frames = vec![Outbound {
            seq: offset,
            text: text.to_string().into(),
        }];
        app.state
            .hub
            .do_send(Publish::new(channel.clone(), frames.into()));
        if offset % 100 == 0 {
            // A pause longer than the window: the next publish goes at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for c in &mut readers {
        assert_eq!(offsets(&c.recv_n(500).await), (1..=500).collect::<Vec<_>>());
        c.expect_silence(Duration::from_millis(100)).await;
    }
}

/// The `abuse` scenario, briefly, against a hub process of its own (so that
/// the hostile clients share no runtime with the hub and its memory is its
/// own): nothing lost, duplicated or reordered for the well-behaved
/// subscribers; every slowloris connection closed by the hub; refusals over
/// the per-user limit are 429 `limit_reached`; floods get their errors and
/// are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_cost_well_behaved_subscribers_nothing() {
    // Slowloris connections are cut after 1 s instead of 10.
    let env = [("PULSEHUB_REQUEST_TIMEOUT_SECS", "1"), ("RUST_LOG", "warn")];
    let hub = HubProcess::start(&fresh_database().await, &env).await;
    let target =
        Arc::new(Target::new(&[hub.url("")], SECRET, INGEST_KEY).expect("a loopback target"));
    let opts = abuse::AbuseOpts {
        subscribers: 20,
        slowloris: 20,
        over_limit: 30, // the hub admits 20 (PULSEHUB_MAX_CONNECTIONS_PER_USER)
        never_reading: 3,
        flooders: 3,
        rate: 50.0,
        duration: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        drain: Duration::from_secs(20),
        settle: Duration::from_secs(2),
        hub_pids: vec![hub.pid() as u32],
        ..Default::default()
    };
    let report = abuse::run(target, &opts).await.expect("abuse ran");
    let t = format!("{}\nhub log:\n{}", report.table(), hub.log());

    // The well-behaved subscribers got everything, once, in order.
    let d = &report.delivery;
    assert_eq!(report.subscribed, 20, "{t}");
    assert_eq!(report.publish.stored, 150, "{t}");
    assert_eq!(d.expected, 150 * 20, "{t}");
    assert_eq!(d.delivered, d.expected, "{t}");
    assert_eq!((d.lost, d.duplicated, d.out_of_order), (0, 0, 0), "{t}");
    assert_eq!(d.disconnects, 0, "{t}");
    assert_eq!(
        (report.received_min, report.received_max),
        (150, 150),
        "{t}"
    );

    // Every slowloris connection was closed by the hub.
    let sl = &report.slowloris;
    assert!(sl.opened >= 20, "{t}");
    assert_eq!(sl.closed_by_hub, sl.opened, "{t}");
    assert_eq!(sl.never_closed, 0, "{t}");
    assert_eq!(sl.answered_other, 0, "{t}");

    // One user: its limit admitted, the rest refused with 429 limit_reached.
    let ol = &report.over_limit;
    assert_eq!(ol.max_open, 20, "{t}");
    assert!(
        ol.refused_by_status.get(&429).is_some_and(|n| *n >= 10),
        "{t}"
    );
    assert_eq!(ol.refused_by_status.len(), 1, "only 429s: {t}");
    assert_eq!(
        ol.refused_by_code.keys().collect::<Vec<_>>(),
        vec!["limit_reached"],
        "{t}"
    );
    assert_eq!(ol.failed, 0, "{t}");

    // Floods get their errors, and repeat abusers are closed with 1008.
    let fl = &report.floods;
    for code in ["bad_request", "too_large", "rate_limited"] {
        assert!(fl.errors_by_code.contains_key(code), "no {code}: {t}");
    }
    assert!(fl.closed_by_code.get(&1008).is_some_and(|n| *n > 0), "{t}");

    // What the never-reading subscribers got is a gapless prefix.
    assert_eq!(report.never_reading.subscribed, 3, "{t}");
    assert_eq!(report.never_reading.not_a_prefix, 0, "{t}");

    assert!(report.problems().is_empty(), "{t}");
}
