//! [`RedisCluster`]: a Redis Cluster of a test's own, 3 masters and 3
//! replicas of Debian's `redis-server` on free ports, made with
//! `redis-cli --cluster create`; a master can be killed and its replica's
//! promotion awaited. Everything is stopped and removed on drop.

use super::config::free_port;
use pulsehub::broker::redis::slots::{key_slot, SlotMap};
use redis::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long forming the cluster or a failover may take.
const FORMING: Duration = Duration::from_secs(30);

pub struct RedisCluster {
    /// Every node's port; masters first as created (`redis-cli` makes the
    /// first three masters).
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

/// A port that is free and whose cluster bus port (+10000) is too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p <= 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    /// Starts the six nodes and forms the cluster; returns once every node
    /// says `cluster_state:ok` and every replica is in sync. Blocking: call
    /// it before starting hubs.
    pub fn start() -> RedisCluster {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let p = cluster_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let dir = std::env::temp_dir().join(format!("pulsehub-redis-cluster-{}", ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster {
            ports: ports.clone(),
            dir,
            children: Vec::new(),
        };
        for &port in &ports {
            let child = cluster.spawn(port);
            cluster.children.push(Some(child));
        }
        for &port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis node {port} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (scripts/services.sh installs redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + FORMING;
        while !cluster.formed() {
            assert!(Instant::now() < deadline, "the redis cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn spawn(&self, port: u16) -> Child {
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(&conf)
            .args([
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh installs it)")
    }

    /// Every live node says the cluster is ok, and each master has a
    /// replica in sync.
    fn formed(&self) -> bool {
        let live = self.live_ports();
        let ok = live.iter().all(|&p| {
            query(p, &["CLUSTER", "INFO"])
                .map(|v| text(&v).contains("cluster_state:ok"))
                .unwrap_or(false)
        });
        let in_sync = live
            .iter()
            .all(|&p| match query(p, &["INFO", "replication"]) {
                Ok(v) => {
                    let info = text(&v);
                    if info.contains("role:master") {
                        info.contains("connected_slaves:1") && info.contains("state=online")
                    } else {
                        info.contains("master_link_status:up")
                    }
                }
                Err(_) => false,
            });
        ok && in_sync
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Seed URLs for `PULSEHUB_REDIS_CLUSTER_NODES` (two of the masters).
    pub fn seeds(&self) -> Vec<String> {
        self.ports[..2]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The slot map as a live node sees it.
    pub fn slot_map(&self) -> SlotMap {
        let port = self.live_ports()[0];
        let reply = query(port, &["CLUSTER", "SLOTS"]).expect("CLUSTER SLOTS");
        SlotMap::from_cluster_slots(&reply, "127.0.0.1").expect("a slot map")
    }

    /// The port of the master serving `key`'s slot; the slot is checked
    /// against the server's own `CLUSTER KEYSLOT`.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        match query(port, &["CLUSTER", "KEYSLOT", key]) {
            Ok(Value::Int(slot)) => assert_eq!(i64::from(key_slot(key.as_bytes())), slot),
            other => panic!("CLUSTER KEYSLOT: {other:?}"),
        }
        self.slot_map()
            .master_of(key.as_bytes())
            .expect("every slot is served")
            .port
    }

    /// The shard channels a node has subscribers for (`PUBSUB SHARDCHANNELS`).
    pub fn shard_channels(&self, port: u16) -> Vec<String> {
        match query(port, &["PUBSUB", "SHARDCHANNELS"]) {
            Ok(Value::Array(items)) => {
                let mut names: Vec<String> = items.iter().map(text).collect();
                names.sort();
                names
            }
            other => panic!("PUBSUB SHARDCHANNELS on {port}: {other:?}"),
        }
    }

    /// How many clients the owner of `channel`'s slot has subscribed to it
    /// (`PUBSUB SHARDNUMSUB`).
    pub fn shard_subscribers(&self, channel: &str) -> i64 {
        self.shard_subscribers_at(self.master_of(channel), channel)
    }

    /// The classic channels a node has subscribers for (`PUBSUB CHANNELS`).
    pub fn classic_channels(&self, port: u16) -> Vec<String> {
        match query(port, &["PUBSUB", "CHANNELS"]) {
            Ok(Value::Array(items)) => items.iter().map(text).collect(),
            other => panic!("PUBSUB CHANNELS on {port}: {other:?}"),
        }
    }

    /// Moves `slot` (holding no keys) from the master on `from` to the one
    /// on `to`, as resharding does: `IMPORTING`/`MIGRATING`, then `NODE` on
    /// both (the others learn it over the cluster bus).
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let id = |port| text(&query(port, &["CLUSTER", "MYID"]).expect("CLUSTER MYID"));
        let (from_id, to_id) = (id(from), id(to));
        let slot = slot.to_string();
        let setslot = |port, args: &[&str]| {
            let mut all = vec!["CLUSTER", "SETSLOT", slot.as_str()];
            all.extend_from_slice(args);
            query(port, &all).unwrap_or_else(|e| panic!("{all:?} on {port}: {e}"));
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        setslot(to, &["NODE", &to_id]);
        setslot(from, &["NODE", &to_id]);
    }

    /// How many clients the node on `port` has subscribed to `channel`
    /// (it must own the channel's slot).
    pub fn shard_subscribers_at(&self, port: u16, channel: &str) -> i64 {
        match query(port, &["PUBSUB", "SHARDNUMSUB", channel]) {
            Ok(Value::Array(items)) => match items.get(1) {
                Some(Value::Int(n)) => *n,
                other => panic!("PUBSUB SHARDNUMSUB: {other:?}"),
            },
            other => panic!("PUBSUB SHARDNUMSUB on {port}: {other:?}"),
        }
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (without blocking the test's runtime) until `dead`'s slots are
    /// served by another master and the live nodes say `cluster_state:ok`.
    pub async fn wait_failover(&self, dead: u16) {
        let deadline = Instant::now() + FORMING;
        loop {
            let live = self.live_ports();
            let done = tokio::task::spawn_blocking({
                let live = live.clone();
                move || {
                    let ok = live.iter().all(|&p| {
                        query(p, &["CLUSTER", "INFO"])
                            .map(|v| text(&v).contains("cluster_state:ok"))
                            .unwrap_or(false)
                    });
                    ok && query(live[0], &["CLUSTER", "SLOTS"])
                        .ok()
                        .and_then(|r| SlotMap::from_cluster_slots(&r, "127.0.0.1").ok())
                        .is_some_and(|m| m.masters().iter().all(|n| n.port != dead))
                }
            })
            .await
            .unwrap();
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no replica of {dead} was promoted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command to one node (blocking, short timeouts).
fn query(port: u16, args: &[&str]) -> redis::RedisResult<Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}
