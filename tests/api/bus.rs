//! Consuming the teams' event bus: Redis Streams, with seed 001's messages
//! as they are, through `examples/mappings/live-dashboard.toml`. Every test
//! uses stream keys of its own on the shared Redis.

use crate::helpers::*;
use pulsehub::source::decode::MAX_MESSAGE_BYTES;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn series(name: &str, stream: &str) -> String {
    format!("pulsehub_source_{name}_total{{source=\"redis_streams\",stream=\"{stream}\"}}")
}

#[actix_web::test]
async fn seed_001_messages_reach_feed_and_stats_subscribers() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key(SEED_TOPIC);
    let app = spawn_with(|c| streams.consume(c, &stream)).await;
    app.wait_ready().await;
    let scope = "evt_191cc94a7cf1";
    let mut c = app.connect("organizer", &[scope]).await;
    c.subscribe(&format!("feed:{scope}"), None).await;
    c.subscribe(&format!("stats:{scope}"), None).await;
    c.recv_until("stats").await;

    let messages = [
        check_in(scope, 1),
        counter(scope, "MESSAGE_SENT"),
        check_in(scope, 2),
        counter(scope, "POLL_VOTE_CAST"),
        counter(scope, "QUESTION_ASKED"),
        counter(scope, "QUESTION_UPVOTED"),
        counter(scope, "REACTION_SENT"),
        counter(scope, "MESSAGE_SENT"),
        check_in(scope, 3),
    ];
    for m in &messages {
        streams.add(&stream, m).await;
    }
    let expected = json!({"check_in": 3, "message.sent": 2, "poll.vote": 1,
        "question.asked": 1, "question.upvoted": 1, "reaction": 1});
    let (mut events, mut counts) = (Vec::new(), Value::Null);
    while events.len() < messages.len() || counts != expected {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("event") => events.push(f),
            Some("stats") => counts = f["stats"]["counts"].clone(),
            _ => panic!("unexpected {f}"),
        }
    }
    let kinds: Vec<_> = events.iter().map(|f| f["event"]["kind"].clone()).collect();
    assert_eq!(
        kinds,
        [
            "check_in",
            "message.sent",
            "check_in",
            "poll.vote",
            "question.asked",
            "question.upvoted",
            "reaction",
            "message.sent",
            "check_in"
        ],
        "stream order is feed order"
    );
    assert_eq!(offsets(&events), (1..=9).collect::<Vec<_>>());
    let guests: Vec<_> = events
        .iter()
        .filter(|f| f["event"]["kind"] == "check_in")
        .map(|f| f["event"]["actor"].clone())
        .collect();
    assert_eq!(
        guests,
        (1..=3)
            .map(|i| json!({"id": format!("user_{i}"), "name": format!("Guest {i}")}))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        events[1]["event"]["data"],
        json!({"organization": "org_abc123"})
    );
    app.metric_reaches(&series("messages", &stream), 9.0).await;
}

#[actix_web::test]
async fn a_restarted_hub_resumes_from_the_group_and_redeliveries_are_duplicates() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key("bus");
    let scope = "evt_restart";
    let a = spawn_with(|c| {
        streams.consume(c, &stream);
        c.instance_id = Some("hub-a".into());
    })
    .await;
    a.wait_ready().await;
    let first: Vec<_> = (0..20).map(|i| check_in(scope, i)).collect();
    streams.add_all(&stream, &first).await;
    a.feed_reaches(scope, 20, "before the restart").await;
    a.stopper.stop().await;

    // Published while no hub runs: waiting in the group.
    let second: Vec<_> = (20..40).map(|i| check_in(scope, i)).collect();
    streams.add_all(&stream, &second).await;
    let mut config = test_config();
    config.database_url = a.database_url.clone();
    config.instance_id = Some("hub-b".into());
    streams.consume(&mut config, &stream);
    let b = start_app(config).await;
    b.wait_ready().await;
    let feed = b.feed_reaches(scope, 40, "after the restart").await;
    assert_eq!(actors(&feed), users(0..40), "nothing lost, in stream order");

    // Every entry delivered again, as after a crash before XACK.
    streams.rewind(&stream).await;
    b.metric_reaches(&series("duplicates", &stream), 40.0).await;
    assert_eq!(b.feed(scope).await.len(), 40, "nothing stored twice");
    let token = b.token("reader", &[scope]);
    let (_, stats) = b.get(&format!("/api/scopes/{scope}/stats"), &token).await;
    assert_eq!(
        stats["counts"],
        json!({"check_in": 40}),
        "nothing counted twice"
    );
    assert_eq!(
        streams.group(&stream, "pulsehub").await.0,
        0,
        "all acknowledged"
    );
}

#[actix_web::test]
async fn poison_entries_are_dead_lettered_with_their_reason_and_good_ones_stored() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key("poison");
    let scope = "evt_poison";
    let app = spawn_with(|c| streams.consume(c, &stream)).await;
    app.wait_ready().await;

    let mut bad = Vec::new();
    streams.add(&stream, &check_in(scope, 0)).await;
    let id = streams.add_fields(&stream, &[("data", b"{not json")]).await;
    bad.push((id, "not_json"));
    streams.add(&stream, &check_in(scope, 1)).await;
    let no_field = br#"{"type":"MESSAGE_SENT","eventId":"evt_poison"}"#;
    let id = streams.add_fields(&stream, &[("payload", no_field)]).await;
    bad.push((id, "no_payload"));
    let id = streams.add(&stream, &json!({"type": "MESSAGE_SENT"})).await;
    bad.push((id, "mapping"));
    streams.add(&stream, &check_in(scope, 2)).await;
    let id = streams.add(&stream, &counter(scope, "MESSAGE SENT!")).await;
    bad.push((id, "invalid"));
    let id = streams
        .add(&stream, &counter("bad scope", "MESSAGE_SENT"))
        .await;
    bad.push((id, "invalid"));
    let mut huge = counter(scope, "MESSAGE_SENT");
    huge["pad"] = "x".repeat(MAX_MESSAGE_BYTES).into();
    let id = streams.add(&stream, &huge).await;
    bad.push((id, "too_large"));
    streams.add(&stream, &check_in(scope, 3)).await;

    app.metric_reaches(&series("messages", &stream), 10.0).await;
    assert_eq!(
        actors(&app.feed(scope).await),
        users(0..4),
        "every good one, in order"
    );
    let dlq = streams.entries(&format!("{stream}.dlq")).await;
    let got: Vec<_> = dlq
        .iter()
        .map(|e| (e["dlq_id"].clone(), e["dlq_reason"].as_str()))
        .collect();
    let want: Vec<_> = bad.iter().map(|(id, r)| (id.clone(), *r)).collect();
    assert_eq!(got, want, "each bad entry once, with its reason");
    for e in &dlq {
        assert_eq!(e["dlq_stream"], stream);
        assert_eq!(e["dlq_group"], "pulsehub");
        assert!(!e["dlq_error"].is_empty(), "{e:?}");
    }
    assert_eq!(
        dlq[0]["data"], "{not json",
        "the entry's own fields are kept"
    );
    assert_eq!(dlq[1]["payload"].as_bytes(), no_field);
    assert_eq!(dlq[2]["dlq_error"], "scope: \"/eventId\" is missing");
    assert_eq!(
        dlq[3]["dlq_error"], "kind: must match [a-z0-9_.:-]{1,64}",
        "the same message as POST /api/events"
    );
    for (reason, n) in [
        ("not_json", 1.0),
        ("no_payload", 1.0),
        ("mapping", 1.0),
        ("invalid", 2.0),
        ("too_large", 1.0),
    ] {
        let s = format!(
            "pulsehub_source_dead_lettered_total{{source=\"redis_streams\",stream=\"{stream}\",reason=\"{reason}\"}}"
        );
        assert_eq!(app.metric(&s).await, n, "{reason}");
    }
    assert_eq!(
        streams.group(&stream, "pulsehub").await.0,
        0,
        "all acknowledged"
    );
}

#[actix_web::test]
async fn entries_left_pending_by_a_dead_consumer_are_claimed_and_stored_once() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key("claim");
    let scope = "evt_claim";
    streams.create_group(&stream).await;
    let messages: Vec<_> = (0..30).map(|i| check_in(scope, i)).collect();
    streams.add_all(&stream, &messages).await;
    // A replica read them all and was killed before acknowledging any...
    let ids = streams.read_and_die(&stream, "hub-dead", 100).await;
    assert_eq!(ids.len(), 30);
    // ...after committing the first 10 (with the keys their coordinates give).
    let database_url = fresh_database().await;
    let mut config = test_config();
    config.database_url = database_url.clone();
    let plain = start_app(config).await;
    let committed: Vec<_> = ids[..10]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"scope": scope, "kind": "check_in",
                   "actor": {"id": format!("user_{i}"), "name": format!("Guest {i}")},
                   "data": {"organization": "org_abc123"}, "key": format!("redis:{stream}:{id}")})
        })
        .collect();
    let (status, body) = plain.post_events(&Value::Array(committed)).await;
    assert_eq!((status, &body["accepted"]), (202, &json!(10)), "{body}");

    let mut config = test_config();
    config.database_url = database_url;
    config.instance_id = Some("hub-b".into());
    config.redis_streams_claim_idle_ms = 200;
    streams.consume(&mut config, &stream);
    let b = start_app(config).await;
    b.wait_ready().await;
    b.metric_reaches(&series("claimed", &stream), 30.0).await;
    b.metric_reaches(&series("messages", &stream), 30.0).await;
    assert_eq!(b.metric(&series("duplicates", &stream)).await, 10.0);
    assert_eq!(
        actors(&b.feed(scope).await),
        users(0..30),
        "each exactly once"
    );
    assert_eq!(
        streams.group(&stream, "pulsehub").await.0,
        0,
        "all acknowledged"
    );

    // And the replica goes on with new entries.
    let more: Vec<_> = (30..35).map(|i| check_in(scope, i)).collect();
    streams.add_all(&stream, &more).await;
    let feed = b.feed_reaches(scope, 35, "new entries").await;
    assert_eq!(actors(&feed), users(0..35));
}

#[actix_web::test]
async fn a_replica_killed_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key("kill");
    let scope = "evt_kill";
    let database_url = fresh_database().await;
    let mapping = streams.example_mapping_for(&stream);
    let redis = redis_url();
    let killed = HubProcess::start(
        &database_url,
        &[
            ("PULSEHUB_REDIS_STREAMS", stream.as_str()),
            ("PULSEHUB_REDIS_STREAMS_URL", redis.as_str()),
            ("PULSEHUB_MAPPING_FILE", mapping.as_str()),
            ("PULSEHUB_REDIS_STREAMS_BATCH", "20"),
            ("PULSEHUB_INSTANCE_ID", "hub-killed"),
        ],
    )
    .await;
    let mut config = test_config();
    config.database_url = database_url;
    config.instance_id = Some("hub-b".into());
    config.redis_streams_claim_idle_ms = 300;
    config.redis_streams_batch = 20;
    streams.consume(&mut config, &stream);
    let b = start_app(config).await;
    b.wait_ready().await;

    const N: usize = 3000;
    let messages: Vec<_> = (0..N).map(|i| check_in(scope, i)).collect();
    streams.add_all(&stream, &messages).await;
    b.feed_reaches(scope, 200, "both replicas consuming").await;
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(killed.pid(), libc::SIGKILL) };

    b.feed_reaches(scope, N, "after the kill").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while streams.group(&stream, "pulsehub").await.0 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries left pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let feed = b.feed(scope).await;
    assert_eq!(feed.len(), N, "nothing stored twice");
    let distinct: BTreeSet<_> = actors(&feed).into_iter().collect();
    assert_eq!(distinct.len(), N, "nothing lost");
}

#[actix_web::test]
async fn a_full_ingest_queue_holds_the_batch_until_it_fits() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key("backpressure");
    let scope = "evt_full";
    let app = spawn_with(|c| {
        streams.consume(c, &stream);
        c.ingest_queue = 10;
        c.redis_streams_batch = 5;
    })
    .await;
    app.wait_ready().await;

    let jam = app.jam_ingest().await;

    let messages: Vec<_> = (0..5).map(|i| check_in(scope, i)).collect();
    streams.add_all(&stream, &messages).await;
    app.metric_reaches(&series("retries", &stream), 1.0).await;
    assert_eq!(app.feed(scope).await.len(), 0);
    // The batch in hand is held (pending), the rest not read meanwhile.
    let (pending, lag) = streams.group(&stream, "pulsehub").await;
    assert!(pending > 0, "the batch is held");
    assert_eq!(pending + lag.unwrap(), 5, "nothing acknowledged");

    jam.release().await;
    let feed = app.feed_reaches(scope, 5, "after the queue drained").await;
    assert_eq!(actors(&feed), users(0..5), "nothing dropped");
    app.metric_reaches(&series("messages", &stream), 5.0).await;
    assert_eq!(streams.group(&stream, "pulsehub").await.0, 0);
}

#[actix_web::test]
async fn ready_names_a_stream_whose_redis_is_down_and_consumption_resumes() {
    let streams = TestStreams::new().await;
    let stream = streams.key("down");
    let scope = "evt_down";
    let port = free_port();
    let app = spawn_with(|c| {
        streams.consume(c, &stream);
        c.redis_streams_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis_streams_start = pulsehub::config::StreamStart::All;
    })
    .await;
    let res = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    let component = format!("redis_streams:{stream}");
    let status = body["components"][&component].as_str().unwrap_or_default();
    assert!(status.starts_with("down"), "{body}");
    assert_eq!(body["components"]["postgres"], "up", "{body}");

    // The Redis comes up: the consumer connects by itself.
    let private = PrivateRedis::start_on(port);
    let mut conn = redis::Client::open(private.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::AsyncCommands::xadd(
        &mut conn,
        &stream,
        "*",
        &[("data", check_in(scope, 0).to_string())],
    )
    .await
    .unwrap();
    app.wait_ready().await;
    let feed = app.feed_reaches(scope, 1, "after Redis came up").await;
    assert_eq!(actors(&feed), users(0..1));
}

#[actix_web::test]
async fn with_field_star_an_entrys_own_fields_are_the_message() {
    let mut streams = TestStreams::new().await;
    let stream = streams.key("flat");
    let scope = "evt_flat";
    let app = spawn_with(|c| {
        streams.consume(c, &stream);
        c.redis_streams_field = "*".into();
    })
    .await;
    app.wait_ready().await;
    streams
        .add_fields(
            &stream,
            &[("type", b"QUESTION_ASKED"), ("eventId", scope.as_bytes())],
        )
        .await;
    let feed = app.feed_reaches(scope, 1, "a flat entry").await;
    assert_eq!(feed[0]["event"]["kind"], "question.asked");
}
