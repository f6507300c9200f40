//! Replicas on a Redis Cluster of the test's own (3 masters, 3 replicas):
//! sharded fan-out with nothing lost, and a master killed mid-stream.

use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Two replicas on `cluster` (`hub-a`, `hub-b`), through its seed nodes.
async fn replicas_on(cluster: &RedisCluster) -> Vec<TestApp> {
    let seeds = cluster.seeds();
    spawn_cluster(2, move |c| {
        c.redis_url = None;
        c.redis_cluster_nodes = seeds.clone();
    })
    .await
}

/// The Redis channel that carries `channel` for the replicas of `app`.
fn redis_channel(app: &TestApp, channel: &str) -> String {
    format!("{}:c:{channel}", app.state.config.redis_prefix)
}

/// Scopes whose feed channels live on `masters` distinct masters, with
/// their masters' ports.
fn scopes_on_distinct_masters(
    app: &TestApp,
    cluster: &RedisCluster,
    masters: usize,
) -> Vec<(String, u16)> {
    let mut picked: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let scope = format!("shard{i}");
        let port = cluster.master_of(&redis_channel(app, &format!("feed:{scope}")));
        if !picked.iter().any(|(_, p)| *p == port) {
            picked.push((scope, port));
        }
        if picked.len() == masters {
            break;
        }
    }
    picked
}

/// Reads event frames until each channel's last offset is `last[channel]`;
/// returns the offsets seen per channel, in arrival order, and the other
/// frames read meanwhile.
async fn read_feeds(
    c: &mut WsClient,
    last: &BTreeMap<String, i64>,
) -> (BTreeMap<String, Vec<i64>>, Vec<Value>) {
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut others = Vec::new();
    let done = |seen: &BTreeMap<String, Vec<i64>>| {
        last.iter()
            .all(|(ch, n)| seen.get(ch).and_then(|o| o.last()) == Some(n))
    };
    while !done(&seen) {
        let Some(f) = c.try_recv(PATIENCE).await else {
            panic!("stalled: expected last offsets {last:?}, got {seen:?}");
        };
        if f["type"] == "event" {
            let channel = f["channel"].as_str().unwrap().to_string();
            let offset = f["offset"].as_i64().unwrap();
            seen.entry(channel).or_default().push(offset);
        } else {
            others.push(f);
        }
    }
    (seen, others)
}

#[actix_web::test]
async fn fan_out_spreads_over_the_shards_and_loses_nothing() {
    let cluster = RedisCluster::start();
    let apps = replicas_on(&cluster).await;
    let (a, b) = (&apps[0], &apps[1]);
    // One scope per master, so every shard carries a feed.
    let scopes = scopes_on_distinct_masters(a, &cluster, 3);
    let names: Vec<&str> = scopes.iter().map(|(s, _)| s.as_str()).collect();
    let mut on_a = a.connect("alice", &names).await;
    let mut on_b = b.connect("bob", &names).await;
    for (scope, _) in &scopes {
        on_a.subscribe(&format!("feed:{scope}"), None).await;
        on_b.subscribe(&format!("feed:{scope}"), None).await;
    }
    // Stats of the first scope on B: a claim and commit notices over the cluster.
    on_b.subscribe(&format!("stats:{}", scopes[0].0), None)
        .await;

    // Both replicas' subscriptions reach each feed's master.
    let deadline = Instant::now() + PATIENCE;
    let stats = redis_channel(b, &format!("stats:{}", scopes[0].0));
    while !scopes.iter().all(|(scope, _)| {
        cluster.shard_subscribers(&redis_channel(a, &format!("feed:{scope}"))) == 2
    }) || cluster.shard_subscribers(&stats) != 1
    {
        assert!(
            Instant::now() < deadline,
            "subscriptions never reached their masters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each sits on its own master only, by sharded pub/sub (nothing on
    // classic pub/sub).
    for (scope, port) in &scopes {
        for (other, other_port) in &scopes {
            if other_port != port {
                assert!(
                    !cluster
                        .shard_channels(*port)
                        .contains(&redis_channel(a, &format!("feed:{other}"))),
                    "feed:{other} subscribed on {port}, not its master {other_port}"
                );
            }
        }
        assert!(cluster.classic_channels(*port).is_empty(), "{scope}");
    }

    // Both replicas ingest into every scope, interleaved.
    let per_scope = 40;
    for round in 0..(per_scope / 5) {
        for (i, (scope, _)) in scopes.iter().enumerate() {
            let app = if (round + i) % 2 == 0 { a } else { b };
            let (status, body) = app
                .post_events(&events(scope, &format!("r{round}"), 5))
                .await;
            assert_eq!(
                (status, body["accepted"].as_i64()),
                (202, Some(5)),
                "{body}"
            );
        }
    }
    let last: BTreeMap<String, i64> = scopes
        .iter()
        .map(|(s, _)| (format!("feed:{s}"), per_scope as i64))
        .collect();
    let mut skipped = Vec::new();
    for c in [&mut on_a, &mut on_b] {
        let (seen, others) = read_feeds(c, &last).await;
        skipped = others;
        for (channel, offsets) in &seen {
            assert_eq!(
                offsets,
                &(1..=per_scope as i64).collect::<Vec<_>>(),
                "{channel}: all, once, in order"
            );
        }
    }
    // Half of each feed came from the other replica, through its shard.
    for app in [a, b] {
        assert!(
            app.metric("pulsehub_stage_seconds_count{stage=\"relay\"}")
                .await
                >= 1.0
        );
    }
    // Stats on B reach the exact total (maybe already, among the frames
    // read with the feeds).
    let total =
        |f: &Value| f["type"] == "stats" && f["stats"]["counts"]["message.sent"] == per_scope;
    if !skipped.iter().any(total) {
        loop {
            let Some(f) = on_b.try_recv(PATIENCE).await else {
                panic!("stats never reached {per_scope}");
            };
            if total(&f) {
                break;
            }
        }
    }

    // Presence is one view across the replicas (gossip over the cluster).
    let scope = scopes[1].0.as_str();
    let mut watcher = a.connect("watcher", &[scope]).await;
    watcher.subscribe(&format!("presence:{scope}"), None).await;
    watcher.recv().await;
    let mut carol = b.connect("carol", &[scope]).await;
    carol.subscribe(&format!("presence:{scope}"), None).await;
    recv_join(&mut watcher, "carol").await;
    for c in [&mut on_a, &mut on_b] {
        no_more_events(c, Duration::from_millis(300)).await;
    }
}

/// Presence frames until `user` joins.
async fn recv_join(c: &mut WsClient, user: &str) {
    loop {
        let Some(f) = c.try_recv(PATIENCE).await else {
            panic!("{user} never joined");
        };
        if f["op"] == "join" && f["user"]["id"] == user {
            return;
        }
    }
}

/// No event frame (a duplicate) arrives for `wait`.
async fn no_more_events(c: &mut WsClient, wait: Duration) {
    let deadline = Instant::now() + wait;
    while let Some(f) = c
        .try_recv(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(f["type"], "event", "an event after the last: {f}");
    }
}

#[actix_web::test]
async fn a_master_killed_mid_stream_fails_over_and_nothing_is_lost() {
    let mut cluster = RedisCluster::start();
    let apps = replicas_on(&cluster).await;
    let (a, b) = (&apps[0], &apps[1]);
    // The scope's feed on the master that also carries the gossip channel:
    // its failover takes fan-out and presence down together.
    let gossip_master = cluster.master_of(&format!("{}:gossip", a.state.config.redis_prefix));
    let scope = (0..)
        .map(|i| format!("failover{i}"))
        .find(|s| cluster.master_of(&redis_channel(a, &format!("feed:{s}"))) == gossip_master)
        .unwrap();
    let mut c = b.connect("bob", &[&scope]).await;
    c.subscribe(&format!("feed:{scope}"), None).await;
    let mut watcher = a.connect("watcher", &[&scope]).await;
    watcher.subscribe(&format!("presence:{scope}"), None).await;
    watcher.recv().await;

    // A steady stream into A; B's client reads it live.
    let posted = std::cell::Cell::new(0i64);
    let post = |n: usize| {
        let body = events(&scope, &format!("p{}", posted.get()), n);
        posted.set(posted.get() + n as i64);
        async move {
            let (status, reply) = a.post_events(&body).await;
            assert_eq!(
                (status, reply["accepted"].as_i64()),
                (202, Some(n as i64)),
                "{reply}"
            );
        }
    };
    for _ in 0..10 {
        post(5).await;
    }
    let before: Vec<i64> = offsets(&recv_events(&mut c, 50).await);
    assert_eq!(before, (1..=50).collect::<Vec<_>>());

    // SIGKILL the master mid-stream; keep posting (every post is
    // acknowledged: PostgreSQL has it) until its replica is promoted, then
    // a little longer.
    cluster.kill(gossip_master);
    let killed = Instant::now();
    // Readiness names the broker at once; ingest goes on (PostgreSQL has it).
    loop {
        let res = a.http.get(a.url("/ready")).send().await.unwrap();
        if res.status() == 503 {
            let body: Value = res.json().await.unwrap();
            let redis = body["components"]["redis"].as_str().unwrap_or_default();
            assert!(redis.starts_with("down"), "{body}");
            break;
        }
        assert!(
            killed.elapsed() < PATIENCE,
            "/ready never reported the broker down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = cluster.wait_failover(gossip_master);
    tokio::pin!(failover);
    let mut promoted = None;
    // B's client reads all along: what arrives after the kill, and when the
    // first of it did (delivery resumed).
    let mut after: Vec<i64> = Vec::new();
    let mut resumed = None;
    loop {
        tokio::select! {
            () = &mut failover, if promoted.is_none() => {
                promoted = Some(killed.elapsed());
            }
            f = c.try_recv(PATIENCE) => {
                let f = f.expect("frames again after the failover");
                if f["type"] == "event" {
                    resumed.get_or_insert_with(|| killed.elapsed());
                    after.push(f["offset"].as_i64().unwrap());
                }
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                post(5).await;
                if promoted.is_some_and(|p| killed.elapsed() > p + Duration::from_secs(1)) {
                    break;
                }
            }
        }
    }
    let total = posted.get();
    // B's client gets every acknowledged event once, in order, by itself.
    let missing = (total - 50) as usize - after.len();
    after.extend(offsets(&recv_events(&mut c, missing).await));
    let all = killed.elapsed();
    assert_eq!(after, (51..=total).collect::<Vec<_>>());
    c.expect_silence(Duration::from_millis(300)).await;
    a.wait_ready().await;
    b.wait_ready().await;
    println!(
        "failover: replica promoted {:?} after kill -9, delivery on the other replica resumed {:?} after it; all {total} events (posted every 50 ms) delivered {all:?} after it",
        promoted.unwrap_or_default(),
        resumed.unwrap_or_default()
    );

    // Live fan-out and presence across the replicas work on the new master.
    post(2).await;
    assert_eq!(
        offsets(&recv_events(&mut c, 2).await),
        vec![total + 1, total + 2]
    );
    let mut dave = b.connect("dave", &[&scope]).await;
    dave.subscribe(&format!("presence:{scope}"), None).await;
    recv_join(&mut watcher, "dave").await;
}

#[actix_web::test]
async fn a_slot_moved_under_a_subscription_is_followed() {
    let cluster = RedisCluster::start();
    let apps = replicas_on(&cluster).await;
    let (a, b) = (&apps[0], &apps[1]);
    let scope = "moving";
    let channel = redis_channel(a, &format!("feed:{scope}"));
    let from = cluster.master_of(&channel);
    let to = *cluster
        .slot_map()
        .masters()
        .iter()
        .map(|n| &n.port)
        .find(|p| **p != from)
        .unwrap();
    let mut c = b.connect("bob", &[scope]).await;
    c.subscribe(&format!("feed:{scope}"), None).await;
    let deadline = Instant::now() + PATIENCE;
    while cluster.shard_subscribers_at(from, &channel) != 1 {
        assert!(Instant::now() < deadline, "B never subscribed at {from}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.post_events(&events(scope, "before", 10)).await.0, 202);
    assert_eq!(
        offsets(&recv_events(&mut c, 10).await),
        (1..=10).collect::<Vec<_>>()
    );

    // Resharding moves the channel's slot to another master while events
    // keep coming: the old owner ends B's subscription, A's writes to it
    // are answered MOVED.
    cluster.move_slot(
        pulsehub::broker::redis::slots::key_slot(channel.as_bytes()),
        from,
        to,
    );
    let moved = Instant::now();
    for i in 0..20 {
        assert_eq!(
            a.post_events(&events(scope, &format!("during{i}"), 2))
                .await
                .0,
            202
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = offsets(&recv_events(&mut c, 40).await);
    assert_eq!(got, (11..=50).collect::<Vec<_>>(), "all, once, in order");
    c.expect_silence(Duration::from_millis(300)).await;
    // B now listens at the new owner, and not at the old one.
    assert_eq!(cluster.shard_subscribers_at(to, &channel), 1);
    assert!(!cluster.shard_channels(from).contains(&channel));
    println!(
        "slot moved: all 50 events delivered {:?} after the move",
        moved.elapsed()
    );
    a.wait_ready().await;
    b.wait_ready().await;
}

/// The next `n` event frames, skipping others.
async fn recv_events(c: &mut WsClient, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let f = c.recv().await;
        if f["type"] == "event" {
            out.push(f);
        }
    }
    out
}
