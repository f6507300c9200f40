//! Recoverable channels: offsets, `since` replay, recent items, history paging.

use crate::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn since_replays_exactly_the_missed_items_then_live_ones() {
    let app = spawn_app().await;
    let mut c = app.connect("alice", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    app.post_events(&events("demo", "a", 5)).await;
    let seen = c.recv_n(5).await;
    assert_eq!(offsets(&seen), vec![1, 2, 3, 4, 5]);
    drop(c);

    // Missed while away.
    app.post_events(&events("demo", "b", 7)).await;
    let mut c = app.connect("alice", &["demo"]).await;
    let sub = c.subscribe("feed:demo", Some(5)).await;
    assert_eq!(
        (sub["offset"].as_i64(), sub["recovered"].as_bool()),
        (Some(12), Some(true))
    );
    let replay = c.recv_n(7).await;
    assert_eq!(offsets(&replay), (6..=12).collect::<Vec<_>>());
    assert_eq!(replay[0]["event"]["data"]["tag"], "b");
    // Then live ones.
    app.post_events(&events("demo", "c", 3)).await;
    let live = c.recv_n(3).await;
    assert_eq!(offsets(&live), vec![13, 14, 15]);
    c.expect_silence(std::time::Duration::from_millis(300))
        .await;

    // Up to date: nothing replayed.
    let mut d = app.connect("alice", &["demo"]).await;
    let sub = d.subscribe("feed:demo", Some(15)).await;
    assert_eq!(
        (sub["offset"].as_i64(), sub["recovered"].as_bool()),
        (Some(15), Some(true))
    );
    d.expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[actix_web::test]
async fn a_long_replay_hands_over_to_live_without_gap_or_duplicate() {
    let app = spawn_app().await;
    for i in 0..5 {
        assert_eq!(
            app.post_events(&events("demo", &format!("p{i}"), 100))
                .await
                .0,
            202
        );
    }
    let mut c = app.connect("alice", &["demo"]).await;
    let r = c
        .command(json!({"type": "subscribe", "channel": "feed:demo", "since": 0}))
        .await;
    // Events keep arriving while the replay (several pages) is read.
    let writer = async {
        for i in 0..10 {
            assert_eq!(
                app.post_events(&events("demo", &format!("q{i}"), 20))
                    .await
                    .0,
                202
            );
        }
    };
    let reader = async {
        let sub = c.recv().await;
        assert_eq!(
            (sub["type"].as_str(), sub["ref"].as_i64()),
            (Some("subscribed"), Some(r))
        );
        assert_eq!(sub["recovered"], true);
        let mut got = Vec::new();
        while got.len() < 700 {
            got.push(c.recv().await);
        }
        got
    };
    let ((), got) = futures_util::join!(writer, reader);
    assert_eq!(offsets(&got), (1..=700).collect::<Vec<_>>());
    c.expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[actix_web::test]
async fn without_since_or_from_the_future_the_recent_items_come() {
    let app = spawn_app().await;
    app.post_events(&events("demo", "a", 25)).await;
    let mut c = app.connect("alice", &["demo"]).await;
    let sub = c.subscribe("feed:demo", None).await;
    assert_eq!(
        (sub["offset"].as_i64(), sub["recovered"].as_bool()),
        (Some(25), Some(false))
    );
    let recent = c.recv_n(20).await;
    assert_eq!(offsets(&recent), (6..=25).collect::<Vec<_>>());

    let mut d = app.connect("alice", &["demo"]).await;
    let sub = d.subscribe("feed:demo", Some(99)).await;
    assert_eq!(
        (sub["offset"].as_i64(), sub["recovered"].as_bool()),
        (Some(25), Some(false))
    );
    let first = d.recv().await;
    assert_eq!(first["offset"], 6);
}

#[actix_web::test]
async fn pruned_history_is_not_recovered() {
    let app = spawn_app().await;
    app.post_events(&events("demo", "a", 10)).await;
    use diesel_async::SimpleAsyncConnection;
    app.db()
        .await
        .batch_execute("DELETE FROM events WHERE feed_offset <= 4")
        .await
        .unwrap();
    let mut c = app.connect("alice", &["demo"]).await;
    // Offsets 3 and 4 are gone: since=2 cannot be recovered; the recent items come.
    let sub = c.subscribe("feed:demo", Some(2)).await;
    assert_eq!(sub["recovered"], false);
    let recent = c.recv_n(6).await;
    assert_eq!(offsets(&recent), (5..=10).collect::<Vec<_>>());
    // since=4 needs 5 onwards, which is kept: a recovery.
    let sub = c.subscribe("feed:demo", Some(4)).await;
    assert_eq!(sub["recovered"], true);
    let got = c.recv_n(6).await;
    assert_eq!(offsets(&got), (5..=10).collect::<Vec<_>>());
}

#[actix_web::test]
async fn history_pages_forward() {
    let app = spawn_app().await;
    app.post_events(&events("demo", "a", 250)).await;
    let token = app.token("alice", &["demo"]);
    let (status, page) = app
        .get("/api/channels/feed:demo/history?since=0&limit=100", &token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (page["offset"].as_i64(), page["recovered"].as_bool()),
        (Some(250), Some(true))
    );
    assert_eq!(
        offsets(page["items"].as_array().unwrap()),
        (1..=100).collect::<Vec<_>>()
    );
    let (_, page) = app
        .get(
            "/api/channels/feed:demo/history?since=200&limit=100",
            &token,
        )
        .await;
    assert_eq!(
        offsets(page["items"].as_array().unwrap()),
        (201..=250).collect::<Vec<_>>()
    );
    let (_, page) = app
        .get("/api/channels/feed:demo/history?limit=5", &token)
        .await;
    assert_eq!(
        offsets(page["items"].as_array().unwrap()),
        (246..=250).collect::<Vec<_>>()
    );
    let (status, body) = app
        .get("/api/channels/feed:demo/history?limit=0", &token)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = app.get("/api/channels/stats:demo/history", &token).await;
    assert_eq!(status, 400);
    let (status, _) = app.get("/api/channels/feed:other/history", &token).await;
    assert_eq!(status, 403);
    let (status, _) = app.get("/api/channels/user:bob/history", &token).await;
    assert_eq!(status, 403);
    let (status, body) = app.get("/api/channels/user:alice/history", &token).await;
    assert_eq!((status, body["offset"].as_i64()), (200, Some(0)));
}
