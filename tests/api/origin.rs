//! The Origin check and CORS (`PULSEHUB_ALLOWED_ORIGINS`), as a browser on
//! another origin meets them: preflights, actual requests, and refusals.

use crate::helpers::*;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};

const GOOD: &str = "http://good.example";
const EVIL: &str = "http://evil.example";

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn request(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let mut req = app.http.request(method, app.url(path));
    for (name, value) in headers {
        req = req.header(*name, HeaderValue::from_str(value).unwrap());
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// A browser's preflight for a GET with an `Authorization` header.
async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> Answer {
    request(
        app,
        Method::OPTIONS,
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        None,
    )
    .await
}

#[actix_web::test]
async fn listed_origins_get_cors_and_others_get_403_json() {
    let app = spawn_with(|c| c.allowed_origins = vec![GOOD.into()]).await;
    let token = app.token("alice", &["demo"]);
    let bearer = format!("Bearer {token}");
    let ingest = format!("Bearer {INGEST_KEY}");

    // A listed origin: the preflight allows what the API needs...
    for (path, method) in [
        ("/api/scopes/demo/stats", "GET"),
        ("/api/channels/feed:demo/history", "GET"),
        ("/api/events", "POST"),
    ] {
        let a = preflight(&app, path, GOOD, method).await;
        assert_eq!(a.status, 200, "{path}: {:?}", a.headers);
        assert_eq!(a.header("access-control-allow-origin"), Some(GOOD));
        let methods = a.header("access-control-allow-methods").unwrap();
        assert!(methods.contains(method), "{methods}");
        let allowed = a
            .header("access-control-allow-headers")
            .unwrap()
            .to_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert_eq!(a.header("access-control-max-age"), Some("3600"));
        assert_eq!(a.header("access-control-allow-credentials"), None);
    }
    // ...and the actual requests carry the CORS headers, errors included.
    let h = [("Origin", GOOD), ("Authorization", bearer.as_str())];
    let a = request(&app, Method::GET, "/api/scopes/demo/stats", &h, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(GOOD));
    assert!(a
        .header("vary")
        .unwrap_or("")
        .to_lowercase()
        .contains("origin"));
    let a = request(&app, Method::GET, "/api/scopes/acme/stats", &h, None).await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some(GOOD),
        "a page must read its errors"
    );
    let batch = events("demo", "cors", 2);
    let h = [("Origin", GOOD), ("Authorization", ingest.as_str())];
    let a = request(&app, Method::POST, "/api/events", &h, Some(&batch)).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(GOOD));

    // An origin that is not listed: 403 with the JSON body, no CORS headers,
    // preflight or not, and nothing is stored.
    let a = preflight(&app, "/api/scopes/demo/stats", EVIL, "GET").await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{}",
        a.body
    );
    assert_eq!(a.header("access-control-allow-origin"), None);
    for (method, path, auth) in [
        (Method::GET, "/api/scopes/demo/stats", &bearer),
        (Method::GET, "/api/scopes/demo/presence", &bearer),
        (Method::GET, "/api/channels/feed:demo/history", &bearer),
        (Method::POST, "/api/notifications", &ingest),
        (Method::POST, "/api/events", &ingest),
    ] {
        let h = [("Origin", EVIL), ("Authorization", auth.as_str())];
        let body = json!([{"scope": "demo", "kind": "evil"}]);
        let a = request(&app, method.clone(), path, &h, Some(&body)).await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "forbidden", "{method} {path}");
        assert!(a.body["error"]["message"].as_str().unwrap().contains(EVIL));
        assert_eq!(a.header("access-control-allow-origin"), None);
    }
    let (status, body) = app.get("/api/channels/feed:demo/history", &token).await;
    assert_eq!(
        (status, &body["offset"]),
        (200, &json!(2)),
        "only the good origin's events: {body}"
    );

    // The dashboard's page and assets are public, whatever the origin.
    for path in ["/", "/static/app.css"] {
        let a = request(&app, Method::GET, path, &[("Origin", EVIL)], None).await;
        assert_eq!(a.status, 200, "{path}");
    }
    // Not a browser: no Origin, no check and no CORS headers.
    let a = request(
        &app,
        Method::GET,
        "/api/scopes/demo/stats",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), None);
}

#[actix_web::test]
async fn star_allows_any_origin_and_an_empty_list_sends_no_cors() {
    let any = spawn_with(|c| c.allowed_origins = vec!["*".into()]).await;
    let a = preflight(&any, "/api/scopes/demo/stats", EVIL, "GET").await;
    assert_eq!(a.status, 200);
    assert!(
        matches!(
            a.header("access-control-allow-origin"),
            Some(EVIL) | Some("*")
        ),
        "{:?}",
        a.headers
    );
    let token = any.token("alice", &["demo"]);
    assert!(any.try_connect(&token, &[("Origin", EVIL)]).await.is_ok());

    // Default: no check (any page may open /ws), but no CORS headers either,
    // so a browser keeps API answers from pages on other origins.
    let open = spawn_app().await;
    let token = open.token("alice", &["demo"]);
    let bearer = format!("Bearer {token}");
    let h = [("Origin", EVIL), ("Authorization", bearer.as_str())];
    let a = request(&open, Method::GET, "/api/scopes/demo/stats", &h, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), None);
    let a = preflight(&open, "/api/scopes/demo/stats", EVIL, "GET").await;
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert!(open.try_connect(&token, &[("Origin", EVIL)]).await.is_ok());
}
