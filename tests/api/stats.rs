//! Live stats: debounced snapshots, exact final numbers, versions and `changed`.

use crate::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn a_burst_of_1000_events_gives_few_frames_and_exact_numbers() {
    let app = spawn_app().await;
    let mut c = app.connect("alice", &["demo"]).await;
    c.subscribe("stats:demo", None).await;
    let first = c.recv().await;
    assert_eq!(first["type"], "stats");
    assert_eq!(first["channel"], "stats:demo");
    assert_eq!(first["stats"]["counts"], json!({}));

    // 1,000 events as 100 concurrent requests of 10.
    let posts = (0..100).map(|i| {
        let app = &app;
        async move { app.post_events(&events("demo", &format!("b{i}"), 10)).await }
    });
    for (status, body) in futures_util::future::join_all(posts).await {
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["accepted"], 10);
    }

    let mut frames = vec![first];
    loop {
        let f = c.recv().await;
        assert_eq!(f["type"], "stats", "{f}");
        let done = f["stats"]["counts"]["message.sent"] == 1000;
        frames.push(f);
        if done {
            break;
        }
    }
    assert!(
        frames.len() < 50,
        "{} stats frames for 1,000 events",
        frames.len()
    );
    let versions: Vec<i64> = frames
        .iter()
        .map(|f| f["version"].as_i64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let last = frames.last().unwrap();
    assert!(last["changed"]
        .as_array()
        .unwrap()
        .contains(&json!("/counts/message.sent")));
    let s = &last["stats"];
    assert_eq!(s["scope"], "demo");
    assert_eq!(s["states"], json!({"chat": {"open": 3}}));
    assert_eq!(s["active_subjects"], json!({"chat": 3}));
    assert_eq!(s["events_last_minute"], 1000);
    assert_eq!(s["online_users"], 1);
    assert!(s["last_event_at"].is_string());

    // The polling endpoint agrees, version included.
    let (status, body) = app
        .get("/api/scopes/demo/stats", &app.token("bob", &["demo"]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["counts"], s["counts"]);
    assert_eq!(body["version"], last["version"]);
    // Nothing changes, nothing is sent.
    c.expect_silence(std::time::Duration::from_millis(600))
        .await;
}

#[actix_web::test]
async fn subject_state_is_the_latest_one_carried() {
    let app = spawn_app().await;
    let task = |id: &str, kind: &str, state: Option<&str>| {
        let mut subject = json!({"type": "task", "id": id});
        if let Some(s) = state {
            subject["state"] = s.into();
        }
        json!({"scope": "proj", "kind": kind, "subject": subject})
    };
    let batch = json!([
        task("t1", "task.created", Some("pending")),
        task("t2", "task.created", Some("pending")),
        task("t3", "task.created", Some("pending")),
        task("t1", "task.started", Some("in_progress")),
        task("t1", "task.commented", None),
        task("t2", "task.started", Some("in_progress")),
    ]);
    assert_eq!(app.post_events(&batch).await.0, 202);
    assert_eq!(
        app.post_events(&json!([task("t2", "task.completed", Some("completed"))]))
            .await
            .0,
        202
    );
    let (_, body) = app
        .get("/api/scopes/proj/stats", &app.token("a", &["*"]))
        .await;
    assert_eq!(
        body["states"],
        json!({"task": {"pending": 1, "in_progress": 1, "completed": 1}})
    );
    assert_eq!(
        body["counts"],
        json!({"task.created": 3, "task.started": 2, "task.commented": 1, "task.completed": 1})
    );
    assert_eq!(body["online_users"], 0);
    // Scope access is checked.
    let (status, body) = app
        .get("/api/scopes/proj/stats", &app.token("a", &["demo"]))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
}
