use crate::helpers::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use pulsehub::auth::{claims_for, TokenKeys};
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Pings with the app-level `ping` and expects the `pong`.
async fn assert_alive(c: &mut WsClient) {
    let r = c.command(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "ref": r}));
}

#[actix_web::test]
async fn heartbeat_closes_a_silent_client() {
    let app = spawn_with(|c| c.heartbeat_secs = 1).await;
    // Never writes, so never answers the server's pings.
    let mut silent = app.raw_connect(&app.token("silent", &["demo"])).await;
    let welcome = silent.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["heartbeat"], 1, "{welcome}");
    let mut chatty = app.connect("chatty", &["demo"]).await;

    let started = Instant::now();
    let quiet = async {
        tokio::time::sleep(Duration::from_millis(4500)).await;
        silent.close_code(Duration::from_secs(10)).await
    };
    // Reading makes tungstenite answer the pings.
    let listen = async {
        while started.elapsed() < Duration::from_secs(4) {
            if let Some(f) = chatty.try_recv(Duration::from_millis(200)).await {
                panic!("unexpected frame {f}");
            }
        }
        assert_alive(&mut chatty).await;
    };
    let (code, ()) = tokio::join!(quiet, listen);
    assert_eq!(code, Some(1008), "the silent client is closed with 1008");
    assert_alive(&mut chatty).await;
}

#[actix_web::test]
async fn token_expiry_closes_1008_unless_refreshed() {
    let app = spawn_app().await;
    let short = |user: &str, scopes: &[&str]| {
        app.tokens
            .mint(&claims_for(user, Some("Short"), scopes, 2))
            .unwrap()
    };

    let mut lapsing = app.connect_token(&short("alice", &["demo"])).await;
    let mut refreshed = app.connect_token(&short("alice", &["demo"])).await;
    assert_alive(&mut lapsing).await;
    let started = Instant::now();

    let lapse = async {
        let code = lapsing.closed().await;
        (code, started.elapsed())
    };
    let keep = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let fresh = app.token("alice", &["demo"]);
        let r = refreshed
            .command(json!({"type": "refresh", "token": fresh}))
            .await;
        assert_eq!(refreshed.recv().await, json!({"type": "ok", "ref": r}));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_alive(&mut refreshed).await;
    };
    let ((code, after), ()) = tokio::join!(lapse, keep);
    assert_eq!(code, Some(CloseCode::Policy), "closed after {after:?}");
    assert!(
        after < Duration::from_secs(6),
        "closed only after {after:?}"
    );

    // Refused refreshes leave the session as it was.
    let mut c = app.connect("alice", &["demo", "other"]).await;
    let r = c
        .command(json!({"type": "refresh", "token": "garbage"}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (&f["type"], &f["code"], &f["ref"]),
        (&json!("error"), &json!("unauthorized"), &json!(r)),
        "{f}"
    );
    let forged = TokenKeys::new("not-the-secret")
        .mint(&claims_for("alice", None, &["demo"], 3600))
        .unwrap();
    let r = c.command(json!({"type": "refresh", "token": forged})).await;
    let f = c.recv().await;
    assert_eq!(
        (&f["code"], &f["ref"]),
        (&json!("unauthorized"), &json!(r)),
        "{f}"
    );
    let expired = app
        .tokens
        .mint(&claims_for("alice", None, &["demo"], -60))
        .unwrap();
    let r = c
        .command(json!({"type": "refresh", "token": expired}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (&f["code"], &f["ref"]),
        (&json!("unauthorized"), &json!(r)),
        "{f}"
    );
    let bobs = app.token("bob", &["demo", "other"]);
    let r = c.command(json!({"type": "refresh", "token": bobs})).await;
    let f = c.recv().await;
    assert_eq!(
        (&f["type"], &f["code"], &f["ref"]),
        (&json!("error"), &json!("forbidden"), &json!(r)),
        "{f}"
    );

    // A narrower token ends the subscriptions it no longer allows.
    c.subscribe("feed:demo", None).await;
    c.subscribe("feed:other", None).await;
    let narrower = app.token("alice", &["demo"]);
    let r = c
        .command(json!({"type": "refresh", "token": narrower}))
        .await;
    let mut frames = vec![c.recv().await, c.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        frames,
        vec![
            json!({"type": "ok", "ref": r}),
            json!({"type": "unsubscribed", "channel": "feed:other"}),
        ]
    );
    let (status, body) = app.post_events(&events("other", "o", 1)).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app.post_events(&events("demo", "d", 1)).await;
    assert_eq!(status, 202, "{body}");
    let f = c.recv().await;
    assert_eq!(
        (&f["type"], &f["channel"]),
        (&json!("event"), &json!("feed:demo")),
        "{f}"
    );
    c.expect_silence(Duration::from_millis(300)).await;
    let f = c
        .command(json!({"type": "subscribe", "channel": "feed:other"}))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("forbidden"), &json!(f)),
        "{e}"
    );
}

#[derive(diesel::QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    key: String,
}

#[derive(diesel::QueryableByName)]
struct OffsetRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    feed_offset: i64,
}

#[actix_web::test]
async fn sigterm_loses_nothing_acknowledged() {
    let db_url = fresh_database().await;
    let mut hub = HubProcess::start(&db_url, &[]).await;
    let port = hub.port;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let token = TokenKeys::new(SECRET)
        .mint(&claims_for("alice", Some("Alice"), &["demo"], 3600))
        .unwrap();
    let mut ws = connect_at(port, &token).await;
    ws.subscribe("feed:demo", None).await;
    // Keep reading (or it would be a slow consumer) until the close.
    let watch = async move {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), ws.stream.next()).await {
                Err(_) => return (None, seen, "no close within 30 s".to_string()),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let f: Value = serde_json::from_str(&t).unwrap();
                    seen.push(f);
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return (frame.as_ref().map(|f| f.code), seen, format!("{frame:?}"))
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return (None, seen, format!("error: {e}")),
                Ok(None) => return (None, seen, "end of stream".to_string()),
            }
        }
    };
    let watch = actix_web::rt::spawn(watch);

    let stopping = Rc::new(Cell::new(false));
    let acked_batches = Rc::new(Cell::new(0usize));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base) = (http.clone(), base.clone());
        let (stopping, acked_batches) = (stopping.clone(), acked_batches.clone());
        writers.push(actix_web::rt::spawn(async move {
            let mut acked: Vec<String> = Vec::new();
            let mut refused = 0;
            for n in 0.. {
                let keys: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}")).collect();
                let batch: Vec<Value> = keys
                    .iter()
                    .map(|k| json!({"scope": "demo", "kind": "load", "key": k}))
                    .collect();
                let res = http
                    .post(format!("{base}/api/events"))
                    .bearer_auth(INGEST_KEY)
                    .json(&batch)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 202 => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        assert_eq!(body["accepted"], 20, "{body}");
                        acked.extend(keys);
                        acked_batches.set(acked_batches.get() + 1);
                    }
                    Ok(r) => {
                        let status = r.status();
                        assert!(stopping.get(), "refused with {status} before SIGTERM");
                        refused += 1;
                        if refused > 50 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        assert!(stopping.get(), "request failed before SIGTERM: {e}");
                        break;
                    }
                }
            }
            acked
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        acked_batches.get() > 0,
        "no batch acknowledged after 1 s of load:\n{}",
        hub.log()
    );
    let pid = hub.pid();
    stopping.set(true);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(15), hub.child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running 15 s after SIGTERM:\n{}", hub.log()))
        .unwrap();
    assert!(status.success(), "exit status {status}:\n{}", hub.log());

    let (code, seen, how) = watch.await.unwrap();
    assert_eq!(
        code,
        Some(CloseCode::Away),
        "the client was not told 1001 ({how}):\n{}",
        hub.log()
    );
    let live = offsets(&seen);
    assert_eq!(
        live,
        (1..=live.len() as i64).collect::<Vec<_>>(),
        "live frames in order"
    );

    let mut acked = HashSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }

    let mut conn = AsyncPgConnection::establish(&db_url).await.unwrap();
    let stored: HashSet<String> =
        diesel::sql_query("SELECT key FROM idempotency_keys WHERE scope = 'demo'")
            .load::<KeyRow>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not stored, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let offsets: Vec<i64> = diesel::sql_query(
        "SELECT e.feed_offset FROM events e JOIN idempotency_keys k ON k.event_id = e.event_id \
         WHERE e.scope = 'demo' ORDER BY e.feed_offset",
    )
    .load::<OffsetRow>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.feed_offset)
    .collect();
    assert_eq!(offsets.len(), stored.len(), "every key has its event");
    assert_eq!(
        offsets,
        (1..=offsets.len() as i64).collect::<Vec<_>>(),
        "offsets without gap"
    );
    assert!(live.len() <= offsets.len());
}

#[actix_web::test]
async fn graceful_stop_in_process() {
    let app = spawn_app().await;
    let mut c = app.connect("alice", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    let (code, ()) = tokio::join!(c.closed(), app.stopper.stop());
    assert_eq!(code, Some(CloseCode::Away));
    let after = reqwest::Client::new().get(app.url("/health")).send().await;
    assert!(after.is_err(), "still serving after the stop: {after:?}");
}

#[actix_web::test]
async fn replicas_starting_together_create_their_database_once() {
    // Seen with two replicas started at once: one CREATE DATABASE lost the
    // race on pg_database's unique index and its replica exited.
    let name = format!("pulsehub_race_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", server_url());
    let starts = (0..4).map(|_| pulsehub::db::ensure_database(&url));
    for started in futures_util::future::join_all(starts).await {
        started.expect("every replica starts");
    }
    let mut admin = AsyncPgConnection::establish(&format!("{}/postgres", server_url()))
        .await
        .unwrap();
    diesel::sql_query(format!("DROP DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
}
