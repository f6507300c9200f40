//! PostgreSQL restarted under a steady ingest and fan-out load (issue 15).
//!
//! One hub over a server of the test's own ([`PrivatePostgres`]); a producer
//! posts batches with idempotency keys and retries each batch until it is
//! acknowledged, two subscribers read `feed:load`, a Redis stream feeds the
//! bus source. The server is stopped twice mid-stream, first fast, then like
//! a crash (`-m immediate`). While it is down: ingest answers 503
//! `unavailable` with `Retry-After` and the JSON error body, sessions stay
//! open, presence join/leave still flows, a subscribe that needs the
//! database gets an `unavailable` error frame, a resync (as after a Redis
//! reconnect) waits for the database instead of ending subscriptions,
//! `/ready` names `postgres`, and the bus source holds its entries
//! unacknowledged. Once it is back,
//! ingest resumes by itself; at the end every acknowledged event is stored
//! exactly once and both subscribers got every one, in offset order, with
//! no gap and no duplicate. The time from PostgreSQL accepting connections
//! again to the first acknowledged event is printed, not asserted
//! (docs/benchmarks.md).

use crate::helpers::*;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use pulsehub::error::HubError;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SCOPE: &str = "load";
const BUS_SCOPE: &str = "bus";
/// Events per request, and the pause between acknowledged requests.
const BATCH: usize = 5;
const PACE: Duration = Duration::from_millis(20);
/// The producer retries a refused batch after this (not the 1 s of
/// `Retry-After`: the test measures how soon the hub recovers, not how
/// patient a client is).
const RETRY: Duration = Duration::from_millis(10);
/// Bus entries added while the database is down, per outage.
const BUS_PER_OUTAGE: usize = 10;

/// What the producer saw.
#[derive(Default)]
struct Log {
    /// Keys of the batches answered 202, in answer order.
    acked: Vec<String>,
    /// When each 202 came.
    acks_at: Vec<Instant>,
    /// 202s that counted duplicates: a batch answered 503 that had been
    /// committed after all (the connection died during `COMMIT`).
    with_duplicates: usize,
    /// 503 answers, and the `Retry-After` and body of each.
    refusals: Vec<(Option<String>, Value)>,
    /// Any other answer: there must be none.
    unexpected: Vec<(u16, Value)>,
}

impl Log {
    fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acks_at.iter().copied().find(|&a| a > t)
    }
}

/// Posts batches of [`BATCH`] keyed events until `stop`, each until it is
/// acknowledged, and finishes the batch in hand when stopped.
async fn produce(url: String, log: Rc<RefCell<Log>>, stop: Rc<Cell<bool>>) {
    let http = reqwest::Client::new();
    let mut next = 0;
    while !stop.get() {
        let keys: Vec<String> = (next..next + BATCH).map(|i| format!("ev-{i}")).collect();
        next += BATCH;
        let body: Vec<Value> = keys
            .iter()
            .map(|k| json!({"scope": SCOPE, "kind": "message.sent", "data": {"k": k}, "key": k}))
            .collect();
        loop {
            let res = http
                .post(&url)
                .bearer_auth(INGEST_KEY)
                .json(&body)
                .send()
                .await
                .expect("the hub answers while PostgreSQL is down");
            let status = res.status().as_u16();
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let answer: Value = res.json().await.unwrap_or(Value::Null);
            let acknowledged = {
                let mut log = log.borrow_mut();
                match status {
                    202 => {
                        assert_eq!(
                            answer["accepted"].as_u64().unwrap()
                                + answer["duplicates"].as_u64().unwrap(),
                            BATCH as u64,
                            "{answer}"
                        );
                        if answer["duplicates"] != 0 {
                            log.with_duplicates += 1;
                        }
                        log.acked.extend(keys.iter().cloned());
                        log.acks_at.push(Instant::now());
                        true
                    }
                    503 => {
                        log.refusals.push((retry_after, answer));
                        false
                    }
                    other => {
                        log.unexpected.push((other, answer));
                        false
                    }
                }
            };
            if acknowledged {
                break;
            }
            tokio::time::sleep(RETRY).await;
        }
        tokio::time::sleep(PACE).await;
    }
}

/// A WebSocket client read continuously by a task of its own (so a busy
/// feed never makes it a slow consumer while the test does other things);
/// its frames wait in a channel, and the test writes on the other half.
struct Tap {
    sink: SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>,
    frames: mpsc::UnboundedReceiver<Value>,
    /// `event` frames read so far, in arrival order.
    events: Vec<Value>,
    /// `error` frames without a `ref` (a subscription ended by the hub).
    unasked_errors: Vec<Value>,
    next_ref: i64,
}

impl Tap {
    fn new(client: WsClient) -> Tap {
        let (sink, mut stream) = client.stream.split();
        let (tx, frames) = mpsc::unbounded_channel();
        actix_web::rt::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(text) = msg {
                    if tx.send(serde_json::from_str(&text).unwrap()).is_err() {
                        break;
                    }
                }
            }
        });
        Tap {
            sink,
            frames,
            events: Vec::new(),
            unasked_errors: Vec::new(),
            next_ref: 1,
        }
    }

    async fn command(&mut self, mut v: Value) -> i64 {
        let r = self.next_ref;
        self.next_ref += 1;
        v["ref"] = r.into();
        self.sink
            .send(Message::Text(v.to_string()))
            .await
            .expect("the session is open");
        r
    }

    /// Closes the connection (1000); its reading task ends with it.
    async fn close(mut self) {
        self.sink.close().await.expect("closing");
    }

    /// Reads until a frame matches (keeping `event` frames on the way).
    async fn until(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.frames.recv())
                .await
                .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
                .unwrap_or_else(|| panic!("{what}: the connection closed"));
            if frame["type"] == "event" {
                self.events.push(frame.clone());
            }
            if frame["type"] == "error" && frame.get("ref").is_none() {
                self.unasked_errors.push(frame.clone());
            }
            if matches(&frame) {
                return frame;
            }
        }
    }

    /// The reply to a command with `r`.
    async fn reply(&mut self, r: i64) -> Value {
        self.until(&format!("reply to ref {r}"), |f| f["ref"] == r)
            .await
    }

    /// Reads until `n` events have arrived in all.
    async fn events_reach(&mut self, n: usize, what: &str) {
        while self.events.len() < n {
            self.until(what, |f| f["type"] == "event").await;
        }
    }

    /// A presence frame about `user` with `op`.
    async fn presence(&mut self, user: &str, op: &str) -> Value {
        self.until(&format!("presence {op} of {user}"), |f| {
            f["type"] == "presence" && f["op"] == op && f["user"]["id"] == user
        })
        .await
    }
}

/// Status, `Retry-After` and JSON body of a GET.
async fn get_raw(app: &TestApp, path: &str, token: &str) -> (u16, Option<String>, Value) {
    let res = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, res.json().await.unwrap_or(Value::Null))
}

fn assert_unavailable(what: &str, status: u16, retry_after: Option<&str>, body: &Value) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    let secs: u64 = retry_after
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After is not seconds"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
}

/// Waits until `/ready` answers `status`; returns its body and how long
/// that one request took.
async fn ready_is(app: &TestApp, status: u16) -> (Value, Duration) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let asked = Instant::now();
        let res = app.http.get(app.url("/ready")).send().await.unwrap();
        let took = asked.elapsed();
        if res.status().as_u16() == status {
            return (res.json().await.unwrap(), took);
        }
        assert!(Instant::now() < deadline, "/ready never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the bus source holds entries it read (pending in the group,
/// not acknowledged); returns how many.
async fn bus_held(streams: &mut TestStreams, stream: &str) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (pending, _) = streams.group(stream, "pulsehub").await;
        if pending > 0 {
            return pending;
        }
        assert!(Instant::now() < deadline, "{stream}: nothing read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the group has read and acknowledged everything.
async fn bus_drained(streams: &mut TestStreams, stream: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (pending, lag) = streams.group(stream, "pulsehub").await;
        if pending == 0 && lag == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: {pending} pending, lag {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_web::test]
async fn postgres_restart_under_load_loses_and_duplicates_nothing_acknowledged() {
    let mut pg = PrivatePostgres::start();
    let mut streams = TestStreams::new().await;
    let stream = streams.key("orders");
    let mut config = test_config();
    config.database_url = pg.url("pulsehub");
    // Bus messages in the event shape (no mapping file), from the shared Redis.
    config.redis_streams = vec![stream.clone()];
    config.redis_streams_url = Some(redis_url());
    let app = start_app(config).await;
    app.wait_ready().await;

    let mut subscribers = Vec::new();
    for user in ["alice", "bob"] {
        let mut c = app.connect(user, &[SCOPE]).await;
        let subscribed = c.subscribe(&format!("feed:{SCOPE}"), None).await;
        assert_eq!(subscribed["offset"], 0, "{subscribed}");
        subscribers.push(Tap::new(c));
    }
    let mut watcher = app.connect("olga", &[SCOPE]).await;
    watcher.subscribe(&format!("presence:{SCOPE}"), None).await;
    let mut watcher = Tap::new(watcher);
    watcher.until("presence sync", |f| f["op"] == "sync").await;

    let log = Rc::new(RefCell::new(Log::default()));
    let stop = Rc::new(Cell::new(false));
    let producer = actix_web::rt::spawn(produce(app.url("/api/events"), log.clone(), stop.clone()));
    let token = app.token("reader", &[SCOPE]);
    let mut bus_sent = 0;

    for (round, mode) in [StopMode::Fast, StopMode::Immediate]
        .into_iter()
        .enumerate()
    {
        // Steady flow first: acknowledged events reach the subscribers.
        let acked_before = log.borrow().acked.len();
        let deadline = Instant::now() + PATIENCE;
        while log.borrow().acked.len() < acked_before + 100 {
            assert!(Instant::now() < deadline, "ingest does not flow");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let flowing = log.borrow().acked.len();
        subscribers[0]
            .events_reach(flowing, "live events before the outage")
            .await;

        let refusals_before = log.borrow().refusals.len();
        // A connection taken from the hub's pool before the stop, as a
        // request in flight would hold it.
        let mut held = app.state.pool.get().await.expect("a pooled connection");
        pg.stop(mode).await;
        let down = Instant::now();
        // Its next statement fails, and that failure is `unavailable`, not
        // `internal`; returned to the pool, it is never handed out again.
        let lost = pulsehub::db::ping(&mut held)
            .await
            .expect_err("a statement on a connection PostgreSQL closed");
        eprintln!("{mode:?}: a statement on a pooled connection after the stop: {lost:?}");
        assert_eq!(HubError::from(lost).code(), "unavailable");
        drop(held);

        // Ingest: 503 unavailable with Retry-After and the JSON body.
        let deadline = Instant::now() + PATIENCE;
        while log.borrow().refusals.len() <= refusals_before {
            assert!(Instant::now() < deadline, "ingest never refused ({mode:?})");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let log = log.borrow();
            let (retry_after, body) = &log.refusals[refusals_before];
            assert_unavailable("POST /api/events", 503, retry_after.as_deref(), body);
        }
        let res = app
            .http
            .post(app.url("/api/notifications"))
            .bearer_auth(INGEST_KEY)
            .json(&json!({"target": "system", "level": "info", "title": "t", "body": "b"}))
            .send()
            .await
            .unwrap();
        let (status, retry_after) = (
            res.status().as_u16(),
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
        );
        let body: Value = res.json().await.unwrap();
        assert_unavailable(
            "POST /api/notifications",
            status,
            retry_after.as_deref(),
            &body,
        );

        // /ready names the database, and answers at once.
        let (ready, took) = ready_is(&app, 503).await;
        let postgres = ready["components"]["postgres"].as_str().unwrap_or("");
        assert!(postgres.starts_with("down"), "{ready}");
        eprintln!("{mode:?}: /ready answered 503 in {took:?}: postgres = {postgres}");

        // Reads that need the database: 503 unavailable.
        let (status, retry_after, body) = get_raw(
            &app,
            &format!("/api/channels/feed:{SCOPE}/history?since=0"),
            &token,
        )
        .await;
        assert_unavailable("GET history", status, retry_after.as_deref(), &body);
        let (status, retry_after, body) =
            get_raw(&app, &format!("/api/scopes/{SCOPE}/stats"), &token).await;
        assert_unavailable("GET stats", status, retry_after.as_deref(), &body);

        // What the Redis broker does after it reconnected: every live
        // recoverable subscription re-reads from its position. With the
        // database away, the reads wait and retry; no subscription ends.
        app.state.hub.do_send(pulsehub::frame::Resync);

        // The subscribers' sessions are open and answer.
        for s in subscribers.iter_mut() {
            let r = s.command(json!({"type": "ping"})).await;
            assert_eq!(s.reply(r).await["type"], "pong");
        }
        // A new session connects and its presence reaches the watcher.
        let carl = format!("carl{round}");
        let mut c = Tap::new(app.connect(&carl, &[SCOPE]).await);
        let r = c
            .command(json!({"type": "subscribe", "channel": format!("presence:{SCOPE}")}))
            .await;
        assert_eq!(c.reply(r).await["type"], "subscribed");
        c.until("presence sync", |f| f["op"] == "sync").await;
        watcher.presence(&carl, "join").await;
        // What needs the database is refused with an error frame; the
        // session carries on.
        for channel in [format!("feed:{SCOPE}"), format!("stats:{SCOPE}")] {
            let r = c
                .command(json!({"type": "subscribe", "channel": channel}))
                .await;
            let reply = c.reply(r).await;
            assert_eq!(
                (reply["type"].as_str(), reply["code"].as_str()),
                (Some("error"), Some("unavailable")),
                "{channel}: {reply}"
            );
        }
        let r = c.command(json!({"type": "ping"})).await;
        assert_eq!(c.reply(r).await["type"], "pong");
        // Its leave too, once it is gone (after the presence grace).
        c.close().await;
        watcher.presence(&carl, "leave").await;

        // The bus source reads entries but acknowledges none of them.
        let entries: Vec<Value> = (bus_sent..bus_sent + BUS_PER_OUTAGE)
            .map(|i| json!({"scope": BUS_SCOPE, "kind": "order.placed", "data": {"b": i}}))
            .collect();
        streams.add_all(&stream, &entries).await;
        bus_sent += BUS_PER_OUTAGE;
        let held = bus_held(&mut streams, &stream).await;

        // Down for a while under load: still nothing acknowledged.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            log.borrow()
                .first_ack_after(down + Duration::from_millis(500))
                .is_none(),
            "acknowledged while PostgreSQL was down"
        );
        assert_eq!(
            streams.group(&stream, "pulsehub").await.0,
            held,
            "the bus source acknowledged entries while PostgreSQL was down"
        );
        let acked_down = log.borrow().acked.len();

        pg.restart().await;
        let back = Instant::now();
        let deadline = back + PATIENCE;
        let first = loop {
            if let Some(t) = log.borrow().first_ack_after(back) {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "ingest did not resume ({mode:?}); log:\n{}",
                pg.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        ready_is(&app, 200).await;
        let ready_again = back.elapsed();
        bus_drained(&mut streams, &stream).await;
        let bus_again = back.elapsed();
        // Every connection the pool hands out now works: the dead ones
        // were dropped, not recycled.
        let pool = &app.state.pool;
        let mut all = Vec::new();
        for _ in 0..pool.status().max_size {
            let mut conn = pool.get().await.expect("a connection after the restart");
            pulsehub::db::ping(&mut conn)
                .await
                .expect("a live connection after the restart");
            all.push(conn);
        }
        drop(all);
        let log_now = log.borrow();
        // Only the time to the first acknowledgement is the figure: the
        // others are bounded by this test's polling.
        eprintln!(
            "{mode:?}: down {:?}; first acknowledged event {:?} after PostgreSQL accepted \
             connections again; /ready 200 after {ready_again:?}; bus caught up after \
             {bus_again:?}; {} refusals (503) during this outage; {} events acknowledged before it",
            back.duration_since(down),
            first.duration_since(back),
            log_now.refusals.len() - refusals_before,
            acked_down,
        );
    }

    // Let it flow a little more, then stop the producer (its last batch
    // is acknowledged before it returns).
    let acked_before = log.borrow().acked.len();
    while log.borrow().acked.len() < acked_before + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.set(true);
    producer.await.unwrap();

    let log = log.take();
    assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
    let posted = log.acked.len();
    let distinct: BTreeSet<&String> = log.acked.iter().collect();
    assert_eq!(distinct.len(), posted, "a batch was acknowledged twice");
    let expected: BTreeSet<String> = (0..posted).map(|i| format!("ev-{i}")).collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );

    // Stored exactly once, with gapless offsets.
    let feed = app.feed(SCOPE).await;
    let offsets: Vec<i64> = feed.iter().map(|f| f["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, (1..=posted as i64).collect::<Vec<_>>());
    let stored: BTreeSet<String> = feed
        .iter()
        .map(|f| f["event"]["data"]["k"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, expected, "stored once each");

    // Delivered to every subscriber in offset order, each exactly once.
    for (i, s) in subscribers.iter_mut().enumerate() {
        s.events_reach(posted, "every event delivered").await;
        assert_eq!(
            offsets_of(&s.events),
            offsets,
            "subscriber {i}: offsets in order, no gap, no duplicate"
        );
        for (got, want) in s.events.iter().zip(&feed) {
            assert_eq!(got["event"]["data"]["k"], want["event"]["data"]["k"]);
        }
    }
    for (i, s) in subscribers.iter().enumerate() {
        assert!(
            s.unasked_errors.is_empty(),
            "subscriber {i}: {:?}",
            s.unasked_errors
        );
    }
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in subscribers.iter_mut() {
        while let Ok(f) = s.frames.try_recv() {
            assert_ne!(f["type"], "event", "an extra event: {f}");
        }
    }

    // The bus: every entry stored once.
    let bus = app
        .feed_reaches(BUS_SCOPE, bus_sent, "bus entries stored")
        .await;
    let mut got: Vec<u64> = bus
        .iter()
        .map(|f| f["event"]["data"]["b"].as_u64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..bus_sent as u64).collect::<Vec<_>>());

    // The steady rate: the batches acknowledged before the first outage.
    let first = &log.acks_at[..log.acks_at.len().min(20)];
    let rate = ((first.len() - 1) * BATCH) as f64
        / first[first.len() - 1]
            .duration_since(first[0])
            .as_secs_f64();
    eprintln!(
        "{posted} events acknowledged (about {rate:.0} events/s while up) and delivered to 2 \
         subscribers (0 lost, 0 duplicated); {} refusals in all; {} batches answered 503 had \
         been committed (202 with duplicates on retry); {bus_sent} bus entries stored once",
        log.refusals.len(),
        log.with_duplicates,
    );
}

fn offsets_of(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .map(|f| f["offset"].as_i64().unwrap())
        .collect()
}
