//! [`RawWs`]: a WebSocket client read by hand, for what tungstenite hides.

use super::config::PATIENCE;
use super::ws::UPGRADE_HEADERS;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;

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
