//! Every server frame type and the command replies of PROTOCOL.md.

use crate::helpers::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[actix_web::test]
async fn welcome_ping_activity_and_unsubscribe() {
    let app = spawn_app().await;
    let url = format!(
        "ws://127.0.0.1:{}/ws?token={}",
        app.port,
        app.token("alice", &["demo"])
    );
    let (mut raw, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    let welcome: serde_json::Value = match raw.next().await.unwrap().unwrap() {
        tokio_tungstenite::tungstenite::Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(welcome["user"], json!({"id": "alice", "name": "Alice"}));
    assert_eq!(welcome["instance"], "hub-test");
    assert_eq!(welcome["heartbeat"], 20);
    assert!(welcome["session"].as_str().unwrap().starts_with("s_"));
    drop(raw);

    let mut c = app.connect("alice", &["demo"]).await;
    let r = c.command(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "ref": r}));
    let r = c
        .command(json!({"type": "activity", "action": "viewing", "target": "dashboard"}))
        .await;
    assert_eq!(c.recv().await, json!({"type": "ok", "ref": r}));

    let sub = c.subscribe("feed:demo", None).await;
    assert_eq!(sub["offset"], 0);
    assert_eq!(sub["recovered"], false);
    let r = c
        .command(json!({"type": "unsubscribe", "channel": "feed:demo"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "unsubscribed", "ref": r, "channel": "feed:demo"})
    );
    // Unsubscribed: events no longer arrive.
    app.post_events(&events("demo", "x", 2)).await;
    c.expect_silence(std::time::Duration::from_millis(500))
        .await;
}

#[actix_web::test]
async fn event_and_notification_frames() {
    let app = spawn_app().await;
    let mut c = app.connect("alice", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    c.subscribe("user:alice", None).await;
    c.subscribe("system", None).await;

    let (status, _) = app
        .post_events(&json!({"scope":"demo","kind":"check_in",
            "actor":{"id":"u7","name":"Maria"},
            "subject":{"type":"ticket","id":"t9","state":"used"},
            "data":{"gate":"B"},"at":"2026-11-21T21:00:00Z"}))
        .await;
    assert_eq!(status, 202);
    let ev = c.recv().await;
    assert_eq!(ev["type"], "event");
    assert_eq!(ev["channel"], "feed:demo");
    assert_eq!(ev["offset"], 1);
    let e = &ev["event"];
    assert_eq!(e["kind"], "check_in");
    assert_eq!(e["actor"], json!({"id":"u7","name":"Maria"}));
    assert_eq!(
        e["subject"],
        json!({"type":"ticket","id":"t9","state":"used"})
    );
    assert_eq!(e["data"], json!({"gate":"B"}));
    assert_eq!(e["at"], "2026-11-21T21:00:00.000Z");
    assert!(e["id"].as_str().unwrap().len() >= 32);

    for target in ["user:alice", "system"] {
        let (status, body) = app
            .post_notification(&json!({"target": target, "level": "warning", "title": "Maintenance", "body": "at noon"}))
            .await;
        assert_eq!((status, body["offset"].as_i64()), (202, Some(1)));
        let n = c.recv().await;
        assert_eq!(n["type"], "notification");
        assert_eq!(n["channel"], target);
        assert_eq!(n["offset"], 1);
        assert_eq!(n["notification"]["id"], body["id"]);
        assert_eq!(n["notification"]["level"], "warning");
        assert_eq!(n["notification"]["title"], "Maintenance");
        assert_eq!(n["notification"]["body"], "at noon");
    }
    // Another user's notification does not reach alice.
    let (status, _) = app
        .post_notification(&json!({"target": "user:bob", "level": "info", "title": "Hi"}))
        .await;
    assert_eq!(status, 202);
    c.expect_silence(std::time::Duration::from_millis(400))
        .await;
    // A bad notification is a 400 with details.
    let (status, body) = app
        .post_notification(&json!({"target": "feed:demo", "level": "loud"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert_eq!(body["error"]["details"].as_array().unwrap().len(), 3);
}

#[actix_web::test]
async fn error_codes_over_websocket() {
    let app = spawn_with(|c| c.max_subscriptions = 2).await;
    let mut c = app.connect("alice", &["demo"]).await;
    let cases = [
        (
            json!({"type": "subscribe", "channel": "stats:acme"}),
            "forbidden",
        ),
        (
            json!({"type": "subscribe", "channel": "user:bob"}),
            "forbidden",
        ),
        (
            json!({"type": "subscribe", "channel": "video:x"}),
            "not_found",
        ),
        (
            json!({"type": "subscribe", "channel": "feed:no spaces"}),
            "bad_request",
        ),
        (json!({"type": "subscribe"}), "bad_request"),
        (json!({"type": "teleport"}), "not_found"),
        (json!({"type": "refresh", "token": "nope"}), "unauthorized"),
    ];
    for (cmd, code) in cases {
        let r = c.command(cmd.clone()).await;
        let f = c.recv().await;
        assert_eq!(
            (f["type"].as_str(), f["ref"].as_i64(), f["code"].as_str()),
            (Some("error"), Some(r), Some(code)),
            "{cmd} → {f}"
        );
        assert!(!f["message"].as_str().unwrap().is_empty());
    }
    c.send_text("{not json").await;
    assert_eq!(c.recv().await["code"], "bad_request");
    c.send_text("x".repeat(70 * 1024)).await;
    assert_eq!(c.recv().await["code"], "too_large");
    c.subscribe("feed:demo", None).await;
    c.subscribe("system", None).await;
    let r = c
        .command(json!({"type": "subscribe", "channel": "presence:demo"}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (f["ref"].as_i64(), f["code"].as_str()),
        (Some(r), Some("limit_reached"))
    );
    // Still alive after all that.
    let r = c.command(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "ref": r}));
}

/// Frames the hub refuses before parsing them still get their `ref` back,
/// so a client can tell which command failed.
#[actix_web::test]
async fn errors_for_unparsed_frames_carry_the_ref() {
    let app = spawn_with(|c| {
        c.command_rate = 1;
        c.command_burst = 3;
    })
    .await;
    let mut c = app.connect("alice", &["demo"]).await;
    c.send_text(r#"{"type":"ping","ref":41,"#).await;
    let f = c.recv().await;
    assert_eq!(
        (f["ref"].as_i64(), f["code"].as_str()),
        (Some(41), Some("bad_request"))
    );
    let pad = "x".repeat(70 * 1024);
    c.send_text(format!(r#"{{"type":"ping","ref":42,"pad":"{pad}"}}"#))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (f["ref"].as_i64(), f["code"].as_str()),
        (Some(42), Some("too_large"))
    );
    // Over the rate: every refused ping names itself.
    let mut limited = Vec::new();
    for r in 100..110 {
        c.send_json(json!({"type": "ping", "ref": r})).await;
    }
    for _ in 100..110 {
        let f = c.recv().await;
        if f["code"] == "rate_limited" {
            limited.push(f["ref"].as_i64().expect("rate_limited without ref"));
        }
    }
    assert!(!limited.is_empty(), "nothing was rate limited");
    assert!(
        limited.iter().all(|r| (100..110).contains(r)),
        "{limited:?}"
    );
}

#[actix_web::test]
async fn internal_error_when_the_database_breaks() {
    let app = spawn_app().await;
    let mut c = app.connect("alice", &["demo"]).await;
    use diesel_async::SimpleAsyncConnection;
    app.db()
        .await
        .batch_execute("DROP TABLE events CASCADE")
        .await
        .unwrap();
    let r = c
        .command(json!({"type": "subscribe", "channel": "feed:demo"}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (f["type"].as_str(), f["ref"].as_i64(), f["code"].as_str()),
        (Some("error"), Some(r), Some("internal")),
        "{f}"
    );
    // The message says nothing about the database's internals.
    assert_eq!(f["message"], "internal error");
}

/// A raw frame, as a client that fragments messages sends it.
fn frame(data: &[u8], opcode: OpCode, fin: bool) -> Message {
    Message::Frame(Frame::message(data.to_vec(), opcode, fin))
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);

#[actix_web::test]
async fn fragmented_messages_are_reassembled() {
    let app = spawn_with(|c| c.max_frame_bytes = 256).await;
    let mut c = app.connect("alice", &["demo"]).await;
    // A command in three fragments, with a ping between them (control
    // frames may interleave) and a character split across two fragments.
    let cmd = r#"{"type":"subscribe","ref":7,"channel":"feed:demo","x":"é"}"#.as_bytes();
    let split = cmd.iter().position(|&b| b == 0xc3).unwrap() + 1;
    c.stream.send(frame(&cmd[..10], TEXT, false)).await.unwrap();
    c.stream.send(Message::Ping(b"p".to_vec())).await.unwrap();
    c.stream
        .send(frame(&cmd[10..split], CONTINUE, false))
        .await
        .unwrap();
    c.stream
        .send(frame(&cmd[split..], CONTINUE, true))
        .await
        .unwrap();
    let f = c.recv().await;
    assert_eq!(
        (f["type"].as_str(), &f["ref"]),
        (Some("subscribed"), &json!(7)),
        "{f}"
    );

    // A fragmented message over the hard cap (16 × 256 bytes) closes 1009.
    let chunk = vec![b' '; 3000];
    c.stream.send(frame(b"{", TEXT, false)).await.unwrap();
    c.stream.send(frame(&chunk, CONTINUE, false)).await.unwrap();
    let _ = c.stream.send(frame(&chunk, CONTINUE, true)).await;
    assert_eq!(c.closed().await, Some(CloseCode::Size));
}

#[actix_web::test]
async fn text_that_is_not_utf8_closes_1007() {
    let app = spawn_app().await;
    let mut whole = app.connect("alice", &["demo"]).await;
    whole
        .stream
        .send(frame(&[b'"', 0xff, b'"'], TEXT, true))
        .await
        .unwrap();
    assert_eq!(whole.closed().await, Some(CloseCode::Invalid));

    let mut fragmented = app.connect("alice", &["demo"]).await;
    fragmented
        .stream
        .send(frame(&[b'"', 0xc3], TEXT, false))
        .await
        .unwrap();
    fragmented
        .stream
        .send(frame(b"\"", CONTINUE, true))
        .await
        .unwrap();
    assert_eq!(fragmented.closed().await, Some(CloseCode::Invalid));

    // Others are unaffected.
    let mut other = app.connect("bob", &["demo"]).await;
    let r = other.command(json!({"type": "ping"})).await;
    assert_eq!(other.recv().await, json!({"type": "pong", "ref": r}));
}
