//! Connection-level abuse: too many connections from one user, and clients
//! that trickle a request (slowloris) to hold connections open.

use crate::helpers::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn metric(app: &TestApp, name: &str) -> String {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// Waits (up to [`PATIENCE`]) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_user_over_the_connection_limit_gets_429_before_the_upgrade() {
    let app = spawn_with(|c| c.max_connections_per_user = 3).await;
    let token = app.token("alice", &["demo"]);

    // Ten handshakes race for three slots: exactly three win.
    let attempts = join_all((0..10).map(|_| app.try_connect(&token, &[]))).await;
    let (open, refused): (Vec<_>, Vec<_>) = attempts.into_iter().partition(Result::is_ok);
    assert_eq!(open.len(), 3, "connections admitted");
    assert!(
        refused.iter().all(|r| r.as_ref().err() == Some(&429)),
        "{:?}",
        refused.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
    );
    let (status, body) = app.handshake(&format!("?token={token}"), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached", "{body}");
    assert_eq!(
        metric(&app, "pulsehub_connections_refused_total").await,
        "8"
    );
    assert_eq!(app.state.connections.held("alice"), 3);

    // The admitted connections and other users work as usual.
    let mut open: Vec<WsClient> = open.into_iter().map(Result::unwrap).collect();
    let mut bob = app.connect("bob", &["demo"]).await;
    for c in open.iter_mut().chain([&mut bob]) {
        c.subscribe("feed:demo", Some(0)).await;
    }
    let (status, body) = app.post_events(&events("demo", "limit", 1)).await;
    assert_eq!(status, 202, "{body}");
    for c in open.iter_mut().chain([&mut bob]) {
        let f = c.recv().await;
        assert_eq!(
            (f["type"].as_str(), f["offset"].as_i64()),
            (Some("event"), Some(1)),
            "{f}"
        );
    }

    // Closing a connection gives its slot back.
    let mut first = open.remove(0);
    first.stream.close(None).await.unwrap();
    let connections = app.state.connections.clone();
    eventually("alice's slot given back", || connections.held("alice") == 2).await;
    let again = app.try_connect(&token, &[]).await;
    assert!(
        again.is_ok(),
        "refused after a slot was freed: {:?}",
        again.err()
    );

    // Nothing is left behind once everyone is gone, however they left.
    drop((open, again, bob));
    eventually("every slot given back", || connections.users() == 0).await;
}

/// Starts a request and sends one more byte of its head every 100 ms, never
/// finishing it; returns what the server answered once it closed the
/// connection. Panics if the server keeps the connection open past
/// `give_up`.
async fn trickle(port: u16, head: String, give_up: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + give_up;
    loop {
        assert!(
            Instant::now() < deadline,
            "the server kept a trickling request open for {give_up:?}"
        );
        if s.write_all(b"x").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read_buf(&mut answer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn slow_handshakes_are_cut_off_and_do_not_block_others() {
    let app = spawn_with(|c| c.request_timeout_secs = 1).await;
    let token = app.token("alice", &["demo"]);
    let head = format!("GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    // Configured: 1 s. actix-web's own default (5 s) would not pass.
    let give_up = Duration::from_secs(4);
    let slow: Vec<_> = (0..50)
        .map(|_| actix_web::rt::spawn(trickle(app.port, head.clone(), give_up)))
        .collect();

    // While fifty handshakes trickle in, a normal client connects and gets
    // its events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut alice = app.connect("alice", &["demo"]).await;
    alice.subscribe("feed:demo", Some(0)).await;
    let (status, body) = app.post_events(&events("demo", "slow", 3)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(offsets(&alice.recv_n(3).await), vec![1, 2, 3]);

    for answer in join_all(slow).await {
        let answer = answer.unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a trickling handshake got: {answer}"
        );
    }
    // The hub is still fine.
    let r = alice.command(json!({"type": "ping"})).await;
    assert_eq!(alice.recv().await, json!({"type": "pong", "ref": r}));
}

#[actix_web::test]
async fn a_body_that_never_arrives_gets_408_and_stores_nothing() {
    let app = spawn_with(|c| c.request_timeout_secs = 1).await;
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {INGEST_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"scope\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while !String::from_utf8_lossy(&answer).contains("}}") {
            if s.read_buf(&mut answer).await.unwrap() == 0 {
                break;
            }
        }
    })
    .await
    .expect("an answer while the body is missing");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..])
        .unwrap_or_else(|e| panic!("JSON body ({e}): {answer}"));
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_nothing_stored(&app).await;
}
