//! `pulsehub-simulate`: the command line over [`pulsehub_simulate::run`].
//!
//! ```text
//! pulsehub-simulate [--url URL] [--scopes a,b] [--rate N] [--count N] [--duration S] [options]
//! ```
//! Exit codes: 0 done (Ctrl-C, `--count` or `--duration`), 1 the run could
//! not start or the hub refused the events.

use clap::Parser;
use pulsehub::config::LogFormat;
use pulsehub::telemetry;
use pulsehub_simulate::SimulateArgs;

#[derive(Parser)]
#[command(
    name = "pulsehub-simulate",
    version,
    about = "Post a realistic stream of domain events to a running pulsehub"
)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

// One thread, as when this ran inside the hub's binary: the simulator is a
// single loop that waits on the network.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(LogFormat::Pretty);
    pulsehub_simulate::run(cli.args).await
}
