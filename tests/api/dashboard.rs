//! What the dashboard needs from the hub: long-polling history (`wait`), the
//! demo-only token endpoint, and the embedded page and its files.

use crate::helpers::*;
use pulsehub::auth::Claims;
use serde_json::{json, Value};
use std::time::Duration;

/// GET with a bearer token and a client-side limit; (status, headers, JSON body).
async fn get_within(
    app: &TestApp,
    path: &str,
    token: &str,
    limit: Duration,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .timeout(limit)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn item_offsets(body: &Value) -> Vec<i64> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["offset"].as_i64().unwrap())
        .collect()
}

#[actix_web::test]
async fn history_wait_holds_the_request_until_something_newer_exists() {
    let app = spawn_app().await;
    let token = app.token("alice", &["demo"]);
    app.post_events(&events("demo", "a", 2)).await;

    let url = app.url("/api/channels/feed:demo/history?since=2&wait=20");
    let (http, t) = (app.http.clone(), token.clone());
    let poll = actix_web::rt::spawn(async move {
        let res = http.get(url).bearer_auth(t).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    // Nothing newer than 2 yet: the request is held, not answered empty.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !poll.is_finished(),
        "a long-poll answered before anything new existed"
    );

    app.post_events(&events("demo", "b", 1)).await;
    let (status, body) = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the long-poll answers once an event is committed")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["offset"], 3);
    assert_eq!(body["recovered"], true);
    assert_eq!(item_offsets(&body), vec![3]);
    assert_eq!(body["items"][0]["event"]["data"]["tag"], "b");
}

#[actix_web::test]
async fn history_wait_ends_empty_when_nothing_arrives() {
    let app = spawn_app().await;
    let token = app.token("alice", &["demo"]);
    app.post_events(&events("demo", "a", 1)).await;
    let (status, headers, body) = get_within(
        &app,
        "/api/channels/feed:demo/history?since=1&wait=1",
        &token,
        PATIENCE,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"offset": 1, "recovered": true, "items": []}));
    assert_eq!(headers["cache-control"], "no-store");

    // Also on an empty notification channel.
    let (status, _, body) = get_within(
        &app,
        "/api/channels/system/history?since=0&wait=1",
        &token,
        PATIENCE,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"offset": 0, "recovered": true, "items": []}));
}

#[actix_web::test]
async fn history_wait_answers_at_once_when_there_is_something_to_send() {
    let app = spawn_app().await;
    let token = app.token("alice", &["demo"]);
    app.post_events(&events("demo", "a", 3)).await;
    // Well under the requested wait: these must not be held.
    let quick = Duration::from_secs(10);

    // Behind: the missed items.
    let (status, _, body) = get_within(
        &app,
        "/api/channels/feed:demo/history?since=1&wait=30",
        &token,
        quick,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(item_offsets(&body), vec![2, 3]);

    // No `since`: the recent items.
    let (_, _, body) = get_within(
        &app,
        "/api/channels/feed:demo/history?wait=30",
        &token,
        quick,
    )
    .await;
    assert_eq!(
        (body["recovered"].as_bool(), body["offset"].as_i64()),
        (Some(false), Some(3))
    );
    assert_eq!(item_offsets(&body), vec![1, 2, 3]);

    // Ahead of the channel (a new database behind the same URL): start again.
    let (_, _, body) = get_within(
        &app,
        "/api/channels/feed:demo/history?since=99&wait=30",
        &token,
        quick,
    )
    .await;
    assert_eq!(body["recovered"], false);
    assert_eq!(item_offsets(&body), vec![1, 2, 3]);
}

#[actix_web::test]
async fn history_wait_is_validated() {
    let app = spawn_app().await;
    let token = app.token("alice", &["demo"]);
    for bad in ["wait=soon", "wait=-1", "wait=1.5"] {
        let (status, body) = app
            .get(
                &format!("/api/channels/feed:demo/history?since=0&{bad}"),
                &token,
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
    }
    // Still authorised like any read.
    let (status, _) = app
        .get("/api/channels/feed:acme/history?since=0&wait=5", &token)
        .await;
    assert_eq!(status, 403);
}

#[actix_web::test]
async fn history_wait_sees_events_committed_by_another_replica() {
    // Two hubs on one database, as behind a load balancer: the long-poll on
    // one answers an event ingested through the other, because it watches
    // the channel's offset in PostgreSQL rather than local deliveries.
    let a = spawn_app().await;
    let shared = a.database_url.clone();
    let b = spawn_with(move |c| {
        c.database_url = shared;
        c.instance_id = Some("hub-test-b".into());
    })
    .await;
    let token = a.token("alice", &["demo"]);
    let url = a.url("/api/channels/feed:demo/history?since=0&wait=20");
    let http = a.http.clone();
    let poll = actix_web::rt::spawn(async move {
        let res = http.get(url).bearer_auth(token).send().await.unwrap();
        res.json::<Value>().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.post_events(&events("demo", "via-b", 1)).await.0, 202);
    let body = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the long-poll on hub A answers")
        .unwrap();
    assert_eq!(item_offsets(&body), vec![1]);
    assert_eq!(body["items"][0]["event"]["data"]["tag"], "via-b");
}

#[actix_web::test]
async fn dev_token_endpoint_is_off_unless_demo() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/api/dev/token?user=mallory"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[actix_web::test]
async fn dev_token_endpoint_mints_working_tokens_in_demo_mode() {
    let app = spawn_with(|c| c.demo = true).await;
    let res = app
        .http
        .get(app.url("/api/dev/token?user=maria&name=Maria%20Lopez&scopes=demo,acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let claims: Claims = app
        .tokens
        .verify(&token)
        .expect("signed with the hub's secret");
    assert_eq!(claims.sub, "maria");
    assert_eq!(claims.name.as_deref(), Some("Maria Lopez"));
    assert_eq!(claims.scopes, vec!["demo", "acme"]);
    assert!(claims.exp > chrono::Utc::now().timestamp() + 600);
    assert_eq!(body["user"], json!({"id": "maria", "name": "Maria Lopez"}));

    // It is an ordinary browser token.
    let (status, _) = app.get("/api/scopes/acme/stats", &token).await;
    assert_eq!(status, 200);
    let mut ws = app.connect_token(&token).await;
    ws.subscribe("feed:demo", None).await;

    // Defaults: a guest id, scope `demo`.
    let body: Value = app
        .http
        .get(app.url("/api/dev/token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let guest = app.tokens.verify(body["token"].as_str().unwrap()).unwrap();
    assert!(guest.sub.starts_with("guest-"), "{}", guest.sub);
    assert_eq!(guest.scopes, vec!["demo"]);

    for bad in [
        "user=two%20words",
        "scopes=no%20spaces!",
        "scopes=",
        "name=",
    ] {
        let status = app
            .http
            .get(app.url(&format!("/api/dev/token?{bad}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let expected = if bad == "name=" { 200 } else { 400 };
        assert_eq!(status, expected, "{bad}");
    }
}

#[actix_web::test]
async fn the_dashboard_and_its_files_are_served_from_the_binary() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/static/js/main.js">"#));

    for (path, kind) in [
        ("/static/js/main.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/icons.svg", "image/svg+xml"),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], kind, "{path}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        assert!(!res.bytes().await.unwrap().is_empty());
        // Revalidation: unchanged file, no body.
        let again = app
            .http
            .get(app.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status().as_u16(), 304, "{path}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    }

    for missing in ["/static/nope.js", "/static/", "/static/../Cargo.toml"] {
        let res = app.http.get(app.url(missing)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 404, "{missing}");
    }
}

/// The client SDK is served as it is in clients/js/src, importable from any
/// origin, even when allowed origins are configured.
#[actix_web::test]
async fn the_client_sdk_is_served_for_pages_without_a_bundler() {
    let app = spawn_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let source = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/src/pulsehub.js"
    ))
    .unwrap();
    let res = app
        .http
        .get(app.url("/sdk/pulsehub.js"))
        .header("Origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(res.bytes().await.unwrap().as_ref(), source.as_slice());
    // The entry's siblings are there too; nothing outside the directory is.
    let res = app
        .http
        .get(app.url("/sdk/client.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    for missing in ["/sdk/nope.js", "/sdk/../package.json", "/sdk/"] {
        let res = app.http.get(app.url(missing)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 404, "{missing}");
    }
}

#[actix_web::test]
async fn a_graceful_stop_answers_waiting_long_polls_at_once() {
    let app = spawn_app().await;
    let token = app.token("alice", &["demo"]);
    app.post_events(&events("demo", "a", 1)).await;
    let url = app.url("/api/channels/feed:demo/history?since=1&wait=30");
    let (http, t) = (app.http.clone(), token.clone());
    let poll = actix_web::rt::spawn(async move {
        let res = http.get(url).bearer_auth(t).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long-poll was not held");

    // The stop does not wait out the 30 s: the poll gets its usual answer
    // (nothing newer) and the server stops.
    let ((status, body), ()) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(async { poll.await.unwrap() }, app.stopper.stop())
    })
    .await
    .expect("stop and long-poll answer in time");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"offset": 1, "recovered": true, "items": []}));
}
