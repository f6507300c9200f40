//! Connection-level limits and abuse: too many connections from one user
//! (on one replica, and across replicas through Redis, including a replica
//! that dies, and on a Redis Cluster), from one address (with and without a trusted proxy), or on
//! one replica in all; the socket send buffer cap; and clients that
//! trickle a request (slowloris) to hold connections open.

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

/// The handshake's status, `Retry-After` and JSON body, with extra headers.
async fn refusal(port: u16, token: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/ws?token={token}"));
    for (name, value) in pulsehub_loadtest::raw::UPGRADE_HEADERS
        .iter()
        .chain(headers)
    {
        req = req.header(*name, *value);
    }
    let res = req.send().await.expect("handshake request");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

/// A refusal's status, error code and a phrase of its message.
fn assert_refused(status: u16, body: &Value, want: u16, code: &str, says: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(says),
        "{body}"
    );
}

/// Connects with `token` on `port` until it is admitted (each refusal must
/// be a 429), within [`PATIENCE`] + `extra`.
async fn admitted_eventually(port: u16, token: &str, extra: Duration) -> WsClient {
    let deadline = Instant::now() + PATIENCE + extra;
    loop {
        match try_connect_at(port, token).await {
            Ok(c) => return c,
            Err(status) => assert_eq!(status, 429),
        }
        assert!(Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn try_connect_at(port: u16, token: &str) -> Result<WsClient, u16> {
    let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
    match tokio_tungstenite::connect_async(url).await {
        Ok((stream, _)) => {
            let mut c = WsClient::from_stream(stream);
            assert_eq!(c.recv().await["type"], "welcome");
            Ok(c)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

/// Members of `user`'s connection set in the shared Redis.
async fn counted_in_redis(prefix: &str, user: &str) -> usize {
    counted_at(&redis_url(), prefix, user).await
}

/// Members of `user`'s connection set in the Redis at `url`.
async fn counted_at(url: &str, prefix: &str, user: &str) -> usize {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZCARD")
        .arg(format!("{prefix}:conns:{user}"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_per_user_limit_holds_across_replicas_through_redis() {
    let apps = spawn_cluster(2, |c| c.max_connections_per_user = 3).await;
    let (a, b) = (&apps[0], &apps[1]);
    let token = a.token("alice", &["demo"]);
    let prefix = a.state.config.redis_prefix.clone();

    // Three connections spread over both replicas: the limit is reached.
    let mut on_a = vec![
        a.try_connect(&token, &[]).await.unwrap(),
        a.try_connect(&token, &[]).await.unwrap(),
    ];
    let on_b = b.try_connect(&token, &[]).await.unwrap();
    assert_eq!(counted_in_redis(&prefix, "alice").await, 3);
    // The next one is refused on either replica, before the upgrade.
    for app in [a, b] {
        let (status, _, body) = refusal(app.port, &token, &[]).await;
        assert_refused(status, &body, 429, "limit_reached", "in the cluster");
        assert_eq!(
            app.metric(r#"pulsehub_connections_refused_by_limit_total{limit="user"}"#)
                .await,
            1.0
        );
    }
    // Ten handshakes on both replicas race for one freed slot: exactly one
    // wins (the script admits atomically in Redis).
    drop(on_a.pop());
    let deadline = Instant::now() + PATIENCE;
    while counted_in_redis(&prefix, "alice").await != 2 {
        assert!(Instant::now() < deadline, "the release did not reach Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let race = join_all((0..10).map(|i| try_connect_at([a, b][i % 2].port, &token))).await;
    let (won, lost): (Vec<_>, Vec<_>) = race.into_iter().partition(Result::is_ok);
    assert_eq!(won.len(), 1, "winners of one slot");
    assert!(lost.iter().all(|r| r.as_ref().err() == Some(&429)));
    let freed = won.into_iter().next().unwrap().unwrap();
    assert_eq!(counted_in_redis(&prefix, "alice").await, 3);

    // Another user is not affected.
    let _bob = b.connect("bob", &["demo"]).await;

    // Closing the connection on B frees a slot for A.
    drop((on_b, freed));
    let again = admitted_eventually(a.port, &token, Duration::ZERO).await;
    assert_eq!(a.state.connections.held("alice"), 2);
    drop((on_a, again));
    let (a_conns, b_conns) = (a.state.connections.clone(), b.state.connections.clone());
    eventually("every slot given back", || {
        a_conns.users() + b_conns.users() == 1 && a_conns.in_cluster() + b_conns.in_cluster() == 1
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    while counted_in_redis(&prefix, "alice").await != 0 {
        assert!(Instant::now() < deadline, "alice's members left in Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_killed_replicas_connections_stop_counting_after_the_ttl() {
    let apps = spawn_cluster(1, |c| {
        c.max_connections_per_user = 2;
        c.connection_ttl_secs = 3;
    })
    .await;
    let b = &apps[0];
    let prefix = b.state.config.redis_prefix.clone();
    let redis = redis_url();
    let a = HubProcess::start(
        &b.database_url,
        &[
            ("REDIS_URL", &redis),
            ("PULSEHUB_REDIS_PREFIX", &prefix),
            ("PULSEHUB_INSTANCE_ID", "hub-killed"),
            ("PULSEHUB_MAX_CONNECTIONS_PER_USER", "2"),
            ("PULSEHUB_CONNECTION_TTL_SECS", "3"),
        ],
    )
    .await;
    let token = b.token("alice", &["demo"]);
    let held = [
        connect_at(a.port, &token).await,
        connect_at(a.port, &token).await,
    ];
    // Past a refresh (every second here): the members are kept alive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(try_connect_at(b.port, &token).await.err(), Some(429));

    unsafe {
        libc::kill(a.pid(), libc::SIGKILL);
    }
    let killed = Instant::now();
    // Nobody said goodbye: A's two connections still count until the TTL…
    assert_eq!(try_connect_at(b.port, &token).await.err(), Some(429));
    // …then they expire, and the limit holds again with B's own.
    let first = admitted_eventually(b.port, &token, Duration::from_secs(3)).await;
    println!(
        "slots of the killed replica free {:?} after kill -9",
        killed.elapsed()
    );
    let second = try_connect_at(b.port, &token).await.expect("second slot");
    assert_eq!(try_connect_at(b.port, &token).await.err(), Some(429));
    drop((held, first, second));
}

#[actix_web::test]
async fn a_full_replica_answers_503_with_retry_after_before_the_upgrade() {
    let app = spawn_with(|c| c.max_connections = 2).await;
    let alice = app.connect("alice", &["demo"]).await;
    let _bob = app.connect("bob", &["demo"]).await;
    let token = app.token("carol", &["demo"]);
    let (status, retry, body) = refusal(app.port, &token, &[]).await;
    assert_refused(status, &body, 503, "unavailable", "try another");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        app.metric(r#"pulsehub_connections_refused_by_limit_total{limit="replica"}"#)
            .await,
        1.0
    );
    // A bad token is still told so first.
    let (status, _, body) = refusal(app.port, "nope", &[]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    // One leaves: one more fits.
    drop(alice);
    let deadline = Instant::now() + PATIENCE;
    let _carol = loop {
        match try_connect_at(app.port, &token).await {
            Ok(c) => break c,
            Err(status) => assert_eq!(status, 503),
        }
        assert!(Instant::now() < deadline, "no slot after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(app.state.connections.total(), 2);
}

#[actix_web::test]
async fn the_per_address_limit_believes_only_trusted_proxies() {
    // No trusted proxy: every connection here is 127.0.0.1, whatever the
    // forwarding header says.
    let app = spawn_with(|c| c.max_connections_per_address = 2).await;
    let forged = [("x-forwarded-for", "203.0.113.5")];
    let _a = app
        .try_connect(&app.token("alice", &["demo"]), &forged)
        .await
        .unwrap();
    let _b = app
        .try_connect(&app.token("bob", &["demo"]), &[])
        .await
        .unwrap();
    let (status, _, body) = refusal(app.port, &app.token("carol", &["demo"]), &forged).await;
    assert_refused(status, &body, 429, "limit_reached", "address");
    assert_eq!(
        app.metric(r#"pulsehub_connections_refused_by_limit_total{limit="address"}"#)
            .await,
        1.0
    );

    // Behind a trusted proxy (here: loopback), the header names the client.
    let app = spawn_with(|c| {
        c.max_connections_per_address = 2;
        c.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
    })
    .await;
    let token = app.token("alice", &["demo"]);
    let client = |xff: &'static str| [("x-forwarded-for", xff)];
    let _c1 = app
        .try_connect(&token, &client("203.0.113.5"))
        .await
        .unwrap();
    // Two proxies on the way: the first untrusted address from the right.
    let _c2 = app
        .try_connect(&token, &client("203.0.113.5, 10.1.2.3"))
        .await
        .unwrap();
    let (status, _, body) = refusal(app.port, &token, &client("203.0.113.5")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("limit_reached")),
        "{body}"
    );
    // A client prepending an address of its own choice gains nothing.
    let (status, _, _) = refusal(app.port, &token, &client("198.51.100.1, 203.0.113.5")).await;
    assert_eq!(status, 429);
    // Other clients behind the same proxy have their own count, through
    // either header.
    let _d = app
        .try_connect(&token, &client("203.0.113.6"))
        .await
        .unwrap();
    let _e = app
        .try_connect(
            &token,
            &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
        )
        .await
        .unwrap();
    // Without a header, the proxy's own address is the client.
    let _f = app.try_connect(&token, &[]).await.unwrap();
    assert_eq!(app.state.connections.addresses(), 4);
}

/// The hub's end of a connection whose client end is `client`: the hub runs
/// in this process, so its sockets are among this process's descriptors.
fn server_socket_send_buffer(hub_port: u16, client: std::net::SocketAddr) -> usize {
    use std::os::fd::BorrowedFd;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Borrowed for two getsockopt calls; a descriptor closed meanwhile
        // only makes them fail.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
            continue;
        };
        if local.as_socket().map(|a| a.port()) == Some(hub_port) && peer.as_socket() == Some(client)
        {
            return sock.send_buffer_size().unwrap();
        }
    }
    panic!("no server socket for {client}");
}

fn client_addr(c: &WsClient) -> std::net::SocketAddr {
    match c.stream.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap(),
        _ => unreachable!("plain TCP"),
    }
}

#[actix_web::test]
async fn accepted_sockets_get_the_configured_send_buffer() {
    let app = spawn_with(|c| c.socket_send_buffer = 24 * 1024).await;
    let c = app.connect("alice", &["demo"]).await;
    // Linux doubles the value for its bookkeeping and reports the double.
    assert_eq!(
        server_socket_send_buffer(app.port, client_addr(&c)),
        48 * 1024
    );

    // 0: the kernel's own (autotuned) buffer, whatever it is: not ours.
    let app = spawn_with(|c| c.socket_send_buffer = 0).await;
    let c = app.connect("alice", &["demo"]).await;
    let kernel = server_socket_send_buffer(app.port, client_addr(&c));
    println!("kernel default SO_SNDBUF of an accepted socket: {kernel}");
    assert_ne!(kernel, 48 * 1024);
}

#[actix_web::test]
async fn while_redis_is_down_users_are_counted_per_replica_and_the_count_heals() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let apps = spawn_cluster(2, |c| {
        c.redis_url = Some(url.clone());
        c.max_connections_per_user = 2;
        c.connection_ttl_secs = 3;
    })
    .await;
    let (a, b) = (&apps[0], &apps[1]);
    let prefix = a.state.config.redis_prefix.clone();
    let token = a.token("alice", &["demo"]);
    let first = a.try_connect(&token, &[]).await.unwrap();
    assert_eq!(counted_at(&url, &prefix, "alice").await, 1);

    redis.stop();
    // Nobody is locked out: each replica counts its own connections.
    let second = a.try_connect(&token, &[]).await.expect("admitted on A");
    let (status, _, body) = refusal(a.port, &token, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on this replica"),
        "{body}"
    );
    let on_b = b.try_connect(&token, &[]).await.expect("admitted on B");
    assert_eq!(
        a.metric("pulsehub_connection_limit_fallbacks_total").await,
        2.0
    );
    assert_eq!(
        b.metric("pulsehub_connection_limit_fallbacks_total").await,
        1.0
    );

    // Redis comes back empty: the refresh puts every live connection back.
    redis.restart();
    let deadline = Instant::now() + PATIENCE;
    while counted_at(&url, &prefix, "alice").await != 3 {
        assert!(Instant::now() < deadline, "the count did not heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Over the limit after the outage: nobody is cut off, and new
    // connections are refused for the cluster until it is back under.
    let (status, _, body) = refusal(b.port, &token, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in the cluster"),
        "{body}"
    );
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    while counted_at(&url, &prefix, "alice").await != 2 {
        assert!(Instant::now() < deadline, "the release did not reach Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(try_connect_at(b.port, &token).await.err(), Some(429));
    drop(second);
    let _third = admitted_eventually(b.port, &token, Duration::ZERO).await;
    drop(on_b);
}

#[actix_web::test]
async fn behind_nginx_a_full_replica_sends_clients_on_and_addresses_come_from_the_proxy() {
    let apps = spawn_cluster(2, |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.max_connections_per_address = 2;
        if c.instance_id.as_deref() == Some("hub-a") {
            c.max_connections = 1;
        }
    })
    .await;
    let (a, b) = (&apps[0], &apps[1]);
    let lb = crate::cluster::start_nginx(&[a.port, b.port]);
    // A is full.
    let _direct = a.connect("zed", &["demo"]).await;

    // Every client through nginx gets in: A's 503 sends nginx to B.
    let via_lb = |user: &str, xff: &str| {
        let token = a.token(user, &["demo"]);
        let xff = xff.to_string();
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = format!("ws://127.0.0.1:{}/ws?token={token}", lb.port)
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("x-forwarded-for", xff.parse().unwrap());
            match tokio_tungstenite::connect_async(req).await {
                Ok((stream, _)) => {
                    let mut c = WsClient::from_stream(stream);
                    let welcome = c.recv().await;
                    assert_eq!(welcome["type"], "welcome", "{welcome}");
                    Ok((c, welcome["instance"].as_str().unwrap().to_string()))
                }
                Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                    let body: Value =
                        serde_json::from_slice(res.body().as_deref().unwrap_or(b"null"))
                            .unwrap_or(Value::Null);
                    Err((res.status().as_u16(), body))
                }
                Err(e) => panic!("ws connect through nginx: {e}"),
            }
        }
    };
    let mut held = Vec::new();
    for i in 0..4 {
        let (c, instance) = via_lb(&format!("u{i}"), &format!("198.51.100.{i}"))
            .await
            .expect("admitted through nginx");
        assert_eq!(instance, "hub-b");
        held.push(c);
    }
    assert!(
        a.metric(r#"pulsehub_connections_refused_by_limit_total{limit="replica"}"#)
            .await
            >= 1.0
    );

    // nginx appends the address it saw to the client's header; the hub
    // trusts nginx (loopback), so the client is what nginx was told. Two
    // clients of one address fit, the third is refused, through nginx.
    for user in ["v1", "v2"] {
        held.push(via_lb(user, "203.0.113.5").await.expect("admitted").0);
    }
    let (status, body) = via_lb("v3", "203.0.113.5").await.err().expect("refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached", "{body}");
    assert_eq!(b.state.connections.addresses(), 5);
}

#[actix_web::test]
async fn a_replica_stopping_gracefully_frees_its_users_slots_at_once() {
    let apps = spawn_cluster(1, |c| c.max_connections_per_user = 2).await;
    let b = &apps[0];
    let prefix = b.state.config.redis_prefix.clone();
    let redis = redis_url();
    let mut a = HubProcess::start(
        &b.database_url,
        &[
            ("REDIS_URL", &redis),
            ("PULSEHUB_REDIS_PREFIX", &prefix),
            ("PULSEHUB_INSTANCE_ID", "hub-stopping"),
            ("PULSEHUB_MAX_CONNECTIONS_PER_USER", "2"),
        ],
    )
    .await;
    let token = b.token("alice", &["demo"]);
    let mut on_a = [
        connect_at(a.port, &token).await,
        connect_at(a.port, &token).await,
    ];
    assert_eq!(try_connect_at(b.port, &token).await.err(), Some(429));

    unsafe {
        libc::kill(a.pid(), libc::SIGTERM);
    }
    for c in &mut on_a {
        assert_eq!(c.closed().await.map(u16::from), Some(1001));
    }
    let status = tokio::time::timeout(PATIENCE, a.child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", a.log());
    // Not after the TTL (30 s): the process took them out before exiting.
    assert_eq!(counted_in_redis(&prefix, "alice").await, 0);
    let _moved = [
        try_connect_at(b.port, &token)
            .await
            .expect("first slot on B"),
        try_connect_at(b.port, &token)
            .await
            .expect("second slot on B"),
    ];
    assert_eq!(try_connect_at(b.port, &token).await.err(), Some(429));
}

/// Members of the connection set at `key`, asked of the master serving it.
async fn counted_on_cluster(cluster: &RedisCluster, key: &str) -> usize {
    let port = cluster.master_of(key);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Waits (up to [`PATIENCE`]) until the set at `key` has `n` members.
async fn counted_on_cluster_eventually(cluster: &RedisCluster, key: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = counted_on_cluster(cluster, key).await;
        if held == n {
            return;
        }
        assert!(Instant::now() < deadline, "{key}: {held} members, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port of the master serving `slot`, as the node on `port` sees it.
async fn slot_owner_seen_by(port: u16, slot: u16) -> u16 {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: redis::Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .unwrap();
    pulsehub::broker::redis::slots::SlotMap::from_cluster_slots(&reply, "127.0.0.1")
        .unwrap()
        .master(slot)
        .expect("every slot is served")
        .port
}

#[actix_web::test]
async fn the_per_user_limit_holds_across_replicas_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let apps = spawn_cluster(2, move |c| {
        c.redis_url = None;
        c.redis_cluster_nodes = seeds.clone();
        c.max_connections_per_user = 3;
        // Short, so that the test outlives it: members still counted after
        // it were refreshed at their masters.
        c.connection_ttl_secs = 3;
    })
    .await;
    let (a, b) = (&apps[0], &apps[1]);
    let prefix = a.state.config.redis_prefix.clone();
    let key = |user: &str| format!("{prefix}:conns:{user}");

    // One user per master: their sets live on three different masters.
    let mut users: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let user = format!("user{i}");
        let port = cluster.master_of(&key(&user));
        if !users.iter().any(|(_, p)| *p == port) {
            users.push((user, port));
        }
        if users.len() == 3 {
            break;
        }
    }

    // Each user: three connections spread over both replicas, counted at
    // the master of the user's key.
    let mut held = Vec::new();
    for (user, _) in &users {
        let token = a.token(user, &["demo"]);
        let on_a = vec![
            a.try_connect(&token, &[]).await.unwrap(),
            a.try_connect(&token, &[]).await.unwrap(),
        ];
        let on_b = b.try_connect(&token, &[]).await.unwrap();
        assert_eq!(counted_on_cluster(&cluster, &key(user)).await, 3, "{user}");
        held.push((token, on_a, on_b));
    }
    // The next one is refused on either replica, for every user, before the
    // upgrade and by the cluster-wide count (not the replica's fallback).
    for (i, ((user, _), (token, _, _))) in users.iter().zip(&held).enumerate() {
        for app in [a, b] {
            let (status, _, body) = refusal(app.port, token, &[]).await;
            assert_eq!(status, 429, "{user}: {body}");
            assert_refused(status, &body, 429, "limit_reached", "in the cluster");
            assert_eq!(
                app.metric(r#"pulsehub_connections_refused_by_limit_total{limit="user"}"#)
                    .await,
                (i + 1) as f64
            );
        }
    }

    // Past the TTL the members are still there: the refresh reached every
    // master (a member not refreshed would have expired).
    tokio::time::sleep(Duration::from_secs(4)).await;
    for ((user, _), (token, _, _)) in users.iter().zip(&held) {
        assert_eq!(counted_on_cluster(&cluster, &key(user)).await, 3, "{user}");
        let (status, _, body) = refusal(b.port, token, &[]).await;
        assert_eq!(status, 429, "{user}: {body}");
    }

    // Resharding moves a fresh user's (empty) slot to another master: the
    // replicas' maps are stale, the old owner answers MOVED, and they read
    // the map again and count at the new owner.
    let mover = "mover";
    let slot = pulsehub::broker::redis::slots::key_slot(key(mover).as_bytes());
    let from = cluster.master_of(&key(mover));
    let to = users.iter().map(|(_, p)| *p).find(|p| *p != from).unwrap();
    cluster.move_slot(slot, from, to);
    let deadline = Instant::now() + PATIENCE;
    for (_, port) in &users {
        while slot_owner_seen_by(*port, slot).await != to {
            assert!(Instant::now() < deadline, "{port} never learnt the move");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let token = a.token(mover, &["demo"]);
    let moved = vec![
        a.try_connect(&token, &[]).await.unwrap(),
        b.try_connect(&token, &[]).await.unwrap(),
        b.try_connect(&token, &[]).await.unwrap(),
    ];
    assert_eq!(cluster.master_of(&key(mover)), to);
    assert_eq!(counted_on_cluster(&cluster, &key(mover)).await, 3);
    for app in [a, b] {
        let (status, _, body) = refusal(app.port, &token, &[]).await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("in the cluster"),
            "{body}"
        );
    }
    drop(moved);
    counted_on_cluster_eventually(&cluster, &key(mover), 0).await;

    // Closing one on B frees a slot on A, and one on A a slot on B.
    let mut again = Vec::new();
    for ((user, _), (token, on_a, on_b)) in users.iter().zip(held) {
        drop(on_b);
        again.push(admitted_eventually(a.port, &token, Duration::ZERO).await);
        assert_eq!(a.state.connections.held(user), 3, "{user}");
        let mut on_a = on_a;
        drop(on_a.pop());
        again.push(admitted_eventually(b.port, &token, Duration::ZERO).await);
        assert_eq!(counted_on_cluster(&cluster, &key(user)).await, 3, "{user}");
        again.extend(on_a);
    }

    // Every release reaches its key's master.
    drop(again);
    for (user, _) in &users {
        counted_on_cluster_eventually(&cluster, &key(user), 0).await;
    }
}
