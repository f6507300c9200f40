//! The client's address, for the per-address connection limit.
//!
//! Contract: the client is the TCP peer, unless the peer is one of the
//! configured trusted proxies (`PULSEHUB_TRUSTED_PROXIES`, addresses or
//! CIDR blocks; none by default). Then the forwarding header is read from
//! the right (the hop nearest to the hub) to the left, skipping trusted
//! proxies: the first address that is not one is the client. `Forwarded`
//! (RFC 7239, its `for=` parameters) is read when present, else
//! `X-Forwarded-For`; nginx's `$proxy_add_x_forwarded_for` appends the
//! address it saw, so only the entries added by trusted hops are believed
//! and a client cannot pick its own address by sending the header. An entry
//! that cannot be read (`unknown`, an obfuscated name) stops the walk: the
//! hop that added it is taken as the client. Without a trusted peer the
//! headers are ignored.
//!
//! Limits count per [`AddressKey`]: an IPv4 address, or an IPv6 /64 (what
//! one subscriber line or host is usually given, so a client cannot walk
//! through its own prefix to escape the limit).

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `PULSEHUB_TRUSTED_PROXIES` entries (`10.0.0.5`, `10.0.0.0/8`,
    /// `::1`); blanks are skipped.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "PULSEHUB_TRUSTED_PROXIES: '{e}' is not an IP address or CIDR block"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: `peer`, or what the trusted hops say.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(&peer) {
            return peer;
        }
        let mut hop = peer;
        for entry in forwarded_chain(headers).iter().rev() {
            let Some(ip) = entry.map(|ip| ip.to_canonical()) else {
                return hop;
            };
            if !self.trusts(&ip) {
                return ip;
            }
            hop = ip;
        }
        hop
    }
}

/// What the limit counts by: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                AddressKey(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => AddressKey(v4),
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// The forwarding chain, leftmost (the original client) first; `None` for
/// an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| node_address(value))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(node_address)
        .collect()
}

/// An address in a forwarding header: `192.0.2.1`, `192.0.2.1:4711`,
/// `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn node_address(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    // IPv4 with a port (an IPv6 address with a port is bracketed).
    v.rsplit_once(':')
        .filter(|(host, _)| !host.contains(':'))
        .and_then(|(host, _)| host.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let t = trusted(&[]);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(t.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_spoofed_entries_are_skipped() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // The client sent its own header ("1.1.1.1"); nginx appended what it saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        // Two trusted hops: the first untrusted from the right.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // No header: the proxy itself.
        assert_eq!(
            t.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        // A peer that is not trusted is the client, whatever it says.
        assert_eq!(t.client(ip("192.0.2.7"), &h), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_is_read_before_x_forwarded_for() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            (
                "forwarded",
                r#"for=198.51.100.7;proto=https, for="[2001:db8:cafe::17]:4711""#,
            ),
        ]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080;by=203.0.113.43")]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("192.0.2.60"));
        // An unreadable entry: the hop that added it is the client.
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn mapped_addresses_are_ipv4_and_ipv6_counts_per_64() {
        let t = trusted(&["127.0.0.1"]);
        let mapped = ip("::ffff:127.0.0.1");
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(t.client(mapped, &h), ip("203.0.113.9"));
        assert_eq!(
            AddressKey::of(ip("2001:db8:1:2:aaaa::1")),
            AddressKey::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddressKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(AddressKey::of(mapped).to_string(), "127.0.0.1");
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let err = TrustedProxies::parse(&["10.0.0.0/8".into(), "nginx".into()]).unwrap_err();
        assert!(err.contains("'nginx'"), "{err}");
        assert!(TrustedProxies::parse(&[" ".into()]).unwrap().is_empty());
    }
}
