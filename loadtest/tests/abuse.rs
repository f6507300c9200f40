//! The `abuse` scenario, briefly, against a real hub process (the
//! `pulsehub` binary of this workspace over a fresh PostgreSQL database):
//! asserts behaviour only (nothing lost, duplicated or reordered for the
//! well-behaved subscribers; every slowloris connection closed by the hub;
//! refusals over the per-user limit are 429 `limit_reached`; floods get
//! their errors and are closed), never timings or memory figures, which
//! belong to docs/benchmarks.md.
//!
//! PostgreSQL is found at `DATABASE_URL` (default: the local server); the
//! hub uses its database `pulsehub_loadtest_test`. The hub binary is
//! `PULSEHUB_BIN`, else `target/<profile>/pulsehub`, built with
//! `cargo build -p pulsehub` when missing.

use pulsehub_loadtest::scenarios::abuse::{self, AbuseOpts};
use pulsehub_loadtest::Target;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "test-secret-0123456789";
const INGEST_KEY: &str = "test-ingest-key-0123456789";

/// The hub's database, created (and migrated) by the hub itself when
/// missing. It is kept between runs: every run uses scopes of its own.
fn database_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut u = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    u.set_path("/pulsehub_loadtest_test");
    u.to_string()
}

/// The hub binary: `PULSEHUB_BIN`, or the workspace's own next to this
/// test's executable (`target/<profile>/deps/abuse-…`), built if missing.
fn hub_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("PULSEHUB_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("pulsehub");
    if !bin.exists() {
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "-p", "pulsehub", "--bin", "pulsehub"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "cargo build -p pulsehub failed");
    }
    bin
}

/// A `pulsehub serve` child process (killed if the test ends early).
struct HubProcess {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl HubProcess {
    async fn start(env: &[(&str, &str)]) -> HubProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("pulsehub-loadtest-{port}.log"));
        let out = std::fs::File::create(&log).expect("the hub's log file");
        let mut cmd = tokio::process::Command::new(hub_binary());
        cmd.arg("serve")
            .env("DATABASE_URL", database_url())
            .env("PULSEHUB_BIND", format!("127.0.0.1:{port}"))
            .env("PULSEHUB_JWT_SECRET", SECRET)
            .env("PULSEHUB_INGEST_KEY", INGEST_KEY)
            .env("PULSEHUB_DEMO", "false")
            .env("PULSEHUB_WORKERS", "2")
            .env("PULSEHUB_INSTANCE_ID", "hub-loadtest")
            .env("RUST_LOG", "warn")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting pulsehub");
        let mut hub = HubProcess { child, port, log };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(hub.url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return hub;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hub not ready in 30 s (is PostgreSQL running? scripts/test.sh starts it):\n{}",
                hub.log()
            );
            assert!(
                hub.child.try_wait().ok().flatten().is_none(),
                "hub exited:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the hub is running")
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_cost_well_behaved_subscribers_nothing() {
    // Slowloris connections are cut after 1 s instead of 10.
    let hub = HubProcess::start(&[("PULSEHUB_REQUEST_TIMEOUT_SECS", "1")]).await;
    let target =
        Arc::new(Target::new(&[hub.url("")], SECRET, INGEST_KEY).expect("a loopback target"));
    let opts = AbuseOpts {
        subscribers: 20,
        slowloris: 20,
        over_limit: 30, // the hub admits 20 (PULSEHUB_MAX_CONNECTIONS_PER_USER)
        never_reading: 3,
        flooders: 3,
        rate: 50.0,
        duration: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        drain: Duration::from_secs(20),
        settle: Duration::from_secs(2),
        hub_pids: vec![hub.pid()],
        ..Default::default()
    };
    let report = abuse::run(target, &opts).await.expect("abuse ran");
    let t = format!("{}\nhub log:\n{}", report.table(), hub.log());

    // The well-behaved subscribers got everything, once, in order.
    let d = &report.delivery;
    assert_eq!(report.subscribed, 20, "{t}");
    assert_eq!(report.publish.stored, 150, "{t}");
    assert_eq!(d.expected, 150 * 20, "{t}");
    assert_eq!(d.delivered, d.expected, "{t}");
    assert_eq!((d.lost, d.duplicated, d.out_of_order), (0, 0, 0), "{t}");
    assert_eq!(d.disconnects, 0, "{t}");
    assert_eq!(
        (report.received_min, report.received_max),
        (150, 150),
        "{t}"
    );

    // Every slowloris connection was closed by the hub.
    let sl = &report.slowloris;
    assert!(sl.opened >= 20, "{t}");
    assert_eq!(sl.closed_by_hub, sl.opened, "{t}");
    assert_eq!(sl.never_closed, 0, "{t}");
    assert_eq!(sl.answered_other, 0, "{t}");

    // One user: its limit admitted, the rest refused with 429 limit_reached.
    let ol = &report.over_limit;
    assert_eq!(ol.max_open, 20, "{t}");
    assert!(
        ol.refused_by_status.get(&429).is_some_and(|n| *n >= 10),
        "{t}"
    );
    assert_eq!(ol.refused_by_status.len(), 1, "only 429s: {t}");
    assert_eq!(
        ol.refused_by_code.keys().collect::<Vec<_>>(),
        vec!["limit_reached"],
        "{t}"
    );
    assert_eq!(ol.failed, 0, "{t}");

    // Floods get their errors, and repeat abusers are closed with 1008.
    let fl = &report.floods;
    for code in ["bad_request", "too_large", "rate_limited"] {
        assert!(fl.errors_by_code.contains_key(code), "no {code}: {t}");
    }
    assert!(fl.closed_by_code.get(&1008).is_some_and(|n| *n > 0), "{t}");

    // What the never-reading subscribers got is a gapless prefix.
    assert_eq!(report.never_reading.subscribed, 3, "{t}");
    assert_eq!(report.never_reading.not_a_prefix, 0, "{t}");

    assert!(report.problems().is_empty(), "{t}");
    hub.stop().await;
}
