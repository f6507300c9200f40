//! Presence across tabs and users, activity and idleness, and clients on
//! the long-poll fallback.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

#[actix_web::test]
async fn two_tabs_are_one_user_and_closing_one_is_not_a_leave() {
    let app = spawn_app().await;
    let mut watcher = app.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    let sync = watcher.recv().await;
    assert_eq!(
        (sync["op"].as_str(), sync["count"].as_i64()),
        (Some("sync"), Some(1))
    );
    assert_eq!(sync["users"][0]["id"], "watcher");

    let mut tab1 = app.connect("alice", &["demo"]).await;
    tab1.subscribe("presence:demo", None).await;
    let sync = tab1.recv().await;
    assert_eq!(sync["count"], 2);
    let join = watcher.recv().await;
    assert_eq!(
        (join["op"].as_str(), join["count"].as_i64()),
        (Some("join"), Some(2))
    );
    assert_eq!(join["user"]["id"], "alice");
    assert_eq!(join["user"]["name"], "Alice");
    assert_eq!(join["user"]["sessions"], 1);
    assert_eq!(join["user"]["status"], "online");

    // A second tab (any channel of the scope) is an update, not a join.
    let mut tab2 = app.connect("alice", &["demo"]).await;
    tab2.subscribe("feed:demo", None).await;
    let update = watcher.recv().await;
    assert_eq!(
        (update["op"].as_str(), update["count"].as_i64()),
        (Some("update"), Some(2))
    );
    assert_eq!(update["user"]["sessions"], 2);

    let (status, body) = app
        .get("/api/scopes/demo/presence", &app.token("x", &["demo"]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 2);
    let alice = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "alice")
        .unwrap();
    assert_eq!(alice["sessions"], 2);

    // Closing one tab: an update with one session, and no leave even after the grace.
    drop(tab2);
    let update = watcher.recv().await;
    assert_eq!(
        (update["op"].as_str(), update["count"].as_i64()),
        (Some("update"), Some(2))
    );
    assert_eq!(update["user"]["sessions"], 1);
    watcher.expect_silence(Duration::from_millis(800)).await;

    // Closing the last tab: an update with no sessions (still counted during
    // the grace), then the leave.
    drop(tab1);
    let update = watcher.recv().await;
    assert_eq!(
        (update["op"].as_str(), update["user"]["sessions"].as_i64()),
        (Some("update"), Some(0))
    );
    let leave = watcher.recv().await;
    assert_eq!(
        (leave["op"].as_str(), leave["count"].as_i64()),
        (Some("leave"), Some(1))
    );
    assert_eq!(leave["user"], json!({"id": "alice"}));
}

#[actix_web::test]
async fn a_quick_reconnect_does_not_flap() {
    let app = spawn_with(|c| c.presence_grace_ms = 1500).await;
    let mut watcher = app.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    watcher.recv().await;
    let mut tab = app.connect("alice", &["demo"]).await;
    tab.subscribe("presence:demo", None).await;
    assert_eq!(watcher.recv().await["op"], "join");
    drop(tab);
    assert_eq!(watcher.recv().await["op"], "update");
    // A page refresh: back within the grace.
    let mut tab = app.connect("alice", &["demo"]).await;
    tab.subscribe("presence:demo", None).await;
    let f = watcher.recv().await;
    assert_eq!(
        (f["op"].as_str(), f["user"]["sessions"].as_i64()),
        (Some("update"), Some(1))
    );
    watcher.expect_silence(Duration::from_millis(2000)).await;
}

#[actix_web::test]
async fn activity_and_idle() {
    let app = spawn_with(|c| c.idle_secs = 1).await;
    let mut watcher = app.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    watcher.recv().await;
    let mut alice = app.connect("alice", &["demo"]).await;
    alice.subscribe("stats:demo", None).await;
    assert_eq!(watcher.recv().await["op"], "join");
    // Both become idle after a second without activity.
    let mut idle = Vec::new();
    while idle.len() < 2 {
        let f = watcher.recv().await;
        assert_eq!(f["op"], "update");
        assert_eq!(f["user"]["status"], "idle");
        idle.push(f["user"]["id"].as_str().unwrap().to_string());
    }
    idle.sort();
    assert_eq!(idle, ["alice", "watcher"]);
    // Activity brings alice back, with what she is doing.
    let r = alice
        .command(json!({"type": "activity", "action": "editing"}))
        .await;
    let (ok, _) = alice.recv_until("ok").await;
    assert_eq!(ok["ref"], r);
    let f = watcher.recv().await;
    assert_eq!(f["op"], "update");
    assert_eq!(f["user"]["id"], "alice");
    assert_eq!(f["user"]["status"], "online");
    assert_eq!(f["user"]["activity"], "editing");
}

#[actix_web::test]
async fn online_users_in_stats_follow_presence() {
    let app = spawn_app().await;
    let mut a = app.connect("alice", &["demo"]).await;
    a.subscribe("stats:demo", None).await;
    let first = a.recv().await;
    assert_eq!(first["stats"]["online_users"], 1);
    let mut b = app.connect("bob", &["demo"]).await;
    b.subscribe("feed:demo", None).await;
    let f = a.recv().await;
    assert_eq!(f["type"], "stats");
    assert_eq!(f["stats"]["online_users"], 2);
    assert_eq!(f["changed"], json!(["/online_users"]));
    assert!(f["version"].as_i64() > first["version"].as_i64());
}

#[actix_web::test]
async fn resubscribing_is_not_leaving() {
    let app = spawn_app().await;
    let mut watcher = app.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    watcher.recv().await;
    let mut alice = app.connect("alice", &["demo"]).await;
    alice.subscribe("feed:demo", None).await;
    assert_eq!(watcher.recv().await["op"], "join");
    // Same channel again (e.g. with a new `since`): no presence change at all.
    alice.subscribe("feed:demo", Some(0)).await;
    watcher.expect_silence(Duration::from_millis(600)).await;
}

/// The next presence frame about `user`, skipping others.
async fn presence_of(c: &mut WsClient, user: &str) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "presence" && f["user"]["id"] == user {
            return f;
        }
    }
}

#[actix_web::test]
async fn a_long_polling_user_is_present_while_polling_and_leaves_after_the_grace() {
    // A grace long enough that the re-poll below always comes within it.
    let app = spawn_with(|c| c.presence_grace_ms = 2000).await;
    let mut watcher = app.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    assert_eq!(watcher.recv().await["op"], "sync");

    let carol = app.token("carol", &["demo"]);
    let poll = |since: i64| {
        let req = app
            .http
            .get(app.url(&format!(
                "/api/channels/feed:demo/history?since={since}&wait=20"
            )))
            .bearer_auth(&carol);
        actix_web::rt::spawn(async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        })
    };

    // Polling: carol joins like a WebSocket session would.
    let first = poll(0);
    let join = presence_of(&mut watcher, "carol").await;
    assert_eq!(
        (
            join["op"].as_str(),
            join["count"].as_i64(),
            join["user"]["sessions"].as_i64()
        ),
        (Some("join"), Some(2), Some(1)),
        "{join}"
    );
    assert_eq!(join["user"]["name"], "Carol");
    let (_, body) = app.get("/api/scopes/demo/presence", &carol).await;
    assert!(
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == "carol"),
        "{body}"
    );

    // An event answers the poll; the client polls again at once: no frame.
    assert_eq!(app.post_events(&events("demo", "lp", 1)).await.0, 202);
    assert_eq!(
        offsets(&first.await.unwrap()["items"].as_array().unwrap().clone()),
        [1]
    );
    let second = poll(1);
    assert_eq!(app.post_events(&events("demo", "lp2", 1)).await.0, 202);
    assert_eq!(
        offsets(&second.await.unwrap()["items"].as_array().unwrap().clone()),
        [2]
    );

    // No more polls: carol leaves after the grace, and nothing came between.
    let leave = presence_of(&mut watcher, "carol").await;
    assert_eq!(
        (leave["op"].as_str(), leave["count"].as_i64()),
        (Some("leave"), Some(1)),
        "{leave}"
    );
    // A poll that does not wait, or on a channel of no scope, is no presence.
    let (status, _) = app
        .get("/api/channels/feed:demo/history?since=0", &carol)
        .await;
    assert_eq!(status, 200);
    watcher.expect_silence(Duration::from_millis(500)).await;
}

#[actix_web::test]
async fn a_long_polling_user_on_one_replica_is_present_on_the_other() {
    let apps = spawn_cluster(2, |_| {}).await;
    let (a, b) = (&apps[0], &apps[1]);
    let mut watcher = a.connect("watcher", &["demo"]).await;
    watcher.subscribe("presence:demo", None).await;
    assert_eq!(watcher.recv().await["op"], "sync");

    let carol = b.token("carol", &["demo"]);
    let req = b
        .http
        .get(b.url("/api/channels/feed:demo/history?since=0&wait=20"))
        .bearer_auth(&carol);
    let poll = actix_web::rt::spawn(async move { req.send().await.unwrap().status() });
    let join = presence_of(&mut watcher, "carol").await;
    assert_eq!(
        (join["op"].as_str(), join["count"].as_i64()),
        (Some("join"), Some(2))
    );

    assert_eq!(a.post_events(&events("demo", "lp", 1)).await.0, 202);
    assert_eq!(poll.await.unwrap(), 200);
    let leave = presence_of(&mut watcher, "carol").await;
    assert_eq!(
        (leave["op"].as_str(), leave["count"].as_i64()),
        (Some("leave"), Some(1))
    );
}
