//! A WebSocket connection read by hand: the load generator's
//! [`RawWs`](pulsehub_loadtest::raw::RawWs), with the harness's patience.
//! Unlike tungstenite it never writes by itself (a silent client really is
//! silent: no pongs), and it reads a close frame even when the server resets
//! the connection right after (nothing it writes provokes a reset).

use super::config::PATIENCE;
use pulsehub_loadtest::raw::{RawWs, Upgrade, OP_CLOSE, OP_TEXT};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;

/// Upgrades a connection to the hub on `port` with `token`; the first frame
/// (`welcome`) is left for the test to read.
pub async fn raw_connect_at(port: u16, token: &str) -> RawWs {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    let upgrade = tokio::time::timeout(
        PATIENCE,
        RawWs::upgrade(tcp, &format!("127.0.0.1:{port}"), token),
    )
    .await
    .expect("handshake response in time");
    match upgrade.expect("handshake") {
        Upgrade::Open(ws) => ws,
        Upgrade::Refused { status, body } => panic!("handshake refused: {status} {body}"),
    }
}

/// What tests read from a [`RawWs`]; every read panics once a frame that
/// must come does not.
pub trait RawWsExt {
    /// The next text frame as JSON, skipping control frames (panics after
    /// [`PATIENCE`] or on a close).
    async fn recv(&mut self) -> Value;

    /// Reads until the server closes (within `wait`, else panics): the code
    /// of its close frame (1005 when it has none), or `None` when the stream
    /// ended (or failed) without one.
    async fn close_code(&mut self, wait: Duration) -> Option<u16>;
}

impl RawWsExt for RawWs {
    async fn recv(&mut self) -> Value {
        loop {
            match tokio::time::timeout(PATIENCE, self.reader.frame()).await {
                Ok(Ok(Some(f))) if f.opcode == OP_TEXT => {
                    return serde_json::from_slice(&f.payload).unwrap()
                }
                Ok(Ok(Some(f))) if f.opcode == OP_CLOSE => {
                    panic!("closed unexpectedly: {:?}", f.payload)
                }
                Ok(Ok(Some(_))) => continue,
                _ => panic!("no frame within {PATIENCE:?}"),
            }
        }
    }

    async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.reader.frame()).await {
                Err(_) => panic!("connection not closed within {wait:?}"),
                Ok(Ok(Some(f))) => match f.close_code() {
                    Some(code) => return Some(code),
                    None => continue,
                },
                Ok(Ok(None)) | Ok(Err(_)) => return None,
            }
        }
    }
}
