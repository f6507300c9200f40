//! The options of `pulsehub-simulate`, as flags and environment variables.
//!
//! Ranges clap can check are checked here (`--users`, `--chats`,
//! `--max-batch`); the rest when the run starts (`run`): the rate,
//! the URL, the scopes and the run id.

/// Options of `pulsehub-simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the hub.
    #[arg(long, env = "PULSEHUB_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Produce the events to Kafka (bootstrap servers, `host:port`,
    /// comma-separated) instead of posting them to the hub; the hub
    /// consumes the topic (`PULSEHUB_KAFKA_TOPICS`).
    #[arg(long, env = "PULSEHUB_SIMULATE_KAFKA")]
    pub kafka: Option<String>,

    /// The Kafka topic, with `--kafka` (created with 3 partitions if missing).
    #[arg(long, default_value = "pulsehub.events")]
    pub topic: String,

    /// Ingest key.
    #[arg(
        long,
        env = "PULSEHUB_INGEST_KEY",
        default_value = "pulsehub-demo-ingest-key",
        hide_env_values = true
    )]
    pub ingest_key: String,

    /// Scopes to feed (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "demo")]
    pub scopes: Vec<String>,

    /// Events per second (total, across all scopes).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,

    /// Stop after this many events (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,

    /// Size of the simulated population (user ids u1..uN).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub users: u32,

    /// Chats per scope (subjects c1..cN).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub chats: u32,

    /// Seed of the event generator (default: random). With the same seed and
    /// run id, a run generates the same events.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Tag that makes this run's keys and subject ids unique (default: random;
    /// 1–32 of `[A-Za-z0-9_-]`).
    #[arg(long)]
    pub run_id: Option<String>,

    /// Most events in one POST (the hub accepts at most 1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_batch: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_parse() {
        use clap::{CommandFactory, Parser};
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "simulate",
            "--scopes",
            "demo,acme",
            "--rate",
            "12.5",
            "--count",
            "100",
            "--users",
            "40",
            "--seed",
            "7",
        ])
        .expect("parse");
        assert_eq!(cli.args.scopes, vec!["demo", "acme"]);
        assert_eq!(cli.args.rate, 12.5);
        assert_eq!(cli.args.count, Some(100));
        assert_eq!(cli.args.users, 40);
        assert_eq!(cli.args.seed, Some(7));
        assert_eq!(cli.args.max_batch, 500);
        assert!(Cli::try_parse_from(["simulate", "--users", "1"]).is_err());
        assert!(Cli::try_parse_from(["simulate", "--max-batch", "1001"]).is_err());
    }
}
