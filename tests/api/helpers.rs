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
use pulsehub::startup::{Application, Stopper};
use pulsehub::state::AppState;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789";
pub const INGEST_KEY: &str = "test-ingest-key-0123456789";
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
        let pid = db
            .datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    db.datname
                ))
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
    start_app(config).await
}

/// The Redis the cluster tests use (`scripts/test.sh` starts it).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `n` replicas (`hub-a`, `hub-b`, …) on one fresh database and one Redis,
/// under a key prefix of their own; returns once every replica is ready.
pub async fn spawn_cluster(n: usize, tweak: impl Fn(&mut Config)) -> Vec<TestApp> {
    let database_url = fresh_database().await;
    let prefix = format!("pulsehub_test_{}", uuid::Uuid::new_v4().simple());
    let mut apps = Vec::new();
    for i in 0..n {
        let mut config = test_config();
        config.database_url = database_url.clone();
        config.redis_url = Some(redis_url());
        config.redis_prefix = prefix.clone();
        config.instance_id = Some(format!("hub-{}", (b'a' + i as u8) as char));
        tweak(&mut config);
        apps.push(start_app(config).await);
    }
    for app in &apps {
        app.wait_ready().await;
    }
    apps
}

/// A hub for `config`, served in the background.
pub async fn start_app(config: Config) -> TestApp {
    pulsehub::telemetry::init(pulsehub::config::LogFormat::Pretty);
    let app = Application::build(config.clone())
        .await
        .expect("building the app");
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
        connect_at(self.port, token).await
    }

    /// Posts events with the ingest key; returns status and body.
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        self.post("/api/events", body).await
    }

    /// Posts a notification with the ingest key; returns status and body.
    pub async fn post_notification(&self, body: &Value) -> (u16, Value) {
        self.post("/api/notifications", body).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(INGEST_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `/ready` answers 200 (PostgreSQL and the broker are up).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(res) = self.http.get(self.url("/ready")).send().await {
                if res.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hub not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database_url)
            .await
            .unwrap()
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
    /// Wraps a connected stream (the caller reads `welcome`).
    pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        WsClient {
            stream,
            next_ref: 1,
        }
    }

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
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match msg.expect("websocket error") {
                Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
                Message::Close(c) => panic!("closed unexpectedly: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next `n` text frames.
    pub async fn recv_n(&mut self, n: usize) -> Vec<Value> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.recv().await);
        }
        frames
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

// ---- Added for the abuse and lifecycle tests -------------------------------

/// The headers that make a plain HTTP GET a WebSocket handshake.
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

impl TestApp {
    /// Attempts the `/ws` handshake with reqwest (`query` such as
    /// `?token=…`, plus extra headers); returns the status (101: accepted)
    /// and, for a refusal, the JSON body (`Null` when it is not JSON).
    pub async fn handshake(&self, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.http.get(self.url(&format!("/ws{query}")));
        for (name, value) in UPGRADE_HEADERS.iter().chain(headers) {
            req = req.header(*name, *value);
        }
        let res = req.send().await.expect("handshake request");
        let status = res.status().as_u16();
        if status == 101 {
            return (status, Value::Null);
        }
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Connects a real client with extra handshake headers (e.g. `Origin`)
    /// and reads `welcome`; on refusal, the HTTP status.
    pub async fn try_connect(
        &self,
        token: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", self.port);
        let mut req = url.into_client_request().unwrap();
        for (name, value) in headers {
            req.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => {
                let mut c = WsClient {
                    stream,
                    next_ref: 1,
                };
                let welcome = c.recv().await;
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                Ok(c)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("ws connect: {e}"),
        }
    }

    /// A WebSocket connection that is read by hand (see [`RawWs`]).
    pub async fn raw_connect(&self, token: &str) -> RawWs {
        RawWs::connect(self.port, token).await
    }
}

/// Connects to a hub on `port` (e.g. a child process) and reads `welcome`.
pub async fn connect_at(port: u16, token: &str) -> WsClient {
    let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
    let (stream, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    let mut c = WsClient::from_stream(stream);
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    c
}

/// A WebSocket client that never writes after the handshake: unlike
/// tungstenite, it does not answer pings, and it reads a close frame even
/// when the server resets the connection right after (nothing it writes
/// provokes a reset).
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Opcodes of RFC 6455.
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;

impl RawWs {
    pub async fn connect(port: u16, token: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        let mut request = format!("GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        for (name, value) in UPGRADE_HEADERS {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
                .await
                .expect("handshake response in time")
                .unwrap();
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        buf.drain(..end);
        RawWs { stream, buf }
    }

    /// The next frame (opcode, payload) within `wait`; `None` on end of
    /// stream, error or timeout.
    pub async fn frame(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The next text frame as JSON, skipping control frames (panics after
    /// [`PATIENCE`] or on a close).
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.frame(PATIENCE).await {
                Some((OP_TEXT, payload)) => return serde_json::from_slice(&payload).unwrap(),
                Some((OP_CLOSE, payload)) => panic!("closed unexpectedly: {payload:?}"),
                Some(_) => continue,
                None => panic!("no frame within {PATIENCE:?}"),
            }
        }
    }

    /// Reads until the server closes (within `wait`, else panics): the code
    /// of its close frame, or `None` when the stream ended without one.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.frame(left).await {
                Some((OP_CLOSE, payload)) if payload.len() >= 2 => {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]))
                }
                Some((OP_CLOSE, _)) => return Some(1005),
                Some(_) => continue,
                None if tokio::time::Instant::now() >= deadline => {
                    panic!("connection not closed within {wait:?}")
                }
                None => return None,
            }
        }
    }
}

/// One frame from the front of `buf`: ((opcode, unmasked payload), bytes used).
fn parse_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let payload = buf.get(at..at + len)?;
    let payload = match mask {
        Some(m) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some(((opcode, payload), at + len))
}

/// A `pulsehub serve` child process (killed if the test ends early), for
/// what a process must show: signals, `kill -9`.
pub struct HubProcess {
    pub child: tokio::process::Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl HubProcess {
    /// Starts the binary on a free port with the test secrets, `env` on top,
    /// and waits until it is ready.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> HubProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("pulsehub-test-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsehub"));
        cmd.arg("serve")
            .env("DATABASE_URL", database_url)
            .env("PULSEHUB_BIND", format!("127.0.0.1:{port}"))
            .env("PULSEHUB_JWT_SECRET", SECRET)
            .env("PULSEHUB_INGEST_KEY", INGEST_KEY)
            .env("PULSEHUB_WORKERS", "2")
            .env("PULSEHUB_DEMO", "false")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting pulsehub");
        let mut hub = HubProcess { child, port, log };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(hub.url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return hub;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready in 30 s:\n{}",
                hub.log()
            );
            assert!(
                hub.child.try_wait().unwrap().is_none(),
                "exited:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// The last lines of its log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A private `redis-server` on a free port, for tests that stop Redis.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The feed of `demo` is still empty: a refused request stored nothing.
pub async fn assert_nothing_stored(app: &TestApp) {
    let token = app.token("alice", &["demo"]);
    let (status, body) = app.get("/api/channels/feed:demo/history", &token).await;
    assert_eq!(
        (status, &body["offset"]),
        (200, &json!(0)),
        "nothing stored: {body}"
    );
}
