//! The access-control matrix: every channel family × every kind of
//! credential, over WebSocket `subscribe` and over every HTTP read endpoint.
//! Refused credentials never reach a channel (401 before the upgrade or
//! before the handler); accepted ones get exactly the channels their claims
//! allow, and nothing of the others leaks afterwards.
//!
//! Ingest credentials (no key, wrong key, a JWT instead of the key) are in
//! abuse.rs.

use crate::helpers::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// Every channel family, with the one scope and the two users of the matrix.
const CHANNELS: [&str; 7] = [
    "stats:acme",
    "presence:acme",
    "feed:acme",
    "user:alice",
    "user:bob",
    "system",
    // Scope names are case-sensitive: "ACME" is not "acme".
    "feed:ACME",
];

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs arbitrary claims (valid or not) with `alg` and `secret`.
fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An unsigned token (`"alg":"none"`), which jsonwebtoken cannot produce.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes())
    )
}

/// Base64url without padding (RFC 4648 §5), as in a JWT.
fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn good_claims(scopes: &[&str]) -> Value {
    json!({"sub": "alice", "name": "Alice", "scopes": scopes, "exp": now() + 3600})
}

/// Credentials that must be refused with 401 everywhere: (name, token).
fn refused() -> Vec<(&'static str, Option<String>)> {
    let exp = now() + 3600;
    vec![
        ("no token", None),
        ("empty token", Some(String::new())),
        ("garbage", Some("not.a.jwt".into())),
        (
            "bad signature",
            Some(sign(
                Algorithm::HS256,
                "not-the-secret-at-all",
                &good_claims(&["*"]),
            )),
        ),
        (
            "wrong algorithm HS512 (right secret)",
            Some(sign(Algorithm::HS512, SECRET, &good_claims(&["*"]))),
        ),
        (
            "wrong algorithm HS384 (right secret)",
            Some(sign(Algorithm::HS384, SECRET, &good_claims(&["*"]))),
        ),
        ("alg none (unsigned)", Some(unsigned(&good_claims(&["*"])))),
        (
            "HS256 header with the signature stripped",
            Some({
                let t = sign(Algorithm::HS256, SECRET, &good_claims(&["*"]));
                format!("{}.", &t[..t.rfind('.').unwrap()])
            }),
        ),
        (
            "expired",
            Some(sign(
                Algorithm::HS256,
                SECRET,
                &json!({"sub": "alice", "scopes": ["*"], "exp": now() - 60}),
            )),
        ),
        (
            "missing sub",
            Some(sign(
                Algorithm::HS256,
                SECRET,
                &json!({"scopes": ["*"], "exp": exp}),
            )),
        ),
        (
            "missing exp",
            Some(sign(
                Algorithm::HS256,
                SECRET,
                &json!({"sub": "alice", "scopes": ["*"]}),
            )),
        ),
        (
            "empty sub",
            Some(sign(
                Algorithm::HS256,
                SECRET,
                &json!({"sub": "", "scopes": ["*"], "exp": exp}),
            )),
        ),
        (
            "exp as a string",
            Some(sign(
                Algorithm::HS256,
                SECRET,
                &json!({"sub": "alice", "scopes": ["*"], "exp": exp.to_string()}),
            )),
        ),
        ("the ingest key as a token", Some(INGEST_KEY.to_string())),
    ]
}

/// Valid tokens for user `alice` and the channels each may read.
fn accepted() -> Vec<(&'static str, String, BTreeSet<&'static str>)> {
    let own = ["user:alice", "system"];
    let scoped = ["stats:acme", "presence:acme", "feed:acme"];
    let set = |parts: &[&[&'static str]]| parts.iter().flat_map(|p| p.iter().copied()).collect();
    let tok = |scopes: &[&str]| sign(Algorithm::HS256, SECRET, &good_claims(scopes));
    vec![
        ("scope not granted", tok(&["other"]), set(&[&own])),
        ("no scopes at all", tok(&[]), set(&[&own])),
        (
            "no scopes claim",
            sign(
                Algorithm::HS256,
                SECRET,
                &json!({"sub": "alice", "exp": now() + 3600}),
            ),
            set(&[&own]),
        ),
        (
            "near-miss scopes (case, prefix, suffix, glob)",
            tok(&["Acme", "acm", "acme2", "acme*", "ac*"]),
            set(&[&own]),
        ),
        ("scope granted", tok(&["acme"]), set(&[&own, &scoped])),
        (
            "`*` scope",
            tok(&["*"]),
            set(&[&own, &scoped, &["feed:ACME"]]),
        ),
    ]
}

async fn get(app: &TestApp, path: &str, token: Option<&str>, in_query: bool) -> (u16, Value) {
    let mut url = app.url(path);
    let mut req = app.http.get(&url);
    if let Some(t) = token {
        if in_query {
            let sep = if path.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}token={}", urlencode(t));
            req = app.http.get(&url);
        } else {
            req = req.bearer_auth(t);
        }
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The HTTP read endpoints for a channel: (path, status when allowed).
fn endpoints(channel: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    let recoverable = !(channel.starts_with("stats:") || channel.starts_with("presence:"));
    // Stats and presence channels keep no history: 400, but only once the
    // caller may read the channel at all.
    out.push((
        format!("/api/channels/{channel}/history?since=0"),
        if recoverable { 200 } else { 400 },
    ));
    if let Some(scope) = channel.strip_prefix("stats:") {
        out.push((format!("/api/scopes/{scope}/stats"), 200));
    }
    if let Some(scope) = channel.strip_prefix("presence:") {
        out.push((format!("/api/scopes/{scope}/presence"), 200));
    }
    if let Some(scope) = channel.strip_prefix("feed:") {
        if scope != "acme" {
            out.push((format!("/api/scopes/{scope}/stats"), 200));
            out.push((format!("/api/scopes/{scope}/presence"), 200));
        }
    }
    out
}

#[actix_web::test]
async fn refused_credentials_never_reach_a_channel() {
    let app = spawn_app().await;
    for (case, token) in refused() {
        // WebSocket: refused before the upgrade, in the query and the header.
        let query = token
            .as_deref()
            .map(|t| format!("?token={}", urlencode(t)))
            .unwrap_or_default();
        let (status, body) = app.handshake(&query, &[]).await;
        assert_eq!(status, 401, "ws ?token, {case}: {body}");
        assert_eq!(
            body["error"]["code"], "unauthorized",
            "ws ?token, {case}: {body}"
        );
        if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
            let bearer = format!("Bearer {t}");
            let (status, body) = app
                .handshake("", &[("Authorization", bearer.as_str())])
                .await;
            assert_eq!(status, 401, "ws bearer, {case}: {body}");
            assert_eq!(
                body["error"]["code"], "unauthorized",
                "ws bearer, {case}: {body}"
            );
        }
        // HTTP: every read endpoint of every channel, header and query.
        for channel in CHANNELS {
            for (path, _) in endpoints(channel) {
                for in_query in [false, true] {
                    let how = if in_query { "?token" } else { "bearer" };
                    let (status, body) = get(&app, &path, token.as_deref(), in_query).await;
                    assert_eq!(status, 401, "GET {path} ({how}), {case}: {body}");
                    assert_eq!(
                        body["error"]["code"], "unauthorized",
                        "GET {path} ({how}), {case}: {body}"
                    );
                }
            }
        }
    }
}

#[actix_web::test]
async fn valid_tokens_read_exactly_what_their_claims_allow() {
    let app = spawn_app().await;
    for (case, token, allowed) in accepted() {
        // HTTP read endpoints.
        for channel in CHANNELS {
            for (path, ok_status) in endpoints(channel) {
                // A scope endpoint's verdict follows the scope, not the family.
                let may = allowed.contains(channel)
                    || (path.starts_with("/api/scopes/")
                        && allowed.contains(format!("feed:{}", scope_of(&path)).as_str()));
                let expected = if may { ok_status } else { 403 };
                for in_query in [false, true] {
                    let how = if in_query { "?token" } else { "bearer" };
                    let (status, body) = get(&app, &path, Some(&token), in_query).await;
                    assert_eq!(status, expected, "GET {path} ({how}), {case}: {body}");
                    if expected == 403 {
                        assert_eq!(
                            body["error"]["code"], "forbidden",
                            "GET {path} ({how}), {case}: {body}"
                        );
                    }
                }
            }
        }

        // WebSocket subscribe: `subscribed` or `forbidden`, per channel.
        let mut ws = app.connect_token(&token).await;
        let mut stray = Vec::new();
        for channel in CHANNELS {
            let r = ws
                .command(json!({"type": "subscribe", "channel": channel}))
                .await;
            let reply = loop {
                let f = ws.recv().await;
                if f["ref"] == r {
                    break f;
                }
                stray.push(f);
            };
            if allowed.contains(channel) {
                assert_eq!(reply["type"], "subscribed", "ws {channel}, {case}: {reply}");
                assert_eq!(reply["channel"], channel, "ws {channel}, {case}: {reply}");
            } else {
                assert_eq!(reply["type"], "error", "ws {channel}, {case}: {reply}");
                assert_eq!(reply["code"], "forbidden", "ws {channel}, {case}: {reply}");
            }
        }
        // Traffic on every channel: nothing of a forbidden one arrives.
        let (status, body) = app
            .post_events(&json!([
                {"scope": "acme", "kind": "check_in", "key": format!("{case}-1")},
                {"scope": "ACME", "kind": "check_in", "key": format!("{case}-2")},
            ]))
            .await;
        assert_eq!(status, 202, "{body}");
        for target in ["user:bob", "user:alice", "system"] {
            let (status, body) = app
                .post_notification(&json!({"target": target, "level": "info", "title": case}))
                .await;
            assert_eq!(status, 202, "{body}");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            match ws.try_recv(Duration::from_millis(700)).await {
                Some(f) => stray.push(f),
                None => break,
            }
        }
        let mut seen = BTreeSet::new();
        for f in &stray {
            if let Some(channel) = f["channel"].as_str() {
                assert!(
                    allowed.contains(channel),
                    "{case}: a frame of forbidden channel {channel} leaked: {f}"
                );
                seen.insert(channel.to_string());
            }
        }
        // And the allowed recoverable channels did get their traffic.
        for channel in ["feed:acme", "user:alice", "system"] {
            if allowed.contains(channel) {
                assert!(seen.contains(channel), "{case}: nothing on {channel}");
            }
        }
    }
}

fn scope_of(path: &str) -> &str {
    path.trim_start_matches("/api/scopes/")
        .split('/')
        .next()
        .unwrap()
}
