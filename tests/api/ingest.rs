use crate::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn ingest_then_history() {
    let app = spawn_app().await;
    let (status, body) = app.post_events(&events("demo", "a", 3)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 3, "duplicates": 0}));
    let token = app.token("alice", &["demo"]);
    let (status, body) = app.get("/api/channels/feed:demo/history?since=0", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 3);
    assert_eq!(offsets(body["items"].as_array().unwrap()), vec![1, 2, 3]);
}
