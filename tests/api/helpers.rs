//! Test harness: a real hub on port 0 over a fresh PostgreSQL database per
//! test (cloned from a migrated template), real WebSocket and HTTP clients.
//!
//! PostgreSQL is found at `DATABASE_URL` (default: the local server). A test
//! that cannot reach it fails loudly: `scripts/test.sh` starts it.

use clap::Parser;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::{SinkExt, StreamExt};
use pulsehub::auth::{claims_for, TokenKeys};
use pulsehub::config::Config;
use pulsehub::startup::{AppState, Application, Stopper};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const INGEST_KEY: &str = "test-ingest-key";
/// How long a test waits for a frame that must come.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    config: Config,
}

/// The server URL without a database (tests create their own databases).
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut u = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    u.set_path("");
    u.to_string().trim_end_matches('/').to_string()
}

/// A hub configuration for tests: short timers, test secrets.
pub fn test_config() -> Config {
    let mut c = Wrap::parse_from(["test"]).config;
    c.bind = "127.0.0.1:0".into();
    c.jwt_secret = Some(SECRET.into());
    c.ingest_key = Some(INGEST_KEY.into());
    c.demo = false;
    c.instance_id = Some("hub-test".into());
    c.workers = 2;
    c.db_pool = 8;
    c.presence_grace_ms = 300;
    c.stats_debounce_ms = 50;
    c.stats_max_wait_ms = 200;
    c.stats_tick_ms = 1000;
    c.allowed_origins = vec![];
    c
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// Creates a fresh, migrated database and returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let template = template_name();
    let mut admin = AsyncPgConnection::establish(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {server} ({e}); run scripts/test.sh, which starts it")
        });
    // One process at a time builds the template (nextest runs tests as processes).
    admin
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let exists = diesel_async::RunQueryDsl::execute(
        diesel::sql_query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&template),
        &mut admin,
    )
    .await
    .unwrap()
        > 0;
    if !exists {
        pulsehub::db::prepare(&format!("{server}/{template}"))
            .await
            .expect("migrating the template database");
    }
    drop_stale_databases(&mut admin).await;
    admin
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    let name = format!(
        "pulsehub_test_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("cloning the template database");
    format!("{server}/{name}")
}

/// The template is named after the migrations, so changing them rebuilds it.
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut entries: Vec<_> = walk(std::path::Path::new(dir));
    entries.sort();
    for path in entries {
        path.hash(&mut h);
        std::fs::read(&path).unwrap().hash(&mut h);
    }
    format!("pulsehub_tpl_{:x}", h.finish())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Drops test databases left by test processes that no longer run.
async fn drop_stale_databases(admin: &mut AsyncPgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Db {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let dbs: Vec<Db> = diesel_async::RunQueryDsl::load(
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'pulsehub_test_%'"),
        admin,
    )
    .await
    .unwrap_or_default();
    for db in dbs {
        let pid = db.datname.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.datname))
                .await;
        }
    }
}

pub struct TestApp {
    pub port: u16,
    pub http: reqwest::Client,
    pub tokens: TokenKeys,
    pub database_url: String,
    pub stopper: Stopper,
    pub state: actix_web::web::Data<AppState>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config();
    config.database_url = fresh_database().await;
    tweak(&mut config);
    pulsehub::telemetry::init(pulsehub::config::LogFormat::Pretty);
    let app = Application::build(config.clone()).await.expect("building the app");
    let port = app.port();
    let stopper = app.stopper();
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        port,
        http: reqwest::Client::new(),
        tokens: TokenKeys::new(SECRET),
        database_url: config.database_url,
        stopper,
        state,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn token(&self, user: &str, scopes: &[&str]) -> String {
        self.tokens
            .mint(&claims_for(user, Some(&capitalize(user)), scopes, 3600))
            .unwrap()
    }

    /// Connects as `user` with access to `scopes`, and reads `welcome`.
    pub async fn connect(&self, user: &str, scopes: &[&str]) -> WsClient {
        self.connect_token(&self.token(user, scopes)).await
    }

    pub async fn connect_token(&self, token: &str) -> WsClient {
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", self.port);
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
        let mut c = WsClient { stream, next_ref: 1 };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }

    /// Posts events with the ingest key; returns status and body.
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url("/api/events"))
            .bearer_auth(INGEST_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database_url).await.unwrap()
    }
}

pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `n` events in `scope` with the given kind prefix and keys `{tag}-{i}`.
pub fn events(scope: &str, tag: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"scope": scope, "kind": "message.sent",
                       "actor": {"id": "u1", "name": "Maria"},
                       "subject": {"type": "chat", "id": format!("c{}", i % 3), "state": "open"},
                       "data": {"i": i, "tag": tag}, "key": format!("{tag}-{i}")})
            })
            .collect(),
    )
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: i64,
}

impl WsClient {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// Sends a command with a fresh `ref`; returns the ref.
    pub async fn command(&mut self, mut v: Value) -> i64 {
        let r = self.next_ref;
        self.next_ref += 1;
        v["ref"] = r.into();
        self.send_json(v).await;
        r
    }

    /// The next text frame as JSON (panics after [`PATIENCE`]).
    pub async fn recv(&mut self) -> Value {
        self.try_recv(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no frame within {PATIENCE:?}"))
    }

    /// The next text frame within `wait`, or `None`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??;
            match msg.expect("websocket error") {
                Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
                Message::Close(c) => panic!("closed unexpectedly: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Frames until one of `type` arrives; returns it and those skipped.
    pub async fn recv_until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let f = self.recv().await;
            if f["type"] == kind {
                return (f, skipped);
            }
            skipped.push(f);
        }
    }

    /// Subscribes and returns the `subscribed` frame.
    pub async fn subscribe(&mut self, channel: &str, since: Option<i64>) -> Value {
        let mut cmd = json!({"type": "subscribe", "channel": channel});
        if let Some(s) = since {
            cmd["since"] = s.into();
        }
        let r = self.command(cmd).await;
        let f = self.recv().await;
        assert_eq!(f["type"], "subscribed", "{f}");
        assert_eq!(f["ref"], r);
        f
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(f) = self.try_recv(wait).await {
            panic!("expected no frame, got {f}");
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(PATIENCE, self.stream.next()).await {
                Err(_) => panic!("connection not closed within {PATIENCE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| c.code),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The offsets of `event` frames, in order.
pub fn offsets(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "event" || f["type"] == "notification")
        .map(|f| f["offset"].as_i64().unwrap())
        .collect()
}
