//! WebSocket clients: connecting (from a chosen source address), reading
//! `welcome`, subscribing, and reading `event` frames cheaply.
//!
//! The load generator shares the machine with the hub, so the hot path does
//! not parse every frame as JSON: an `event` frame is recognised by its
//! prefix and its `offset` and send time are scanned for directly.
//!
//! [`RawWs`] is a hand-driven client for hostile clients (`abuse`): it sees
//! the HTTP status and body of a refused handshake, writes whatever frames it
//! is given, never answers pings by itself, and reads the server's close
//! frame even when the connection is reset right after (its reading half is
//! independent of its writing half, unlike tungstenite's).

use crate::target::{Hub, Target};
use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
    /// Frames that arrive before it are handed to `early`.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<i64>,
        wait: Duration,
        mut early: impl FnMut(&str),
    ) -> anyhow::Result<Value> {
        let mut cmd = serde_json::json!({"type": "subscribe", "channel": channel});
        if let Some(s) = since {
            cmd["since"] = s.into();
        }
        let r = self.command(cmd).await?;
        let deadline = tokio::time::Instant::now() + wait;
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
                            if v["type"] == "error" {
                                bail!("subscribe {channel} refused: {t}");
                            }
                            return Ok(v);
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

/// Opcodes of RFC 6455.
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The largest frame [`RawReader`] accepts from a server.
const MAX_RAW_FRAME: usize = 16 << 20;

/// One frame read by [`RawReader`] (unfragmented: the hub sends whole frames).
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The payload of a text frame.
    pub fn text(&self) -> Option<&str> {
        (self.opcode == OP_TEXT)
            .then(|| std::str::from_utf8(&self.payload).ok())
            .flatten()
    }

    /// The status code of a close frame (1005 when it carries none).
    pub fn close_code(&self) -> Option<u16> {
        if self.opcode != OP_CLOSE {
            return None;
        }
        Some(match self.payload.get(..2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 1005,
        })
    }
}

/// How a raw handshake ended.
pub enum Upgrade {
    /// 101, and `welcome` was read.
    Open(RawWs),
    /// Any other status, with the body the server sent (usually JSON).
    Refused { status: u16, body: String },
}

/// A WebSocket connection driven by hand (see the module docs).
pub struct RawWs {
    pub reader: RawReader,
    pub writer: RawWriter,
}

/// The reading half of a [`RawWs`].
pub struct RawReader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
}

/// The writing half of a [`RawWs`]; every frame is masked, as clients must.
pub struct RawWriter {
    wr: OwnedWriteHalf,
}

/// The mask of every frame [`RawWriter`] sends (any key will do).
const MASK: [u8; 4] = [0x5a, 0xc3, 0x17, 0x8e];

/// One masked client frame (FIN set) carrying `payload`.
pub fn encode_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// One frame from the front of `buf` and the bytes it used; `Ok(None)` when
/// `buf` does not hold a whole frame yet.
fn parse_frame(buf: &[u8]) -> std::io::Result<Option<(RawFrame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as usize, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n) as usize, 10)
            }
            None => return Ok(None),
        },
        n => (n as usize, 2),
    };
    if len > MAX_RAW_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte frame from the server"),
        ));
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    let Some(payload) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let payload = match mask {
        Some(m) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Ok(Some((RawFrame { opcode, payload }, at + len)))
}

impl RawWs {
    /// Connects to `hub` with `token` (`recv_buffer`: `SO_RCVBUF`), sends the
    /// upgrade request and, on 101, reads `welcome`; all within the target's
    /// handshake timeout. `Err` on transport errors and timeouts only.
    pub async fn connect(
        target: &Target,
        hub: &Hub,
        source: Option<IpAddr>,
        token: &str,
        recv_buffer: Option<u32>,
    ) -> anyhow::Result<Upgrade> {
        let fut = async {
            let mut tcp = tcp_connect(hub.addr, source, recv_buffer)
                .await
                .with_context(|| format!("connecting to {}", hub.authority))?;
            let request = format!(
                "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                hub.authority
            );
            tcp.write_all(request.as_bytes()).await?;
            let mut buf = Vec::with_capacity(1024);
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if buf.len() > 64 * 1024 {
                    bail!("response head over 64 KiB");
                }
                if tcp.read_buf(&mut buf).await? == 0 {
                    bail!("connection ended during the handshake");
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("not an HTTP response: {head:?}"))?;
            let mut rest = buf.split_off(end);
            if status != 101 {
                let length = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                });
                let want = length.unwrap_or(0).min(64 * 1024);
                while rest.len() < want {
                    if tcp.read_buf(&mut rest).await? == 0 {
                        break;
                    }
                }
                let body = String::from_utf8_lossy(&rest).into_owned();
                return Ok(Upgrade::Refused { status, body });
            }
            let (rd, wr) = tcp.into_split();
            let mut ws = RawWs {
                reader: RawReader { rd, buf: rest },
                writer: RawWriter { wr },
            };
            loop {
                match ws.reader.frame().await? {
                    Some(f) if f.opcode == OP_TEXT => {
                        if f.text()
                            .is_some_and(|t| t.starts_with(r#"{"type":"welcome""#))
                        {
                            return Ok(Upgrade::Open(ws));
                        }
                        bail!("expected welcome, got {:?}", f.text());
                    }
                    Some(f) if f.opcode == OP_CLOSE => {
                        bail!("closed before welcome ({:?})", f.close_code())
                    }
                    Some(_) => continue,
                    None => bail!("connection ended before welcome"),
                }
            }
        };
        tokio::time::timeout(target.handshake_timeout, fut)
            .await
            .map_err(|_| anyhow!("no handshake within {:?}", target.handshake_timeout))?
    }
}

impl RawReader {
    /// The next frame; `Ok(None)` when the server ended the stream.
    pub async fn frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

impl RawWriter {
    /// Sends one frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(&encode_frame(opcode, payload)).await
    }

    /// Sends a text frame.
    pub async fn text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Sends bytes already framed with [`encode_frame`] (large frames sent
    /// again and again are masked once).
    pub async fn framed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(bytes).await
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

    #[test]
    fn raw_frames_round_trip() {
        for len in [0, 5, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = encode_frame(OP_TEXT, &payload);
            // Not whole yet: no frame.
            assert!(parse_frame(&bytes[..bytes.len() - 1]).unwrap().is_none());
            let (frame, used) = parse_frame(&bytes).unwrap().unwrap();
            assert_eq!((frame.opcode, used), (OP_TEXT, bytes.len()));
            assert_eq!(frame.payload, payload, "length {len}");
        }
        // A server's unmasked close frame with a code.
        let (close, _) = parse_frame(&[0x88, 0x02, 0x03, 0xf0]).unwrap().unwrap();
        assert_eq!(close.close_code(), Some(1008));
        let (bare, _) = parse_frame(&[0x88, 0x00]).unwrap().unwrap();
        assert_eq!(bare.close_code(), Some(1005));
        assert!(parse_frame(&[0x81, 0x7f, 0, 0, 0, 0, 0x10, 0, 0, 0]).is_err());
    }
}
