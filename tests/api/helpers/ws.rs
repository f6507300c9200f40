//! [`WsClient`]: the tungstenite client tests talk to a hub with (it
//! answers pings by itself), and how it connects.

use super::config::PATIENCE;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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
