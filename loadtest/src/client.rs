//! WebSocket clients: connecting (from a chosen source address), reading
//! `welcome`, subscribing, and reading `event` frames cheaply.
//!
//! The load generator shares the machine with the hub, so the hot path does
//! not parse every frame as JSON: an `event` frame is recognised by its
//! prefix and its `offset` and send time are scanned for directly.
//!
//! Hand-driven connections (hostile clients) are in [`crate::raw`].

use crate::target::{Hub, Target};
use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// The key under which events carry their send time (µs since the epoch).
pub const SENT_KEY: &str = "lt_sent_us";

/// A connected client that has read its `welcome`.
pub struct Client {
    pub ws: Ws,
    /// `instance` from `welcome`.
    pub instance: String,
    /// TCP connect start → `welcome` read.
    pub connect_time: Duration,
    next_ref: i64,
}

/// Opens a TCP connection to `addr`, bound to `source` when given. The port
/// is chosen at connect time (`IP_BIND_ADDRESS_NO_PORT`), so each source
/// address offers its whole ephemeral range to every destination.
/// `recv_buffer` sets `SO_RCVBUF` before connecting (a small one makes a
/// client that does not read stall the server's writes at once).
pub async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let socket = match (source, addr) {
        (None, SocketAddr::V4(_)) => TcpSocket::new_v4()?,
        (None, SocketAddr::V6(_)) => TcpSocket::new_v6()?,
        (Some(src), _) => {
            let domain = socket2::Domain::for_address(addr);
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            if src.is_ipv4() {
                bind_address_no_port(&s);
            }
            s.bind(&SocketAddr::new(src, 0).into())
                .with_context(|| format!("binding to source address {src}"))?;
            TcpSocket::from_std_stream(s.into())
        }
    };
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux): defer the port choice to `connect`.
fn bind_address_no_port(s: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket, an int option and its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn ws_config() -> WebSocketConfig {
    // Clients send a few small commands: no need for 128 KiB write buffers
    // on 10,000 connections.
    WebSocketConfig {
        write_buffer_size: 0,
        max_message_size: Some(16 << 20),
        ..WebSocketConfig::default()
    }
}

impl Client {
    /// Connects to `hub` with `token` and reads `welcome`, all within the
    /// target's handshake timeout.
    pub async fn connect(
        target: &Target,
        hub: &Hub,
        source: Option<IpAddr>,
        token: &str,
    ) -> anyhow::Result<Client> {
        let started = Instant::now();
        let fut = async {
            let tcp = tcp_connect(hub.addr, source, None)
                .await
                .with_context(|| format!("connecting to {}", hub.authority))?;
            let url = format!("ws://{}/ws?token={token}", hub.authority);
            let request = url.into_client_request()?;
            let (mut ws, _) =
                tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config()))
                    .await
                    .map_err(|e| anyhow!("handshake with {}: {e}", hub.authority))?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t)?;
                        if v["type"] != "welcome" {
                            bail!("expected welcome, got {t}");
                        }
                        let instance = v["instance"].as_str().unwrap_or_default().to_string();
                        return Ok((ws, instance));
                    }
                    Some(Ok(Message::Close(c))) => bail!("closed before welcome: {c:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("reading welcome: {e}"),
                    None => bail!("connection ended before welcome"),
                }
            }
        };
        let (ws, instance) = tokio::time::timeout(target.handshake_timeout, fut)
            .await
            .map_err(|_| anyhow!("no welcome within {:?}", target.handshake_timeout))??;
        Ok(Client {
            ws,
            instance,
            connect_time: started.elapsed(),
            next_ref: 1,
        })
    }

    /// Sends a command with a fresh `ref`; returns the ref.
    pub async fn command(&mut self, mut cmd: Value) -> anyhow::Result<i64> {
        let r = self.next_ref;
        self.next_ref += 1;
        cmd["ref"] = r.into();
        self.ws.send(Message::Text(cmd.to_string())).await?;
        Ok(r)
    }

    /// Subscribes and waits (up to `wait`) for `subscribed`; returns it.
    /// Frames that arrive before it are handed to `early`. An `unavailable`
    /// refusal (the hub could not reach its database in time) is retried
    /// with backoff within `wait`, as PROTOCOL.md tells clients to; any
    /// other refusal is an error.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<i64>,
        wait: Duration,
        mut early: impl FnMut(&str),
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .subscribe_once(channel, since, deadline, wait, &mut early)
                .await?
            {
                Ok(subscribed) => return Ok(subscribed),
                Err(refusal) if refusal["code"] == "unavailable" => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        bail!("subscribe {channel} refused until the deadline: {refusal}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(refusal) => bail!("subscribe {channel} refused: {refusal}"),
            }
        }
    }

    /// One `subscribe`: `Ok(subscribed)` or `Err(the error frame)`.
    async fn subscribe_once(
        &mut self,
        channel: &str,
        since: Option<i64>,
        deadline: tokio::time::Instant,
        wait: Duration,
        early: &mut impl FnMut(&str),
    ) -> anyhow::Result<Result<Value, Value>> {
        let mut cmd = serde_json::json!({"type": "subscribe", "channel": channel});
        if let Some(s) = since {
            cmd["since"] = s.into();
        }
        let r = self.command(cmd).await?;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("no reply to subscribe {channel} within {wait:?}"))?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if t.starts_with(r#"{"type":"subscribed""#)
                        || t.starts_with(r#"{"type":"error""#)
                    {
                        let v: Value = serde_json::from_str(&t)?;
                        if v["ref"] == r {
                            return Ok(if v["type"] == "error" { Err(v) } else { Ok(v) });
                        }
                    }
                    early(&t);
                }
                Some(Ok(Message::Close(c))) => bail!("closed while subscribing: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("subscribing: {e}"),
                None => bail!("connection ended while subscribing"),
            }
        }
    }

    /// Closes politely: a close frame, then a bounded wait for the
    /// server's close frame (not for the end of the TCP stream).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(msg)) = self.ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// What the hot path needs from an `event` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFrame {
    pub offset: i64,
    /// When the publisher sent it (µs since the epoch), if stamped.
    pub sent_us: Option<u64>,
}

/// Recognises an `event` frame and reads its offset and send time without
/// parsing the JSON (frames are `{"type":"event","channel":…,"offset":N,…}`;
/// channel names cannot contain quotes). Other frames: `None`.
pub fn scan_event(text: &str) -> Option<EventFrame> {
    if !text.starts_with(r#"{"type":"event""#) {
        return None;
    }
    let offset = int_after(text, r#""offset":"#)?;
    let sent_us = int_after(text, &format!("\"{SENT_KEY}\":")).map(|v| v as u64);
    Some(EventFrame { offset, sent_us })
}

/// The integer right after the first occurrence of `key`.
fn int_after(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    let rest = text[at..].trim_start();
    let end = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_event_frames() {
        let t = r#"{"type":"event","channel":"feed:lt-1","offset":42,"event":{"id":"x","kind":"k","data":{"lt_seq":7,"lt_sent_us":1700000000123456},"at":"…"}}"#;
        assert_eq!(
            scan_event(t),
            Some(EventFrame {
                offset: 42,
                sent_us: Some(1_700_000_000_123_456)
            })
        );
        let no_stamp = r#"{"type":"event","channel":"feed:a","offset":3,"event":{"data":{}}}"#;
        assert_eq!(scan_event(no_stamp).unwrap().sent_us, None);
        assert_eq!(scan_event(r#"{"type":"stats","version":3}"#), None);
    }
}
