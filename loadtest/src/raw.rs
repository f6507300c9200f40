//! [`RawWs`]: a WebSocket client driven by hand, for hostile clients (the
//! `abuse` scenario) and for tests that must see what tungstenite hides. It
//! sees the HTTP status and body of a refused handshake, writes whatever
//! frames it is given, never writes by itself (no automatic pongs, no close
//! reply), and reads the server's close frame even when the connection is
//! reset right after (its reading half is independent of its writing half,
//! unlike tungstenite's).

use crate::client::tcp_connect;
use crate::target::{Hub, Target};
use anyhow::{anyhow, bail, Context as _};
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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

/// The headers that make a GET a WebSocket upgrade request (RFC 6455). The
/// key is the RFC's sample: the server's accept value is never checked.
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

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
            let tcp = tcp_connect(hub.addr, source, recv_buffer)
                .await
                .with_context(|| format!("connecting to {}", hub.authority))?;
            match RawWs::upgrade(tcp, &hub.authority, token).await? {
                Upgrade::Open(mut ws) => {
                    ws.welcome().await?;
                    Ok(Upgrade::Open(ws))
                }
                refused => Ok(refused),
            }
        };
        tokio::time::timeout(target.handshake_timeout, fut)
            .await
            .map_err(|_| anyhow!("no handshake within {:?}", target.handshake_timeout))?
    }

    /// Sends the upgrade request for `/ws?token=…` to `authority` over `tcp`
    /// and reads the answer: on 101 the open connection, its first frame
    /// (`welcome`) not read yet; otherwise the status and the body. `Err` on
    /// transport errors and what is not an HTTP answer; no time limit.
    pub async fn upgrade(
        mut tcp: TcpStream,
        authority: &str,
        token: &str,
    ) -> anyhow::Result<Upgrade> {
        let mut request = format!("GET /ws?token={token} HTTP/1.1\r\nHost: {authority}\r\n");
        for (name, value) in UPGRADE_HEADERS {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
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
        Ok(Upgrade::Open(RawWs {
            reader: RawReader { rd, buf: rest },
            writer: RawWriter { wr },
        }))
    }

    /// Reads up to the `welcome` frame (skipping control frames) and returns
    /// its text; `Err` when anything else comes first.
    pub async fn welcome(&mut self) -> anyhow::Result<String> {
        loop {
            match self.reader.frame().await? {
                Some(f) if f.opcode == OP_TEXT => {
                    return match f.text() {
                        Some(t) if t.starts_with(r#"{"type":"welcome""#) => Ok(t.to_string()),
                        other => bail!("expected welcome, got {other:?}"),
                    };
                }
                Some(f) if f.opcode == OP_CLOSE => {
                    bail!("closed before welcome ({:?})", f.close_code())
                }
                Some(_) => continue,
                None => bail!("connection ended before welcome"),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
