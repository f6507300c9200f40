//! Test helpers shared by the modules' unit tests: a seeded config, a
//! generated stream, and a fake hub that records what it was sent.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::event::Event;
use crate::simulator::{SimConfig, Simulator};

/// Two scopes, 24 people, 6 chats, run `test01`.
pub fn config(seed: u64) -> SimConfig {
    SimConfig {
        scopes: vec!["demo".into(), "acme".into()],
        users: 24,
        chats: 6,
        seed: Some(seed),
        run_id: "test01".into(),
    }
}

/// `n` events from `config`, 200 ms apart from 2026-11-21T21:00:00Z.
pub fn generate(config: SimConfig, n: usize) -> Vec<Event> {
    let mut sim = Simulator::new(config).expect("valid config");
    let t0 = DateTime::parse_from_rfc3339("2026-11-21T21:00:00Z")
        .expect("date")
        .with_timezone(&Utc);
    (0..n)
        .map(|i| sim.next_event(t0 + chrono::Duration::milliseconds(200 * i as i64)))
        .collect()
}

/// One request as the fake hub saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub authorization: String,
    pub body: Value,
}

/// Status, extra header lines (each ending in `\r\n`), body.
pub type Reply = (u16, &'static str, String);

/// An HTTP server on an ephemeral port that answers request `i` (with its
/// JSON body) with `reply(i, body)`: status, extra headers, body.
pub async fn fake_hub(
    reply: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut i = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_end, length) = loop {
                let n = socket.read(&mut chunk).await.expect("read");
                assert!(n > 0, "client hung up");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = socket.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "client hung up");
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let authorization = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default();
            let body: Value =
                serde_json::from_slice(&buf[head_end..head_end + length]).expect("json body");
            let (status, headers, text) = reply(i, &body);
            log.lock().expect("lock").push(Seen {
                authorization,
                body,
            });
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{text}",
                text.len()
            );
            socket.write_all(response.as_bytes()).await.expect("write");
            let _ = socket.shutdown().await;
            i += 1;
        }
    });
    (format!("http://{addr}"), seen)
}

/// The hub's 202 body for `body` (every event new).
pub fn accepted(body: &Value) -> String {
    let n = body.as_array().map_or(1, Vec::len);
    format!(r#"{{"accepted":{n},"duplicates":0}}"#)
}
