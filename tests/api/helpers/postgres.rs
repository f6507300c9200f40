//! [`PrivatePostgres`]: a PostgreSQL server of a test's own, for tests that
//! stop the database under a running hub. The shared server (5432) is never
//! stopped; this one lives in a temporary directory (`initdb`), listens on a
//! free loopback port, and is stopped fast or like a crash and started again
//! on the same port.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, its
//! programs run as the `postgres` user (`runuser`), which owns the
//! directory. The binaries are found in `PG_BIN` (default: the newest of
//! Debian's `/usr/lib/postgresql/*/bin`); a missing one fails the test
//! loudly.

use super::config::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How [`PrivatePostgres::stop`] stops the server (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are terminated (`terminating connection due to
    /// administrator command`), then a clean shutdown checkpoint.
    Fast,
    /// Every process quits at once, as in a crash; the next start runs
    /// crash recovery from the WAL.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

pub struct PrivatePostgres {
    pub port: u16,
    /// Holds `data/` (the cluster), the Unix socket and `log`.
    dir: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    /// `initdb` into a fresh directory, then starts it on a free port and
    /// waits until it accepts connections (trust authentication, user
    /// `postgres`).
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix("pulsehub-pg-")
            .tempdir()
            .unwrap();
        if as_root() {
            let uid = postgres_uid();
            std::os::unix::fs::chown(dir.path(), Some(uid), None)
                .expect("giving the temporary directory to the postgres user");
        }
        let data = dir.path().join("data");
        run(Command::new(bin("initdb")).args([
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]));
        let mut pg = PrivatePostgres {
            port: free_port(),
            dir,
            running: false,
        };
        let mut start = pg.start_command();
        run(&mut start);
        pg.running = true;
        pg
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server; returns once every PostgreSQL process is gone.
    pub async fn stop(&mut self, mode: StopMode) {
        let mut cmd = self.stop_command(mode);
        run_async(&mut cmd).await;
        self.running = false;
    }

    /// Starts it again on the same port (after an immediate stop, crash
    /// recovery first); returns once it accepts connections.
    pub async fn restart(&mut self) {
        let mut cmd = self.start_command();
        run_async(&mut cmd).await;
        self.running = true;
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn start_command(&self) -> Command {
        let dir = self.dir.path();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            dir.display()
        );
        let mut cmd = Command::new(bin("pg_ctl"));
        cmd.args([
            "-D",
            &data_dir(dir),
            "-l",
            &dir.join("log").to_string_lossy(),
        ])
        .args(["-o", &options, "-w", "-t", "30", "start"]);
        cmd
    }

    fn stop_command(&self, mode: StopMode) -> Command {
        let mut cmd = Command::new(bin("pg_ctl"));
        cmd.args(["-D", &data_dir(self.dir.path()), "-m", mode.arg()])
            .args(["-w", "-t", "30", "stop"]);
        cmd
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = self.stop_command(StopMode::Immediate);
            let _ = as_postgres(&mut cmd).output();
        }
    }
}

fn data_dir(dir: &Path) -> String {
    dir.join("data").to_string_lossy().into_owned()
}

fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var("PG_BIN") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => installed_bin_dir(),
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: install PostgreSQL (scripts/services.sh does) or set PG_BIN",
        path.display()
    );
    path
}

/// The newest `/usr/lib/postgresql/{version}/bin` that has `initdb`
/// (Debian's layout, as `scripts/services.sh` finds it).
fn installed_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| root.join("15/bin"))
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_uid() -> u32 {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: a NUL-terminated name; the record is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no postgres user to run PostgreSQL as");
    unsafe { (*pw).pw_uid }
}

/// `cmd` as the `postgres` user when the tests run as root.
fn as_postgres(cmd: &mut Command) -> Command {
    let mut out = if as_root() {
        let mut r = Command::new("runuser");
        r.args(["-u", "postgres", "--"]).arg(cmd.get_program());
        r
    } else {
        Command::new(cmd.get_program())
    };
    out.args(cmd.get_args());
    out
}

fn run(cmd: &mut Command) {
    let out = as_postgres(cmd)
        .output()
        .expect("running a PostgreSQL program");
    succeeded(&cmd, &out);
}

/// [`run`] without blocking the runtime: the hub under test runs its actors
/// on the test's own thread.
async fn run_async(cmd: &mut Command) {
    let mut cmd = tokio::process::Command::from(as_postgres(cmd));
    let out = cmd.output().await.expect("running a PostgreSQL program");
    succeeded(&cmd, &out);
}

/// Fails loudly, with what the program printed, unless it succeeded.
fn succeeded(cmd: &dyn std::fmt::Debug, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
