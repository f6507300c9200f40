//! The `pulsehub` binary: a thin command-line front over the library.

use clap::{Parser, Subcommand};
use pulsehub::auth::{claims_for, TokenKeys};
use pulsehub::config::{Config, LogFormat, DEMO_JWT_SECRET};
use pulsehub::startup::Application;
use pulsehub::{db, telemetry};

/// mimalloc, tuned to give memory back when clients leave: glibc kept its
/// peak after 10,000 connections closed (docs/benchmarks.md).
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--features dhat-heap`: every allocation is recorded by dhat (slow) and
/// `dhat-heap.json` written when the process ends, for bytes per connection
/// by allocation site (docs/benchmarks.md, "Memory by allocation site").
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

/// Options of mimalloc v2's `mi_option_e` (include/mimalloc.h) that
/// libmimalloc-sys does not name.
#[cfg(not(feature = "dhat-heap"))]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
#[cfg(not(feature = "dhat-heap"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Commit arena memory lazily, purge freed memory at once and use no
/// transparent huge pages, so a hub's resident size follows its connections
/// (`MIMALLOC_ARENA_EAGER_COMMIT=0`, `MIMALLOC_PURGE_DELAY=0`). With huge
/// pages the kernel kept filling sparse 2 MiB regions of an idle hub after
/// an abuse run (docs/benchmarks.md). mimalloc's own `allow_thp` option is
/// read before `main`, so the process opts out with `prctl` instead.
#[cfg(not(feature = "dhat-heap"))]
fn tune_allocator() {
    // SAFETY: setters of mimalloc's global options, which take plain
    // integers, and a prctl that only sets a flag on this process.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
            eprintln!(
                "pulsehub: cannot disable transparent huge pages; memory may be returned late"
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "pulsehub",
    version,
    about = "Real-time hub for live dashboards"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the hub.
    Serve(Box<Config>),
    /// Create the database if needed and apply migrations, then exit.
    Migrate {
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/pulsehub"
        )]
        database_url: String,
    },
    /// Print a browser token (JWT) signed with the configured secret.
    Token {
        /// User id (`sub`).
        #[arg(long, default_value = "alice")]
        user: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Scopes the token grants (comma-separated; `*` for all).
        #[arg(long, value_delimiter = ',', default_value = "demo")]
        scopes: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Signing secret (default: the demo secret).
        #[arg(long, env = "PULSEHUB_JWT_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    #[cfg(not(feature = "dhat-heap"))]
    tune_allocator();
    let cli = Cli::parse();
    let format = match &cli.command {
        Cmd::Serve(c) => c.log_format,
        _ => LogFormat::Pretty,
    };
    telemetry::init(format);
    actix_web::rt::System::new().block_on(async move {
        match cli.command {
            Cmd::Serve(config) => {
                let app = Application::build(*config).await?;
                app.run_until_stopped().await?;
            }
            Cmd::Migrate { database_url } => {
                db::prepare(&database_url).await?;
                println!("database ready");
            }
            Cmd::Token {
                user,
                name,
                scopes,
                ttl,
                secret,
            } => {
                let secret = secret
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| DEMO_JWT_SECRET.into());
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let claims = claims_for(&user, name.as_deref(), &scopes, ttl);
                println!("{}", TokenKeys::new(&secret).mint(&claims)?);
            }
        }
        Ok(())
    })
}
