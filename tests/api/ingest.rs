use crate::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn ingest_then_history() {
    let app = spawn_app().await;
    let (status, body) = app.post_events(&events("demo", "a", 3)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 3, "duplicates": 0}));
    let token = app.token("alice", &["demo"]);
    let (status, body) = app
        .get("/api/channels/feed:demo/history?since=0", &token)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 3);
    assert_eq!(offsets(body["items"].as_array().unwrap()), vec![1, 2, 3]);
}

#[actix_web::test]
async fn idempotency_keys_make_retries_harmless() {
    let app = spawn_app().await;
    let mut c = app.connect("alice", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    let batch = events("demo", "k", 5);
    assert_eq!(
        app.post_events(&batch).await.1,
        json!({"accepted": 5, "duplicates": 0})
    );
    assert_eq!(
        app.post_events(&batch).await.1,
        json!({"accepted": 0, "duplicates": 5})
    );
    // A key repeated inside one batch, and one seen before.
    let mixed = json!([
        {"scope": "demo", "kind": "x", "key": "new-1"},
        {"scope": "demo", "kind": "x", "key": "new-1"},
        {"scope": "demo", "kind": "x", "key": "k-0"},
        {"scope": "demo", "kind": "x"},
        {"scope": "other", "kind": "x", "key": "k-0"}
    ]);
    assert_eq!(
        app.post_events(&mixed).await.1,
        json!({"accepted": 3, "duplicates": 2})
    );
    let got = c.recv_n(7).await;
    assert_eq!(offsets(&got), (1..=7).collect::<Vec<_>>());
    c.expect_silence(std::time::Duration::from_millis(300))
        .await;
    let (_, stats) = app
        .get("/api/scopes/demo/stats", &app.token("a", &["demo"]))
        .await;
    assert_eq!(stats["counts"], json!({"message.sent": 5, "x": 2}));
}

#[actix_web::test]
async fn an_invalid_item_stores_nothing() {
    let app = spawn_app().await;
    let mut batch = events("demo", "v", 3);
    batch[1]["kind"] = json!("Not Valid");
    batch[2]["data"] = json!("text");
    let (status, body) = app.post_events(&batch).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(
        (details[0]["index"].as_i64(), details[0]["field"].as_str()),
        (Some(1), Some("kind"))
    );
    assert_eq!(
        (details[1]["index"].as_i64(), details[1]["field"].as_str()),
        (Some(2), Some("data"))
    );
    let token = app.token("a", &["demo"]);
    let (_, history) = app
        .get("/api/channels/feed:demo/history?since=0", &token)
        .await;
    assert_eq!(history["offset"], 0);
    assert_eq!(history["items"], json!([]));
    let (_, stats) = app.get("/api/scopes/demo/stats", &token).await;
    assert_eq!(stats["counts"], json!({}));
    // The valid items alone are accepted afterwards: the keys were not burnt.
    assert_eq!(
        app.post_events(&events("demo", "v", 3)).await.1["accepted"],
        3
    );
}

#[actix_web::test]
async fn concurrent_requests_get_gapless_offsets() {
    let app = spawn_app().await;
    let posts = (0..40).map(|i| {
        let app = &app;
        async move { app.post_events(&events("demo", &format!("c{i}"), 25)).await }
    });
    for (status, body) in futures_util::future::join_all(posts).await {
        assert_eq!((status, body["accepted"].as_i64()), (202, Some(25)));
    }
    let token = app.token("a", &["demo"]);
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let (_, page) = app
            .get(
                &format!("/api/channels/feed:demo/history?since={since}&limit=1000"),
                &token,
            )
            .await;
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        since = items.last().unwrap()["offset"].as_i64().unwrap();
        all.extend(items);
    }
    assert_eq!(offsets(&all), (1..=1000).collect::<Vec<_>>());
    // Each request's events are contiguous and in request order.
    let mut by_tag: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for f in &all {
        let tag = f["event"]["data"]["tag"].as_str().unwrap().to_string();
        by_tag
            .entry(tag)
            .or_default()
            .push(f["offset"].as_i64().unwrap());
    }
    for (tag, offs) in by_tag {
        assert!(offs.windows(2).all(|w| w[1] == w[0] + 1), "{tag}: {offs:?}");
    }
}

#[actix_web::test]
async fn health_and_ready() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["components"]["postgres"], "up");
    assert_eq!(body["components"]["memory"], "up");
    // Metrics count what happened.
    let mut c = app.connect("alice", &["demo"]).await;
    c.subscribe("feed:demo", None).await;
    app.post_events(&events("demo", "m", 3)).await;
    c.recv_n(3).await;
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for line in [
        "pulsehub_sessions 1",
        "pulsehub_subscriptions 1",
        "pulsehub_broker_up 1",
        "pulsehub_connections_total 1",
        "pulsehub_frames_in_total 1",
        "pulsehub_frames_out_total 3",
        "pulsehub_ingest_batch_events_sum 3.0",
        r#"pulsehub_stage_seconds_count{stage="receive"} 1"#,
        r#"pulsehub_stage_seconds_count{stage="queue"} 1"#,
        r#"pulsehub_stage_seconds_count{stage="statements"} 1"#,
        r#"pulsehub_stage_seconds_count{stage="commit"} 1"#,
        r#"pulsehub_stage_seconds_count{stage="dispatch"} 1"#,
        r#"pulsehub_stage_seconds_count{stage="write"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("pulsehub"));
}
