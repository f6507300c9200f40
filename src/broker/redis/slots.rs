//! Where a key or sharded channel lives in a Redis Cluster: its hash slot
//! ([`key_slot`], CRC16 of the key or of its `{hash tag}`, modulo 16384) and
//! which master serves that slot ([`SlotMap`], read with `CLUSTER SLOTS`).
//!
//! [`Topology`] holds the seed nodes and the last map read, and reads it
//! again on demand ([`Topology::refresh`]: at most every
//! [`REFRESH_AT_MOST`], asking the known masters first, then the seeds).
//! Both the cluster writer and the cluster subscriber use one `Topology`, so
//! a refresh one of them caused is seen by the other.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;
/// A map younger than this is not read again.
pub const REFRESH_AT_MOST: Duration = Duration::from_millis(100);
/// Reading the map from one node gives up after this.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the bytes
/// between the first `{` and the next `}`, when not empty) or of the whole
/// key, modulo 16384 — the rule every Redis Cluster node applies.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// One cluster node, as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Slot ranges and the master serving each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotMap {
    /// `(first, last, master)`, sorted by `first`, not overlapping.
    ranges: Vec<(u16, u16, Node)>,
}

impl SlotMap {
    /// The master serving `slot`; `None` when no node serves it.
    pub fn master(&self, slot: u16) -> Option<&Node> {
        let i = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (first, last, node) = self.ranges.get(i.checked_sub(1)?)?;
        (*first..=*last).contains(&slot).then_some(node)
    }

    /// The master serving `key`'s slot.
    pub fn master_of(&self, key: &[u8]) -> Option<&Node> {
        self.master(key_slot(key))
    }

    /// Every master, once, in order.
    pub fn masters(&self) -> Vec<Node> {
        let mut all: Vec<Node> = self.ranges.iter().map(|(_, _, n)| n.clone()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Reads a `CLUSTER SLOTS` reply; `asked` is the node that answered (a
    /// node announced with an empty address lives on its host).
    pub fn from_cluster_slots(reply: &Value, asked: &str) -> Result<SlotMap, String> {
        let Value::Array(entries) = reply else {
            return Err(format!("CLUSTER SLOTS: unexpected reply {reply:?}"));
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let bad = || format!("CLUSTER SLOTS: unexpected entry {entry:?}");
            let Value::Array(fields) = entry else {
                return Err(bad());
            };
            let (Some(first), Some(last), Some(Value::Array(master))) =
                (int(fields.first()), int(fields.get(1)), fields.get(2))
            else {
                return Err(bad());
            };
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err(bad()),
            };
            let port = int(master.get(1)).ok_or_else(bad)?;
            let host = if host.is_empty() || host == "?" {
                asked.to_string()
            } else {
                host
            };
            let (Ok(first), Ok(last), Ok(port)) = (
                u16::try_from(first),
                u16::try_from(last),
                u16::try_from(port),
            ) else {
                return Err(bad());
            };
            if first > last || last >= SLOTS {
                return Err(bad());
            }
            ranges.push((first, last, Node { host, port }));
        }
        ranges.sort_by_key(|(first, _, _)| *first);
        if ranges.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err("CLUSTER SLOTS: overlapping ranges".into());
        }
        Ok(SlotMap { ranges })
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// The cluster's seeds and its last known slot map.
pub struct Topology {
    seeds: Vec<ConnectionInfo>,
    map: Mutex<Option<(Arc<SlotMap>, Instant)>>,
    /// One refresh at a time; the others wait for it and take its map.
    refreshing: tokio::sync::Mutex<()>,
}

impl Topology {
    /// From seed URLs (`redis://[user:password@]host:port`); each node found
    /// later is reached with the first seed's credentials and settings.
    pub fn new(seeds: &[String]) -> anyhow::Result<Topology> {
        let seeds = seeds
            .iter()
            .map(|s| {
                let info = s.as_str().into_connection_info()?;
                if !matches!(info.addr(), ConnectionAddr::Tcp(..)) {
                    anyhow::bail!("cluster seed {s}: only redis:// (TCP) nodes are supported");
                }
                Ok(info)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!seeds.is_empty(), "no Redis Cluster seed node");
        Ok(Topology {
            seeds,
            map: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The last map read, if any.
    pub fn current(&self) -> Option<Arc<SlotMap>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.as_ref().map(|(m, _)| m.clone())
    }

    /// How to reach `node` (the first seed's credentials), in RESP3 or not.
    pub fn node_info(&self, node: &Node, resp3: bool) -> ConnectionInfo {
        let template = &self.seeds[0];
        let mut redis = template.redis_settings().clone();
        if resp3 {
            redis = redis.set_protocol(ProtocolVersion::RESP3);
        }
        template
            .clone()
            .set_addr(ConnectionAddr::Tcp(node.host.clone(), node.port))
            .set_redis_settings(redis)
    }

    /// Reads the slot map again (unless it was read less than
    /// [`REFRESH_AT_MOST`] ago): from the known masters, else the seeds.
    pub async fn refresh(&self) -> Result<Arc<SlotMap>, String> {
        let _one = self.refreshing.lock().await;
        if let Some((map, at)) = &*self.map.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < REFRESH_AT_MOST {
                return Ok(map.clone());
            }
        }
        let mut ask: Vec<ConnectionInfo> = self
            .current()
            .map(|m| {
                m.masters()
                    .iter()
                    .map(|n| self.node_info(n, false))
                    .collect()
            })
            .unwrap_or_default();
        ask.extend(self.seeds.iter().cloned());
        let mut last_error = String::from("no node answered");
        for info in ask {
            match read_map(info).await {
                Ok(map) => {
                    let map = Arc::new(map);
                    *self.map.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((map.clone(), Instant::now()));
                    return Ok(map);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }
}

/// `CLUSTER SLOTS` from one node; a map with unserved slots is refused
/// (the cluster is not ready, or this node's view is partial).
async fn read_map(info: ConnectionInfo) -> Result<SlotMap, String> {
    let asked = match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => format!("{other:?}"),
    };
    let host = match info.addr() {
        ConnectionAddr::Tcp(host, _) => host.clone(),
        _ => String::new(),
    };
    let fail = |e: String| format!("{asked}: {e}");
    let client = redis::Client::open(info).map_err(|e| fail(e.to_string()))?;
    let reply = tokio::time::timeout(TIMEOUT, async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(&mut conn)
            .await
    })
    .await
    .map_err(|_| fail("timed out".into()))?
    .map_err(|e| fail(e.to_string()))?;
    let map = SlotMap::from_cluster_slots(&reply, &host).map_err(fail)?;
    let served: u32 = map
        .ranges
        .iter()
        .map(|(a, b, _)| u32::from(b - a) + 1)
        .sum();
    if served != u32::from(SLOTS) {
        return Err(fail(format!("{served} of {SLOTS} slots served")));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_clusters() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        // A hash tag: only what is between the braces counts…
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"x{foo}y"), key_slot(b"foo"));
        // …unless it is empty, or not closed.
        assert_eq!(key_slot(b"{}foo"), crc(b"{}foo"));
        assert_eq!(key_slot(b"foo{bar"), crc(b"foo{bar"));
        // The first `{` and the next `}`.
        assert_eq!(key_slot(b"{a}{b}"), key_slot(b"a"));
    }

    fn crc(b: &[u8]) -> u16 {
        crc16::State::<crc16::XMODEM>::calculate(b) % SLOTS
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn a_cluster_slots_reply_becomes_a_map() {
        let range = |a, b, master: Value| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                master,
                node("10.0.0.9", 7009),
            ])
        };
        let reply = Value::Array(vec![
            range(5461, 10922, node("10.0.0.2", 7001)),
            range(0, 5460, node("10.0.0.1", 7000)),
            range(10923, 16383, node("", 7002)),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "10.0.0.1").unwrap();
        let at = |s| map.master(s).map(|n| n.to_string());
        assert_eq!(at(0).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(at(5460).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(at(5461).as_deref(), Some("10.0.0.2:7001"));
        // An empty address: the host that answered.
        assert_eq!(at(16383).as_deref(), Some("10.0.0.1:7002"));
        assert_eq!(at(16384), None);
        assert_eq!(map.masters().len(), 3);

        // Holes are no one's.
        let partial = Value::Array(vec![range(100, 200, node("h", 1))]);
        let map = SlotMap::from_cluster_slots(&partial, "h").unwrap();
        assert_eq!((map.master(99), map.master(201)), (None, None));
        assert!(map.master(150).is_some());

        // Garbage is refused.
        assert!(SlotMap::from_cluster_slots(&Value::Int(1), "h").is_err());
        let overlap = Value::Array(vec![range(0, 10, node("h", 1)), range(5, 20, node("h", 2))]);
        assert!(SlotMap::from_cluster_slots(&overlap, "h").is_err());
    }
}
