//! What a run talks to: one hub or several replicas (round robin), the
//! secrets to mint tokens and ingest with, and the local source addresses
//! connections are spread over.

use anyhow::{bail, Context as _};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// The demo secret of `pulsehub serve --demo`.
pub const DEMO_JWT_SECRET: &str = "pulsehub-demo-secret-change-me";
/// The demo ingest key of `pulsehub serve --demo`.
pub const DEMO_INGEST_KEY: &str = "pulsehub-demo-ingest-key";

/// One hub replica.
#[derive(Debug, Clone)]
pub struct Hub {
    /// `http://host:port` (no trailing slash).
    pub base: String,
    /// `host:port` for the `Host` header and the WebSocket URL.
    pub authority: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

/// Everything a scenario needs to reach the hubs.
#[derive(Debug, Clone)]
pub struct Target {
    pub hubs: Vec<Hub>,
    pub jwt_secret: String,
    pub ingest_key: String,
    /// Local addresses to bind outgoing connections to, round robin (empty:
    /// let the kernel choose). Each address has its own ~28,000 ports.
    pub sources: Vec<IpAddr>,
    /// Limit for one TCP connect + WebSocket handshake + `welcome`.
    pub handshake_timeout: Duration,
    pub http: reqwest::Client,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    scopes: &'a [&'a str],
    exp: u64,
}

impl Target {
    /// Hubs from `http://host:port` URLs. Only loopback addresses are
    /// accepted: this tool must never load anything but this machine.
    pub fn new(urls: &[String], jwt_secret: &str, ingest_key: &str) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("no hub URL given");
        }
        let mut hubs = Vec::new();
        for raw in urls {
            let url = Url::parse(raw).with_context(|| format!("hub URL '{raw}'"))?;
            if url.scheme() != "http" {
                bail!("hub URL '{raw}': only http:// is supported");
            }
            let addrs = url
                .socket_addrs(|| Some(80))
                .with_context(|| format!("resolving '{raw}'"))?;
            let Some(addr) = addrs.into_iter().find(|a| a.ip().is_loopback()) else {
                bail!("hub URL '{raw}' is not a loopback address: load tests target this machine only");
            };
            let host = url.host_str().unwrap_or("127.0.0.1");
            let authority = format!("{host}:{}", addr.port());
            hubs.push(Hub {
                base: format!("http://{authority}"),
                authority,
                addr,
            });
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Target {
            hubs,
            jwt_secret: jwt_secret.to_string(),
            ingest_key: ingest_key.to_string(),
            sources: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            http,
        })
    }

    /// Sets the source addresses (loopback only).
    pub fn with_sources(mut self, sources: Vec<IpAddr>) -> anyhow::Result<Self> {
        if let Some(bad) = sources.iter().find(|a| !a.is_loopback()) {
            bail!("source address {bad} is not a loopback address");
        }
        self.sources = sources;
        Ok(self)
    }

    /// The hub that the `i`-th connection goes to (round robin).
    pub fn hub(&self, i: usize) -> &Hub {
        &self.hubs[i % self.hubs.len()]
    }

    /// The source address of the `i`-th connection, if any were given.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[i % self.sources.len()])
        }
    }

    /// A browser token (HS256) for `user` with `scopes`, valid for `ttl`.
    pub fn token(&self, user: &str, scopes: &[&str], ttl: Duration) -> anyhow::Result<String> {
        let exp = unix_now().as_secs() + ttl.as_secs().max(60);
        let claims = Claims {
            sub: user,
            name: user,
            scopes,
            exp,
        };
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )?)
    }
}

/// `127.0.0.1` … `127.0.0.N`.
pub fn loopback_sources(n: usize) -> Vec<IpAddr> {
    (1..=n.clamp(1, 254))
        .map(|i| IpAddr::from([127, 0, 0, i as u8]))
        .collect()
}

/// Time since the Unix epoch (the clock that stamps events).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    unix_now().as_micros() as u64
}

/// A short random id naming this run's scopes and users.
pub fn run_id() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_targets() {
        assert!(Target::new(&["http://10.0.0.1:8080".into()], "s", "k").is_err());
        assert!(Target::new(&["ws://127.0.0.1:8080".into()], "s", "k").is_err());
        let t = Target::new(
            &[
                "http://127.0.0.1:8080".into(),
                "http://localhost:8081".into(),
            ],
            "s",
            "k",
        )
        .unwrap();
        assert_eq!(t.hub(3).addr.port(), 8081);
        assert!(t
            .clone()
            .with_sources(vec!["10.1.1.1".parse().unwrap()])
            .is_err());
    }

    #[test]
    fn loopback_sources_count() {
        let s = loopback_sources(3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].to_string(), "127.0.0.3");
    }
}
