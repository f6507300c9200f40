//! Consuming the teams' event bus: Kafka, with seed 001's messages as they
//! are on `platform.analytics.check-in.v1`, through
//! `examples/mappings/live-dashboard.toml`. Every test runs a Kafka-API
//! broker of its own (tansu) and real hubs joining one consumer group.

use crate::helpers::*;
use pulsehub::config::Config;
use pulsehub::source::decode::MAX_MESSAGE_BYTES;
use serde_json::{json, Value};
use std::time::Duration;

const TOPIC: &str = SEED_TOPIC;

fn example_mapping() -> String {
    format!(
        "{}/examples/mappings/live-dashboard.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The hub settings that consume [`TOPIC`] from `tansu` (from the start
/// of the topic for a new group, as a test produces before it joins).
fn consume(c: &mut Config, tansu: &Tansu) {
    consume_from(c, &tansu.bootstrap());
}

fn consume_from(c: &mut Config, bootstrap: &str) {
    c.kafka_brokers = Some(bootstrap.into());
    c.kafka_topics = vec![TOPIC.into()];
    c.kafka_properties = "auto.offset.reset=earliest".into();
    c.mapping_file = Some(example_mapping());
}

/// The same for a `pulsehub` child process.
fn consume_env(tansu: &Tansu, instance: &str) -> Vec<(String, String)> {
    [
        ("PULSEHUB_KAFKA_BROKERS", tansu.bootstrap()),
        ("PULSEHUB_KAFKA_TOPICS", TOPIC.into()),
        (
            "PULSEHUB_KAFKA_PROPERTIES",
            "auto.offset.reset=earliest".into(),
        ),
        ("PULSEHUB_MAPPING_FILE", example_mapping()),
        ("PULSEHUB_INSTANCE_ID", instance.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A broker of the test's own with [`TOPIC`] (of `partitions`) and its
/// dead-letter topic.
async fn broker(partitions: i32) -> Tansu {
    let tansu = Tansu::start();
    tansu
        .create_topics(&[TOPIC, &format!("{TOPIC}.dlq")], partitions)
        .await;
    tansu
}

fn series(name: &str) -> String {
    format!("pulsehub_source_{name}_total{{source=\"kafka\",stream=\"{TOPIC}\"}}")
}

fn gauge(name: &str) -> String {
    format!("pulsehub_source_{name}{{source=\"kafka\",stream=\"{TOPIC}\"}}")
}

/// Check-ins `range` of partition `p`'s own live event (`evt_p{p}`).
fn check_ins(p: i32, range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(|i| check_in(&format!("evt_p{p}"), i)).collect()
}

/// Produces check-ins `range` to each of `partitions` partitions.
async fn produce_check_ins(tansu: &mut Tansu, partitions: i32, range: std::ops::Range<usize>) {
    let mut all = Vec::new();
    for i in range {
        for p in 0..partitions {
            all.push((
                p,
                check_in(&format!("evt_p{p}"), i).to_string().into_bytes(),
            ));
        }
    }
    tansu.produce(TOPIC, &all).await;
}

/// Each partition's feed holds exactly its `n` check-ins, in order.
async fn assert_each_stored_once_in_order(app: &TestApp, partitions: i32, n: usize) {
    for p in 0..partitions {
        let scope = format!("evt_p{p}");
        let feed = app.feed_reaches(&scope, n, "all consumed").await;
        assert_eq!(feed.len(), n, "partition {p}: nothing stored twice");
        assert_eq!(
            actors(&feed),
            users(0..n),
            "partition {p}: none lost, in partition order"
        );
    }
}

#[actix_web::test]
async fn seed_001_messages_reach_feed_and_stats_subscribers() {
    let mut tansu = broker(1).await;
    let app = spawn_with(|c| consume(c, &tansu)).await;
    app.wait_ready().await;
    let scope = "evt_191cc94a7cf1";
    let mut c = app.connect("organizer", &[scope]).await;
    c.subscribe(&format!("feed:{scope}"), None).await;
    c.subscribe(&format!("stats:{scope}"), None).await;
    c.recv_until("stats").await;

    let messages = [
        check_in(scope, 1),
        counter(scope, "MESSAGE_SENT"),
        counter(scope, "POLL_VOTE_CAST"),
        check_in(scope, 2),
        counter(scope, "QUESTION_ASKED"),
        counter(scope, "QUESTION_UPVOTED"),
        counter(scope, "REACTION_SENT"),
        counter(scope, "REACTION_SENT"),
    ];
    tansu.produce_json(TOPIC, 0, &messages).await;
    let expected = json!({"check_in": 2, "message.sent": 1, "poll.vote": 1,
        "question.asked": 1, "question.upvoted": 1, "reaction": 2});
    let events = events_until_counts(&mut c, messages.len(), &expected).await;
    let kinds: Vec<_> = events.iter().map(|f| f["event"]["kind"].clone()).collect();
    assert_eq!(
        kinds,
        [
            "check_in",
            "message.sent",
            "poll.vote",
            "check_in",
            "question.asked",
            "question.upvoted",
            "reaction",
            "reaction"
        ],
        "partition order is feed order"
    );
    assert_eq!(offsets(&events), (1..=8).collect::<Vec<_>>());
    assert_eq!(
        events[3]["event"]["actor"],
        json!({"id": "user_2", "name": "Guest 2"})
    );
    app.metric_reaches(&series("messages"), 8.0).await;
    app.metric_reaches(&gauge("partitions"), 1.0).await;
}

#[actix_web::test]
async fn two_replicas_share_the_partitions_and_store_each_message_once_in_order() {
    const PARTITIONS: i32 = 3;
    const PER_PARTITION: usize = 3334; // 10,002 messages in all
    let mut tansu = broker(PARTITIONS).await;
    let a = spawn_with(|c| {
        consume(c, &tansu);
        c.instance_id = Some("hub-a".into());
    })
    .await;
    let mut config = test_config();
    config.database_url = a.database_url.clone();
    config.instance_id = Some("hub-b".into());
    consume(&mut config, &tansu);
    let b = start_app(config).await;
    // Both in the group, the partitions split between them.
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let (pa, pb) = (
            a.metric(&gauge("partitions")).await,
            b.metric(&gauge("partitions")).await,
        );
        if pa >= 1.0 && pb >= 1.0 && pa + pb == PARTITIONS as f64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions not split: {pa} and {pb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    produce_check_ins(&mut tansu, PARTITIONS, 0..PER_PARTITION).await;
    assert_each_stored_once_in_order(&a, PARTITIONS, PER_PARTITION).await;
    let total = PARTITIONS as f64 * PER_PARTITION as f64;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (ca, cb) = (
            a.metric(&series("messages")).await,
            b.metric(&series("messages")).await,
        );
        if ca + cb >= total {
            assert!(
                ca > 0.0 && cb > 0.0,
                "both replicas consumed: {ca} and {cb}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ca} + {cb} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let duplicates = a.metric(&series("duplicates")).await + b.metric(&series("duplicates")).await;
    assert_eq!(duplicates, 0.0, "no redelivery without a failure");
}

/// A replica is SIGKILLed in the middle of its batches (events stored,
/// offsets not yet committed) and a replacement starts, as a supervisor
/// would restart it: its partitions move to the live replicas, what it had
/// stored is read again and found duplicate, nothing is lost. (tansu 0.6's
/// coordinator drops a member whose session expired without telling the
/// others to rebalance, so without the replacement its partitions would
/// stay unread until the group changes; Kafka rebalances at the expiry.)
#[actix_web::test]
async fn a_replica_killed_mid_stream_loses_nothing_and_stores_nothing_twice() {
    const PARTITIONS: i32 = 3;
    const PER_PARTITION: usize = 1000;
    let mut tansu = broker(PARTITIONS).await;
    let database_url = fresh_database().await;
    let mut env = consume_env(&tansu, "hub-killed");
    env.push(("PULSEHUB_KAFKA_BATCH".into(), "20".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let killed = HubProcess::start(&database_url, &env).await;
    let bootstrap = tansu.bootstrap();
    let replica = |name: &str| {
        let mut config = test_config();
        config.database_url = database_url.clone();
        config.instance_id = Some(name.into());
        config.kafka_batch = 20;
        consume_from(&mut config, &bootstrap);
        config
    };
    let b = start_app(replica("hub-b")).await;
    // Both in the group: b holds some partitions, hub-killed the others.
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    while !(1.0..PARTITIONS as f64).contains(&b.metric(&gauge("partitions")).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the partitions were never split"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    produce_check_ins(&mut tansu, PARTITIONS, 0..PER_PARTITION).await;
    // Kill it while it is consuming.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    while metric_at(&http, &killed.url("/metrics"), &series("messages")).await < 200.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hub-killed consumes nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(killed.pid(), libc::SIGKILL) };
    let c = start_app(replica("hub-c")).await;

    assert_each_stored_once_in_order(&b, PARTITIONS, PER_PARTITION).await;
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let (pb, pc) = (
            b.metric(&gauge("partitions")).await,
            c.metric(&gauge("partitions")).await,
        );
        if pb + pc == PARTITIONS as f64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions held by the live replicas: {pb} + {pc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let redelivered = b.metric(&series("duplicates")).await + c.metric(&series("duplicates")).await;
    eprintln!("redelivered after the kill (stored once, counted as duplicates): {redelivered}");
}

#[actix_web::test]
async fn a_broker_restart_mid_stream_is_survived_and_ready_says_so() {
    let mut tansu = broker(1).await;
    let app = spawn_with(|c| consume(c, &tansu)).await;
    app.wait_ready().await;
    tansu.produce_json(TOPIC, 0, &check_ins(0, 0..300)).await;
    app.feed_reaches("evt_p0", 300, "before the restart").await;

    tansu.stop();
    let component = format!("kafka:{TOPIC}");
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let res = app.http.get(app.url("/ready")).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        let state = body["components"][&component].as_str().unwrap_or_default();
        if state.starts_with("down") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/ready says {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tansu.restart();
    tansu.produce_json(TOPIC, 0, &check_ins(0, 300..600)).await;
    app.wait_ready().await;
    let feed = app.feed_reaches("evt_p0", 600, "after the restart").await;
    assert_eq!(
        actors(&feed),
        users(0..600),
        "none lost, none twice, in order"
    );
}

#[actix_web::test]
async fn a_restarted_hub_resumes_from_the_committed_offsets() {
    let mut tansu = broker(1).await;
    let a = spawn_with(|c| {
        consume(c, &tansu);
        c.instance_id = Some("hub-a".into());
    })
    .await;
    a.wait_ready().await;
    tansu.produce_json(TOPIC, 0, &check_ins(0, 0..50)).await;
    a.feed_reaches("evt_p0", 50, "before the restart").await;
    a.metric_reaches(&series("messages"), 50.0).await;
    a.stopper.stop().await;

    // Produced while no hub runs: waiting for the group.
    tansu.produce_json(TOPIC, 0, &check_ins(0, 50..100)).await;
    let mut config = test_config();
    config.database_url = a.database_url.clone();
    config.instance_id = Some("hub-b".into());
    consume(&mut config, &tansu);
    let b = start_app(config).await;
    let feed = b.feed_reaches("evt_p0", 100, "after the restart").await;
    assert_eq!(actors(&feed), users(0..100), "nothing lost, in order");
    b.metric_reaches(&series("messages"), 50.0).await;
    assert_eq!(
        b.metric(&series("duplicates")).await,
        0.0,
        "it went on from the offset committed at the stop"
    );

    // Another group reads the topic from the start: every message is a
    // duplicate of one stored, nothing stored or counted twice.
    let mut config = test_config();
    config.database_url = a.database_url.clone();
    consume(&mut config, &tansu);
    config.kafka_group = "pulsehub-replay".into();
    let c = start_app(config).await;
    c.metric_reaches(&series("duplicates"), 100.0).await;
    assert_eq!(c.feed("evt_p0").await.len(), 100);
    let token = c.token("reader", &["evt_p0"]);
    let (_, stats) = c.get("/api/scopes/evt_p0/stats", &token).await;
    assert_eq!(
        stats["counts"],
        json!({"check_in": 100}),
        "nothing counted twice"
    );
}

#[actix_web::test]
async fn poison_messages_are_dead_lettered_with_their_reason_and_good_ones_stored() {
    let mut tansu = broker(1).await;
    let dlq = format!("{TOPIC}.dlq");
    let app = spawn_with(|c| consume(c, &tansu)).await;
    app.wait_ready().await;
    let scope = "evt_p0";
    let mut huge = counter(scope, "MESSAGE_SENT");
    huge["pad"] = "x".repeat(MAX_MESSAGE_BYTES).into();
    let json = |v: Value| v.to_string().into_bytes();
    let messages: Vec<(i32, Vec<u8>)> = vec![
        (0, json(check_in(scope, 0))),
        (0, b"{not json".to_vec()),
        (0, json(check_in(scope, 1))),
        (0, json(json!({"type": "MESSAGE_SENT"}))),
        (0, json(counter(scope, "MESSAGE SENT!"))),
        (0, json(check_in(scope, 2))),
        (0, json(counter("bad scope", "MESSAGE_SENT"))),
        (0, json(huge)),
        (0, json(check_in(scope, 3))),
    ];
    tansu.produce(TOPIC, &messages).await;

    app.metric_reaches(&series("messages"), 9.0).await;
    assert_eq!(
        actors(&app.feed(scope).await),
        users(0..4),
        "every good one, in order"
    );
    let letters = tansu.read(&dlq, 1, 5, PATIENCE).await;
    let got: Vec<_> = letters
        .iter()
        .map(|l| {
            (
                l.headers["dlq_offset"].as_str(),
                l.headers["dlq_reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("1", "not_json"),
            ("3", "mapping"),
            ("4", "invalid"),
            ("6", "invalid"),
            ("7", "too_large")
        ],
        "each bad message once, with its reason"
    );
    for l in &letters {
        assert_eq!(l.headers["dlq_topic"], TOPIC);
        assert_eq!(l.headers["dlq_partition"], "0");
        assert_eq!(l.headers["dlq_group"], "pulsehub");
        assert!(!l.headers["dlq_error"].is_empty(), "{l:?}");
    }
    assert_eq!(
        letters[0].payload.as_deref(),
        Some("{not json"),
        "the message is kept"
    );
    assert_eq!(
        letters[1].headers["dlq_error"],
        "scope: \"/eventId\" is missing"
    );
    assert_eq!(
        letters[2].headers["dlq_error"], "kind: must match [a-z0-9_.:-]{1,64}",
        "the same message as POST /api/events"
    );
    for (reason, n) in [
        ("not_json", 1.0),
        ("mapping", 1.0),
        ("invalid", 2.0),
        ("too_large", 1.0),
    ] {
        let s = format!(
            "pulsehub_source_dead_lettered_total{{source=\"kafka\",stream=\"{TOPIC}\",reason=\"{reason}\"}}"
        );
        assert_eq!(app.metric(&s).await, n, "{reason}");
    }
}

#[actix_web::test]
async fn a_full_ingest_queue_pauses_the_partitions_until_the_batch_fits() {
    let mut tansu = broker(1).await;
    let app = spawn_with(|c| {
        consume(c, &tansu);
        c.ingest_queue = 10;
        c.kafka_batch = 5;
    })
    .await;
    app.wait_ready().await;
    app.metric_reaches(&gauge("partitions"), 1.0).await;

    let jam = app.jam_ingest().await;
    tansu.produce_json(TOPIC, 0, &check_ins(0, 0..20)).await;
    app.metric_reaches(&series("retries"), 3.0).await;
    assert_eq!(app.feed("evt_p0").await.len(), 0, "held, not stored");
    assert_eq!(
        app.metric(&series("messages")).await,
        0.0,
        "nothing acknowledged"
    );

    jam.release().await;
    let feed = app
        .feed_reaches("evt_p0", 20, "after the queue drained")
        .await;
    assert_eq!(actors(&feed), users(0..20), "nothing dropped, in order");
    app.metric_reaches(&series("messages"), 20.0).await;
}
