//! [`TestApp`]: a real hub served in this process on port 0 over a fresh
//! database (or several replicas over one database and Redis), with the
//! HTTP and WebSocket ways in that tests use.

use super::config::{test_config, INGEST_KEY, PATIENCE, SECRET};
use super::database::fresh_database;
use super::raw_ws::raw_connect_at;
use super::redis::redis_url;
use super::ws::{connect_at, WsClient};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use pulsehub::auth::{claims_for, TokenKeys};
use pulsehub::config::Config;
use pulsehub::startup::{Application, Stopper};
use pulsehub::state::AppState;
use pulsehub_loadtest::raw::{RawWs, UPGRADE_HEADERS};
use serde_json::Value;
use std::time::Duration;

/// A hub served in this process, and what tests reach it with.
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
        status_and_json(res).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        status_and_json(res).await
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

    /// Attempts the `/ws` handshake with reqwest (`query` such as
    /// `?token=…`, plus extra headers); returns the status (101: accepted)
    /// and, for a refusal, the JSON body (`Null` when it is not JSON).
    pub async fn handshake(&self, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.http.get(self.url(&format!("/ws{query}")));
        for (name, value) in UPGRADE_HEADERS.iter().chain(headers) {
            req = req.header(*name, *value);
        }
        let res = req.send().await.expect("handshake request");
        if res.status() == 101 {
            return (101, Value::Null);
        }
        status_and_json(res).await
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
                let mut c = WsClient::from_stream(stream);
                let welcome = c.recv().await;
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                Ok(c)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("ws connect: {e}"),
        }
    }

    /// A WebSocket connection that is read by hand (see `raw_ws`); its
    /// first frame (`welcome`) is left for the test to read.
    pub async fn raw_connect(&self, token: &str) -> RawWs {
        raw_connect_at(self.port, token).await
    }
}

/// The status and the JSON body (`Null` when it is not JSON).
async fn status_and_json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
