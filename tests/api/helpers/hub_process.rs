//! [`HubProcess`]: the `pulsehub` binary as a child process.

use super::config::{free_port, INGEST_KEY, SECRET};
use std::time::Duration;

/// A `pulsehub serve` child process (killed when dropped), for what a
/// process must show: signals, `kill -9`, its own memory under load.
pub struct HubProcess {
    pub child: tokio::process::Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl HubProcess {
    /// Starts the binary on a free port with the test secrets, `env` on top,
    /// and waits until it is ready.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> HubProcess {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pulsehub-test-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsehub"));
        cmd.arg("serve")
            .env("DATABASE_URL", database_url)
            .env("PULSEHUB_BIND", format!("127.0.0.1:{port}"))
            .env("PULSEHUB_JWT_SECRET", SECRET)
            .env("PULSEHUB_INGEST_KEY", INGEST_KEY)
            .env("PULSEHUB_WORKERS", "2")
            .env("PULSEHUB_DEMO", "false")
            .stdout(out.try_clone().unwrap())
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
                "not ready in 30 s:\n{}",
                hub.log()
            );
            assert!(
                hub.child.try_wait().unwrap().is_none(),
                "exited:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// The last lines of its log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
