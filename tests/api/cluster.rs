//! Several replicas behind one Redis: fan-out, presence, stopping and
//! killing replicas, and Redis going away.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Reads `n` frames of `kind`, skipping others.
async fn recv_kind(c: &mut WsClient, kind: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = c.recv().await;
        if f["type"] == kind {
            out.push(f);
        }
    }
    out
}

#[actix_web::test]
async fn an_event_ingested_on_one_replica_reaches_the_other() {
    let apps = spawn_cluster(2, |_| {}).await;
    let (a, b) = (&apps[0], &apps[1]);
    let mut on_b = b.connect("bob", &["demo"]).await;
    on_b.subscribe("feed:demo", None).await;
    on_b.subscribe("stats:demo", None).await;
    assert_eq!(on_b.recv().await["type"], "stats");
    let mut on_a = a.connect("alice", &["demo"]).await;
    on_a.subscribe("feed:demo", None).await;

    assert_eq!(a.post_events(&events("demo", "x", 5)).await.0, 202);
    assert_eq!(b.post_events(&events("demo", "y", 5)).await.0, 202);
    for c in [&mut on_a, &mut on_b] {
        let got = recv_kind(c, "event", 10).await;
        assert_eq!(offsets(&got), (1..=10).collect::<Vec<_>>());
    }
    // Each replica timed its publishes and the other's relayed frames.
    for app in [a, b] {
        for stage in ["publish", "relay"] {
            let n = app
                .metric(&format!(
                    r#"pulsehub_stage_seconds_count{{stage="{stage}"}}"#
                ))
                .await;
            assert!(n >= 1.0, "stage {stage}: {n}");
        }
    }
    // Stats on B reach the exact total, though half the events came through A.
    loop {
        let f = on_b.recv().await;
        if f["type"] == "stats" && f["stats"]["counts"]["message.sent"] == 10 {
            break;
        }
    }
    // A notification posted to B reaches a user connected to A.
    on_a.subscribe("user:alice", None).await;
    let (status, _) = b
        .post_notification(&json!({"target": "user:alice", "level": "info", "title": "hi"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        recv_kind(&mut on_a, "notification", 1).await[0]["channel"],
        "user:alice"
    );
}

#[actix_web::test]
async fn presence_is_one_view_across_replicas() {
    let apps = spawn_cluster(2, |_| {}).await;
    let (a, b) = (&apps[0], &apps[1]);
    let mut watcher = a.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    watcher.recv().await;

    // Bob on B appears on A.
    let mut bob = b.connect("bob", &["demo"]).await;
    bob.subscribe("presence:demo", None).await;
    let sync = bob.recv().await;
    let join = watcher.recv().await;
    assert_eq!(
        (
            join["op"].as_str(),
            join["user"]["id"].as_str(),
            join["count"].as_i64()
        ),
        (Some("join"), Some("bob"), Some(2))
    );

    // Alice with a tab on each replica is one user with two sessions.
    let mut tab_a = a.connect("alice", &["demo"]).await;
    tab_a.subscribe("feed:demo", None).await;
    let join = watcher.recv().await;
    assert_eq!(
        (
            join["op"].as_str(),
            join["user"]["id"].as_str(),
            join["count"].as_i64()
        ),
        (Some("join"), Some("alice"), Some(3))
    );
    let mut tab_b = b.connect("alice", &["demo"]).await;
    tab_b.subscribe("feed:demo", None).await;
    let update = watcher.recv().await;
    assert_eq!(
        (
            update["op"].as_str(),
            update["user"]["sessions"].as_i64(),
            update["count"].as_i64()
        ),
        (Some("update"), Some(2), Some(3))
    );

    // Both replicas answer the same over HTTP, and in stats.
    let token = a.token("x", &["demo"]);
    for app in [a, b] {
        let (_, body) = app.get("/api/scopes/demo/presence", &token).await;
        assert_eq!(body["count"], 3, "{body}");
        let alice = body["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == "alice")
            .cloned()
            .unwrap();
        assert_eq!(alice["sessions"], 2);
        let (_, stats) = app.get("/api/scopes/demo/stats", &token).await;
        assert_eq!(stats["online_users"], 3, "{stats}");
    }

    // Closing the tab on A is not a leave: she is still on B.
    drop(tab_a);
    let update = watcher.recv().await;
    assert_eq!(
        (update["op"].as_str(), update["user"]["sessions"].as_i64()),
        (Some("update"), Some(1))
    );
    watcher.expect_silence(Duration::from_millis(800)).await;
    // Closing the last one (on the other replica) is.
    drop(tab_b);
    let (leave, _) = loop {
        let f = watcher.recv().await;
        if f["op"] == "leave" {
            break (f, ());
        }
    };
    assert_eq!(
        (leave["user"]["id"].as_str(), leave["count"].as_i64()),
        (Some("alice"), Some(2))
    );
    drop((bob, sync));
}

#[actix_web::test]
async fn a_stopping_replica_hands_its_clients_over_without_loss() {
    let apps = spawn_cluster(2, |_| {}).await;
    let (a, b) = (&apps[0], &apps[1]);
    let mut c = a.connect("alice", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    assert_eq!(b.post_events(&events("demo", "before", 10)).await.0, 202);
    let seen = recv_kind(&mut c, "event", 10).await;
    let last = seen.last().unwrap()["offset"].as_i64().unwrap();

    // Events keep coming through B while A stops.
    let stop = a.stopper.clone();
    let writer = async {
        for i in 0..10 {
            assert_eq!(
                b.post_events(&events("demo", &format!("during{i}"), 5))
                    .await
                    .0,
                202
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        stop.stop().await;
    };
    let ((), (), code) = futures_util::join!(writer, stopping, async {
        // Whatever A still sends before closing counts as seen.
        let mut last = last;
        loop {
            use futures_util::StreamExt;
            use tokio_tungstenite::tungstenite::Message;
            match tokio::time::timeout(PATIENCE, c.stream.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Text(t))) => {
                    let f: Value = serde_json::from_str(&t).unwrap();
                    if f["type"] == "event" {
                        assert_eq!(f["offset"].as_i64().unwrap(), last + 1);
                        last += 1;
                    }
                }
                Some(Ok(Message::Close(frame))) => break (frame.map(|f| u16::from(f.code)), last),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    });
    let (code, last) = code;
    assert_eq!(code, Some(1001));
    // Reconnect to B with `since`: exactly what was missed, then live.
    let mut c = b.connect("alice", &["demo"]).await;
    let sub = c.subscribe("feed:demo", Some(last)).await;
    assert_eq!(sub["recovered"], true);
    let missing = (sub["offset"].as_i64().unwrap() - last) as usize;
    let got = recv_kind(&mut c, "event", missing).await;
    assert_eq!(offsets(&got), ((last + 1)..=60).collect::<Vec<_>>());
}

#[actix_web::test]
async fn a_killed_replicas_users_leave_within_30_seconds() {
    let apps = spawn_cluster(1, |_| {}).await;
    let b = &apps[0];
    let mut watcher = b.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    watcher.recv().await;
    // Replica A is a process of its own, on the same database and Redis.
    let prefix = b.state.config.redis_prefix.clone();
    let redis = redis_url();
    let a = HubProcess::start(
        &b.database_url,
        &[
            ("REDIS_URL", &redis),
            ("PULSEHUB_REDIS_PREFIX", &prefix),
            ("PULSEHUB_INSTANCE_ID", "hub-killed"),
        ],
    )
    .await;
    let mut alice = connect_at(a.port, &b.token("alice", &["demo"])).await;
    alice.subscribe("presence:demo", None).await;
    let join = recv_until_op(&mut watcher, "join").await;
    assert_eq!(join["user"]["id"], "alice");

    unsafe {
        libc::kill(a.pid(), libc::SIGKILL);
    }
    let killed = Instant::now();
    let leave = tokio::time::timeout(
        Duration::from_secs(30),
        recv_until_op(&mut watcher, "leave"),
    )
    .await
    .expect("alice left within 30 s");
    assert_eq!(
        (leave["user"]["id"].as_str(), leave["count"].as_i64()),
        (Some("alice"), Some(1))
    );
    println!("presence converged {:?} after kill -9", killed.elapsed());
    drop(alice);
}

async fn recv_until_op(c: &mut WsClient, op: &str) -> Value {
    loop {
        let f = c
            .try_recv(Duration::from_secs(40))
            .await
            .expect("a presence frame");
        if f["op"] == op {
            return f;
        }
    }
}

#[actix_web::test]
async fn redis_outage_loses_nothing_and_heals_itself() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let apps = spawn_cluster(2, |c| c.redis_url = Some(url.clone())).await;
    let (a, b) = (&apps[0], &apps[1]);
    let mut c = b.connect("bob", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    assert_eq!(a.post_events(&events("demo", "up", 3)).await.0, 202);
    assert_eq!(offsets(&recv_kind(&mut c, "event", 3).await), vec![1, 2, 3]);

    redis.stop();
    // Readiness says Redis is down; ingest still commits.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let res = a.http.get(a.url("/ready")).send().await.unwrap();
        if res.status() == 503 {
            let body: Value = res.json().await.unwrap();
            assert!(
                body["components"]["redis"]
                    .as_str()
                    .unwrap()
                    .starts_with("down"),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never reported redis down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..4 {
        let (status, body) = a.post_events(&events("demo", &format!("down{i}"), 5)).await;
        assert_eq!(
            (status, body["accepted"].as_i64()),
            (202, Some(5)),
            "{body}"
        );
    }
    // Local clients of A keep getting A's events meanwhile.
    let mut on_a = a.connect("alice", &["demo"]).await;
    on_a.subscribe("feed:demo", Some(3)).await;
    assert_eq!(
        offsets(&recv_kind(&mut on_a, "event", 20).await),
        (4..=23).collect::<Vec<_>>()
    );

    let back = Instant::now();
    redis.restart();
    // Without any new event, B's client receives what it missed, in order.
    let got = recv_kind(&mut c, "event", 20).await;
    println!(
        "delivery resumed {:?} after redis came back",
        back.elapsed()
    );
    assert_eq!(offsets(&got), (4..=23).collect::<Vec<_>>());
    a.wait_ready().await;
    b.wait_ready().await;
    // And live fan-out works again.
    assert_eq!(a.post_events(&events("demo", "again", 2)).await.0, 202);
    assert_eq!(offsets(&recv_kind(&mut c, "event", 2).await), vec![24, 25]);
    c.expect_silence(Duration::from_millis(300)).await;
}

/// nginx in front of the replicas, from the project's template.
pub struct Nginx {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too (a
        // killed master leaves an orphaned worker behind).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

pub fn start_nginx(upstreams: &[u16]) -> Nginx {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pulsehub-nginx-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx.conf.tmpl"
    ))
    .unwrap();
    let servers: String = upstreams
        .iter()
        .map(|p| format!("server 127.0.0.1:{p}; "))
        .collect();
    let conf = template
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@PREFIX@", dir.to_str().unwrap())
        .replace("@UPSTREAMS@", &servers);
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists())
        .unwrap_or("nginx");
    let child = std::process::Command::new(bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .spawn()
        .expect("nginx must be installed (scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { child, port }
}

#[actix_web::test]
async fn behind_nginx_every_client_sees_everything() {
    let apps = spawn_cluster(2, |_| {}).await;
    let lb = start_nginx(&[apps[0].port, apps[1].port]);
    let token = apps[0].token("alice", &["demo"]);
    // Clients spread over both replicas through the load balancer.
    let mut clients = Vec::new();
    let mut instances = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", lb.port);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws through nginx");
        let mut c = WsClient::from_stream(stream);
        let welcome = c.recv().await;
        instances.insert(welcome["instance"].as_str().unwrap().to_string());
        c.subscribe("feed:demo", None).await;
        clients.push(c);
    }
    assert_eq!(
        instances.into_iter().collect::<Vec<_>>(),
        ["hub-a", "hub-b"]
    );
    // Events ingested through the load balancer reach every client once, in order.
    let http = reqwest::Client::new();
    for i in 0..5 {
        let res = http
            .post(format!("http://127.0.0.1:{}/api/events", lb.port))
            .bearer_auth(INGEST_KEY)
            .json(&events("demo", &format!("lb{i}"), 4))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    for c in &mut clients {
        assert_eq!(
            offsets(&recv_kind(c, "event", 20).await),
            (1..=20).collect::<Vec<_>>()
        );
    }
    // Presence through the load balancer: one user, four sessions.
    let res = http
        .get(format!(
            "http://127.0.0.1:{}/api/scopes/demo/presence",
            lb.port
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (
            body["count"].as_i64(),
            body["users"][0]["sessions"].as_i64()
        ),
        (Some(1), Some(4)),
        "{body}"
    );
}

#[actix_web::test]
async fn a_stats_version_means_the_same_numbers_on_every_replica() {
    let apps = spawn_cluster(2, |_| {}).await;
    let mut watchers = Vec::new();
    for app in &apps {
        let mut c = app.connect("alice", &["demo"]).await;
        c.subscribe("stats:demo", None).await;
        c.recv().await;
        watchers.push(c);
    }
    // Both replicas ingest, both replicas' clients watch.
    for i in 0..10 {
        let app = &apps[i % 2];
        assert_eq!(
            app.post_events(&events("demo", &format!("s{i}"), 10))
                .await
                .0,
            202
        );
    }
    let mut seen: Vec<std::collections::BTreeMap<i64, Value>> = Vec::new();
    for c in &mut watchers {
        let mut versions = std::collections::BTreeMap::new();
        loop {
            let f = c.recv().await;
            if f["type"] != "stats" {
                continue;
            }
            let done = f["stats"]["counts"]["message.sent"] == 100;
            versions.insert(f["version"].as_i64().unwrap(), f["stats"].clone());
            if done {
                break;
            }
        }
        seen.push(versions);
    }
    // A version means one set of numbers wherever it is seen, and both
    // replicas' clients end on the same snapshot.
    for (v, stats) in &seen[0] {
        if let Some(other) = seen[1].get(v) {
            assert_eq!(stats, other, "version {v} differs between replicas");
        }
    }
    let last = |m: &std::collections::BTreeMap<i64, Value>| m.iter().next_back().map(|(v, _)| *v);
    assert_eq!(last(&seen[0]), last(&seen[1]));
}
