//! `pulsehub simulate`: feeds a running hub with a realistic, stateful stream
//! of domain events, for demos and soak tests.
//!
//! # Contract
//!
//! - Events go to `POST {url}/api/events` with `Authorization: Bearer
//!   {ingest_key}`, as JSON arrays of at most `--max-batch` items (the hub takes
//!   at most 1,000), one batch every 100–250 ms, sized so the total matches
//!   `--rate` events per second across all `--scopes`.
//! - Every event has the shape of PROTOCOL.md ("An event as ingested"):
//!   `{"scope","kind","actor":{"id","name"},"subject":{"type","id","state"},
//!   "data":{…},"key","at"}`. `kind` always matches `[a-z0-9_.:-]{1,64}`, and
//!   `at` is RFC 3339 (UTC, milliseconds).
//! - `key` is `sim-{run}-{seq}`: unique within a run, and across runs because
//!   `{run}` is a random tag (or `--run-id`). A retried batch is re-sent byte for
//!   byte, so a retry after a commit whose reply was lost only counts as
//!   duplicates on the hub.
//! - Actors are a population of `--users` people with ids `u1..uN` and human
//!   names; a few of them are much more active than the rest.
//! - The mix, per scope, and the subject lifecycles it respects:
//!
//!   | kind | subject (type, state) | data |
//!   |---|---|---|
//!   | `message.sent` | `chat` `c1..cN`, `open` | `chars` |
//!   | `reaction` | `chat` `c1..cN`, `open` | `emoji` |
//!   | `check_in` | `ticket`, `used` (each ticket once) | `gate`, `tier` |
//!   | `poll.vote` | `poll`, `open` (one vote per person and poll) | `option`, `question` |
//!   | `poll.closed` | `poll`, `closed` (after its last vote) | `votes`, `winner` |
//!   | `question.asked` | `question`, `open` | `text` |
//!   | `question.upvoted` | `question`, `open` (not by the asker, once per person) | `votes` |
//!   | `question.answered` | `question`, `answered` (then never touched again) | `votes` |
//!   | `task.created` | `task`, `pending` | `title`, `priority` |
//!   | `task.started` | `task`, `in_progress` (only a pending task) | `title`, `assignee` |
//!   | `task.completed` | `task`, `completed` (only a started task, by its assignee; never restarted) | `title`, `duration_s` |
//!   | `approval.requested` | `approval`, `queued` | `request`, `amount` |
//!   | `approval.approved` / `approval.rejected` | `approval`, `approved` / `rejected` (only a queued one, not by the requester) | `request`, `requested_by`, `wait_s` |
//!
//!   Ids of subjects with a lifecycle (tickets, polls, questions, tasks,
//!   approvals) carry the run tag (`task7-x3k9q2`), so a second run never
//!   moves a subject of an earlier run backwards. Chats are shared: `c1` is the
//!   busiest.
//! - Generation is pure and deterministic: [`Simulator`] with the same seed,
//!   run tag and timestamps yields the same events.
//! - Delivery: a failed POST (connection error, timeout, 429, 5xx, 503 with
//!   `Retry-After`) is retried with exponential backoff and jitter, or after
//!   `Retry-After` when given (capped at 60 s), with the same body and keys,
//!   until it succeeds or the run stops. Any other non-2xx answer (400, 401,
//!   403, 413, …) stops the run with an error that includes the hub's JSON
//!   error body. While a batch is retried no new events are generated, and the
//!   backlog after an outage is capped at about two seconds' worth of events.
//! - Every 5 s a one-line progress summary is logged (sent, accepted,
//!   duplicates, errors, effective rate), and a final one on exit.
//! - The run stops on Ctrl-C (at once; a batch in flight is reported as
//!   unconfirmed), after `--count` events have been delivered, or after
//!   `--duration` seconds (no new batches after that instant, and a batch being
//!   retried is given up).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::protocol::valid_scope;
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Options of `pulsehub simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the hub.
    #[arg(long, env = "PULSEHUB_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

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

/// Runs the simulation until Ctrl-C, `--count` or `--duration`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let endpoint = events_endpoint(&args.url)?;
    if !args.rate.is_finite() || args.rate <= 0.0 || args.rate > 1_000_000.0 {
        bail!(
            "--rate must be a number of events per second in (0, 1000000], got {}",
            args.rate
        );
    }
    let mut sim = Simulator::new(SimConfig {
        scopes: args.scopes.clone(),
        users: args.users as usize,
        chats: args.chats as usize,
        seed: args.seed,
        run_id: args.run_id.clone().unwrap_or_else(random_run_id),
    })?;
    let run_id = sim.run_id().to_owned();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pulsehub-simulate/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                tracing::info!("Ctrl-C: stopping the simulation");
                let _ = stop_tx.send(true);
            }
            Err(err) => tracing::warn!("cannot listen for Ctrl-C: {err}"),
        }
    });

    tracing::info!(
        "simulating {} ev/s into {} for scopes {} (run {}, {} users{})",
        args.rate,
        endpoint,
        sim.scopes().join(","),
        run_id,
        args.users,
        args.seed.map(|s| format!(", seed {s}")).unwrap_or_default()
    );

    let start = Instant::now();
    let deadline = args.duration.map(|secs| start + Duration::from_secs(secs));
    let mut poster = Poster {
        client,
        endpoint,
        ingest_key: args.ingest_key.clone(),
        stop: stop_rx,
        deadline,
        totals: Totals::default(),
    };
    let result = pump(
        &mut sim,
        &mut poster,
        Pace {
            rate: args.rate,
            count: args.count,
            max_batch: args.max_batch as usize,
            start,
        },
    )
    .await;
    ctrl_c.abort();

    let totals = poster.totals;
    tracing::info!(
        "simulate finished (run {run_id}): {}{}",
        totals.summary(start.elapsed()),
        if totals.unconfirmed > 0 {
            format!(
                ", {} events unconfirmed (interrupted before the hub answered)",
                totals.unconfirmed
            )
        } else {
            String::new()
        }
    );
    result
}

/// `{url}/api/events`, refusing what this build cannot reach.
fn events_endpoint(url: &str) -> anyhow::Result<String> {
    let base = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).with_context(|| format!("invalid --url '{url}'"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => bail!(
            "--url '{url}': this build has no TLS support; use http:// (e.g. behind a TLS-terminating proxy)"
        ),
        other => bail!("--url '{url}': unsupported scheme '{other}', expected http://"),
    }
    Ok(format!("{base}/api/events"))
}

/// A random run tag: six lowercase letters and digits.
fn random_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

// ---------------------------------------------------------------------------
// Pacing and delivery
// ---------------------------------------------------------------------------

const REPORT_EVERY: Duration = Duration::from_secs(5);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_ERROR_BODY: usize = 8 * 1024;

struct Pace {
    rate: f64,
    count: Option<u64>,
    max_batch: usize,
    start: Instant,
}

/// Counters of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    /// Events in batches the hub confirmed (202).
    sent: u64,
    /// Of those, newly stored.
    accepted: u64,
    /// Of those, already known by key.
    duplicates: u64,
    /// Failed POST attempts (each was retried or ended the run).
    errors: u64,
    /// Events posted but never confirmed because the run stopped.
    unconfirmed: u64,
}

impl Totals {
    fn summary(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        };
        format!(
            "sent {} (accepted {}, duplicates {}), errors {}, {:.1} ev/s over {:.0} s",
            self.sent, self.accepted, self.duplicates, self.errors, rate, secs
        )
    }
}

/// The hub's 202 body.
#[derive(Debug, Deserialize)]
struct Ingested {
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
}

#[derive(Debug)]
enum Delivery {
    /// The hub committed the batch.
    Done,
    /// The run stopped (Ctrl-C or `--duration`) before the hub confirmed it.
    Stopped,
}

/// Posts batches, retrying what may succeed later.
struct Poster {
    client: reqwest::Client,
    endpoint: String,
    ingest_key: String,
    stop: watch::Receiver<bool>,
    deadline: Option<Instant>,
    totals: Totals,
}

impl Poster {
    /// Posts one batch until the hub commits it, the run stops, or the hub
    /// refuses it for good (the error carries the hub's error body).
    async fn deliver(&mut self, batch: &[Event]) -> anyhow::Result<Delivery> {
        // Serialized once: every retry sends the very same bytes and keys.
        let body = serde_json::to_vec(batch).context("cannot encode events")?;
        let mut attempt: u32 = 0;
        loop {
            let request = self
                .client
                .post(&self.endpoint)
                .bearer_auth(&self.ingest_key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send();
            let outcome = tokio::select! {
                outcome = request => outcome,
                _ = stopped(&mut self.stop) => return Ok(self.give_up(batch)),
            };
            let wait = match outcome {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        let text = response.text().await.unwrap_or_default();
                        let ingested =
                            serde_json::from_str::<Ingested>(&text).unwrap_or_else(|_| {
                                tracing::warn!(
                                    "hub answered {status} with an unexpected body: {text}"
                                );
                                Ingested {
                                    accepted: batch.len() as u64,
                                    duplicates: 0,
                                }
                            });
                        self.totals.sent += batch.len() as u64;
                        self.totals.accepted += ingested.accepted;
                        self.totals.duplicates += ingested.duplicates;
                        return Ok(Delivery::Done);
                    }
                    let retry_after = retry_after(response.headers(), Utc::now());
                    let text = error_body(response).await;
                    self.totals.errors += 1;
                    if !retryable(status) {
                        bail!(refusal(status, &text));
                    }
                    let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                    tracing::warn!(
                        "hub answered {status} to a batch of {} (attempt {}), retrying in {:.1} s: {}",
                        batch.len(),
                        attempt + 1,
                        wait.as_secs_f64(),
                        text
                    );
                    wait
                }
                Err(err) => {
                    if err.is_builder() {
                        return Err(err).context("cannot build the request");
                    }
                    self.totals.errors += 1;
                    let wait = backoff(attempt);
                    tracing::warn!(
                        "cannot post a batch of {} to {} (attempt {}), retrying in {:.1} s: {}",
                        batch.len(),
                        self.endpoint,
                        attempt + 1,
                        wait.as_secs_f64(),
                        error_chain(&err)
                    );
                    wait
                }
            };
            attempt = attempt.saturating_add(1);
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(self.give_up(batch));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut self.stop) => return Ok(self.give_up(batch)),
                _ = until(self.deadline) => return Ok(self.give_up(batch)),
            }
        }
    }

    fn give_up(&mut self, batch: &[Event]) -> Delivery {
        self.totals.unconfirmed += batch.len() as u64;
        Delivery::Stopped
    }
}

/// Generates events at the requested pace and delivers them until a stop.
async fn pump(sim: &mut Simulator, poster: &mut Poster, pace: Pace) -> anyhow::Result<()> {
    let tick = tick_interval(pace.rate);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report = tokio::time::interval_at(pace.start + REPORT_EVERY, REPORT_EVERY);
    report.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // After an outage, catch up by at most about two seconds of events.
    let max_backlog = (pace.rate * 2.0).max(1.0);
    // Start with one event in hand so something shows up at once.
    let mut carry: f64 = 1.0;
    let mut last = Instant::now();
    let mut generated: u64 = 0;
    let mut stop = poster.stop.clone();
    let deadline = poster.deadline;
    loop {
        if pace.count.is_some_and(|count| generated >= count) {
            return Ok(());
        }
        tokio::select! {
            _ = stopped(&mut stop) => return Ok(()),
            _ = until(deadline) => return Ok(()),
            _ = report.tick() => {
                tracing::info!("simulate: {}", poster.totals.summary(pace.start.elapsed()));
                continue;
            }
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(last);
        last = now;
        carry = (carry + pace.rate * elapsed.as_secs_f64()).min(max_backlog);
        let mut n = carry.floor() as u64;
        if let Some(count) = pace.count {
            n = n.min(count - generated);
        }
        if n == 0 {
            continue;
        }
        carry -= n as f64;
        generated += n;
        // Spread the timestamps over the tick the events belong to.
        let wall = Utc::now();
        let step_us = elapsed.as_micros() as f64 / n as f64;
        let events: Vec<Event> = (0..n)
            .map(|i| {
                let back = chrono::Duration::microseconds(((n - 1 - i) as f64 * step_us) as i64);
                sim.next_event(wall - back)
            })
            .collect();
        let mut chunks = events.chunks(pace.max_batch.max(1));
        while let Some(chunk) = chunks.next() {
            if let Delivery::Stopped = poster.deliver(chunk).await? {
                let rest: usize = chunks.map(<[Event]>::len).sum();
                poster.totals.unconfirmed += rest as u64;
                return Ok(());
            }
        }
    }
}

/// Batches every 100–250 ms: about one event per batch at low rates, never
/// more than ten batches a second.
fn tick_interval(rate: f64) -> Duration {
    let ms = (1000.0 / rate).clamp(100.0, 250.0);
    Duration::from_millis(ms as u64)
}

/// Exponential backoff with jitter: ~0.2 s, 0.4 s, 0.8 s … up to 10 s.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let jitter: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    base.mul_f64(jitter)
}

/// Worth trying again: rate limiting and server errors (503 included).
fn retryable(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at 60 s.
fn retry_after(headers: &reqwest::header::HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc);
        (when - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The error message for a batch the hub refused for good.
fn refusal(status: reqwest::StatusCode, body: &str) -> String {
    let hint = match status.as_u16() {
        401 => " (check --ingest-key / PULSEHUB_INGEST_KEY)",
        404 => " (is --url a pulsehub hub?)",
        413 => " (lower --max-batch)",
        300..=399 => " (redirects are not followed: check --url)",
        _ => "",
    };
    let body = if body.is_empty() {
        "(empty body)"
    } else {
        body
    };
    format!("hub refused the events with {status}{hint}: {body}")
}

/// The body of an error answer, truncated for the log.
async fn error_body(response: reqwest::Response) -> String {
    let mut text = response.text().await.unwrap_or_default();
    if text.len() > MAX_ERROR_BODY {
        let mut cut = MAX_ERROR_BODY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text.trim().to_owned()
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves once a stop was requested; never if no one can request one.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves at the deadline; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending::<()>().await,
    }
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// One event, as posted to `/api/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub scope: String,
    pub kind: &'static str,
    pub actor: Actor,
    pub subject: Subject,
    pub data: Value,
    pub key: String,
    /// RFC 3339, UTC.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub state: &'static str,
}

/// What a [`Simulator`] simulates.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Scope names, `[A-Za-z0-9_.-]{1,64}`; blanks are dropped, duplicates merged.
    pub scopes: Vec<String>,
    /// People, at least 2 (ids `u1..uN`).
    pub users: usize,
    /// Chats per scope, at least 1 (ids `c1..cN`).
    pub chats: usize,
    /// Seed of the generator; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Run tag in keys and lifecycle subject ids: `[A-Za-z0-9_-]{1,32}`.
    pub run_id: String,
}

/// A deterministic source of realistic events: keeps the state of every
/// subject, so each event is a valid next step of its subject's lifecycle.
pub struct Simulator {
    world: World,
    scopes: Vec<ScopeState>,
    seq: u64,
}

/// What all scopes share: the rng and the population.
struct World {
    rng: StdRng,
    run: String,
    people: Vec<Actor>,
    activity: WeightedIndex<f64>,
    chats: usize,
    chat_activity: WeightedIndex<f64>,
}

/// The subjects of one scope.
#[derive(Default)]
struct ScopeState {
    name: String,
    next_ticket: u64,
    next_poll: u64,
    poll: Option<Poll>,
    next_question: u64,
    questions: Vec<Question>,
    next_task: u64,
    /// Open tasks only: a completed task is dropped, so it cannot move again.
    tasks: BTreeMap<u64, Task>,
    next_approval: u64,
    /// Queued approvals only, oldest first.
    approvals: Vec<Approval>,
}

struct Poll {
    id: String,
    template: usize,
    voters: HashSet<usize>,
    tally: Vec<u64>,
    /// Relative appeal of each option.
    preference: Vec<f64>,
    /// Votes after which the poll closes (at most the population).
    target: usize,
}

struct Question {
    id: String,
    asker: usize,
    upvoters: HashSet<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    InProgress {
        assignee: usize,
        since: DateTime<Utc>,
    },
}

struct Task {
    title: &'static str,
    stage: Stage,
}

struct Approval {
    id: String,
    requester: usize,
    request: &'static str,
    amount: Option<u32>,
    requested: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Message,
    Reaction,
    CheckIn,
    PollVote,
    PollClose,
    Ask,
    Upvote,
    Answer,
    TaskCreate,
    TaskStart,
    TaskComplete,
    ApprovalRequest,
    ApprovalDecide,
}

const NAMES: &[&str] = &[
    "Maria", "Jonas", "Aisha", "Liam", "Sofia", "Kenji", "Amara", "Lucas", "Elena", "Omar",
    "Priya", "Mateo", "Chloe", "Tomasz", "Yuki", "Noah", "Fatima", "Emil", "Zoe", "Ravi", "Ingrid",
    "Diego", "Leila", "Finn", "Hana", "Samuel", "Nadia", "Oskar", "Mei", "Kwame", "Clara", "Arjun",
];

const EMOJI: &[&str] = &["👍", "❤️", "😂", "🎉", "👏", "🔥", "😮", "🙏"];

const GATES: &[(&str, f64)] = &[("A", 5.0), ("B", 3.0), ("C", 2.0), ("VIP", 0.5)];

const TIERS: &[(&str, f64)] = &[
    ("general", 80.0),
    ("vip", 8.0),
    ("speaker", 4.0),
    ("staff", 5.0),
    ("press", 3.0),
];

const POLLS: &[(&str, &[&str])] = &[
    (
        "Best talk so far?",
        &[
            "keynote",
            "async-rust",
            "postgres-at-scale",
            "design-systems",
        ],
    ),
    ("What's for lunch?", &["pizza", "salad", "sushi", "tacos"]),
    ("How is the pace?", &["too-slow", "just-right", "too-fast"]),
    ("Next meetup?", &["march", "april", "may"]),
    ("Coffee or tea?", &["coffee", "tea", "neither"]),
];

const QUESTIONS: &[&str] = &[
    "Will the slides be shared afterwards?",
    "Is there a recording of the keynote?",
    "How does this scale past one region?",
    "What is the migration path from v1?",
    "Can we get the demo code?",
    "When does the afternoon session start?",
    "Is the API rate-limited per tenant?",
    "How do you test this in CI?",
    "Where is the after-party?",
    "Does it work offline?",
];

const TASKS: &[&str] = &[
    "Restock badges at gate A",
    "Fix projector in room B",
    "Confirm catering headcount",
    "Update the schedule screen",
    "Prepare the main stage",
    "Review speaker slides",
    "Set up the livestream",
    "Print extra name tags",
    "Check Wi-Fi in the hall",
    "Move chairs to room C",
    "Answer sponsor emails",
    "Refill water stations",
];

const PRIORITIES: &[(&str, f64)] = &[("low", 3.0), ("normal", 6.0), ("high", 2.0)];

/// An amount range, in whole currency units.
type Amounts = Option<(u32, u32)>;

/// Request kind, share, and amount range (none: not about money).
const REQUESTS: &[(&str, f64, Amounts)] = &[
    ("expense", 5.0, Some((15, 900))),
    ("refund", 3.0, Some((10, 250))),
    ("purchase", 2.0, Some((100, 5000))),
    ("access", 3.0, None),
    ("time_off", 1.0, None),
];

/// Open questions, tasks and queued approvals stay below these.
const MAX_OPEN_QUESTIONS: usize = 12;
const MAX_OPEN_TASKS: usize = 10;
const MAX_QUEUED_APPROVALS: usize = 6;

impl Simulator {
    /// A simulator for `config`, or why the config is unusable.
    pub fn new(config: SimConfig) -> anyhow::Result<Self> {
        let mut scopes: Vec<String> = Vec::new();
        for scope in &config.scopes {
            let scope = scope.trim();
            if scope.is_empty() || scopes.iter().any(|s| s == scope) {
                continue;
            }
            if !valid_scope(scope) {
                bail!("invalid scope '{scope}': expected 1-64 of [A-Za-z0-9_.-]");
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            bail!("no scope to feed: give at least one with --scopes");
        }
        if config.users < 2 {
            bail!("--users must be at least 2, got {}", config.users);
        }
        if config.chats < 1 {
            bail!("--chats must be at least 1");
        }
        let run = config.run_id.trim().to_owned();
        if run.is_empty()
            || run.len() > 32
            || !run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("invalid run id '{run}': expected 1-32 of [A-Za-z0-9_-]");
        }

        let mut rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let people = (0..config.users)
            .map(|i| {
                let first = NAMES[i % NAMES.len()];
                let round = i / NAMES.len();
                let name = if round == 0 {
                    first.to_owned()
                } else {
                    // "Maria B.", "Maria C.", … then "Maria B2." and so on.
                    let letter = char::from(b'A' + (round % 26) as u8);
                    let lap = round / 26;
                    if lap == 0 {
                        format!("{first} {letter}.")
                    } else {
                        format!("{first} {letter}{lap}.")
                    }
                };
                Actor {
                    id: format!("u{}", i + 1),
                    name,
                }
            })
            .collect();
        // A few people do most of the talking: Zipf-like weights, shuffled so
        // u1 is not always the busiest.
        let mut weights: Vec<f64> = (0..config.users)
            .map(|rank| 1.0 / ((rank + 1) as f64).powf(0.8))
            .collect();
        weights.shuffle(&mut rng);
        let activity = WeightedIndex::new(&weights).context("user weights")?;
        // c1 is the busy general chat, the others quieter.
        let chat_activity =
            WeightedIndex::new((0..config.chats).map(|rank| 1.0 / ((rank + 1) as f64).powf(0.9)))
                .context("chat weights")?;

        Ok(Simulator {
            world: World {
                rng,
                run,
                people,
                activity,
                chats: config.chats,
                chat_activity,
            },
            scopes: scopes
                .into_iter()
                .map(|name| ScopeState {
                    name,
                    ..ScopeState::default()
                })
                .collect(),
            seq: 0,
        })
    }

    /// The scopes fed, validated and deduplicated.
    pub fn scopes(&self) -> Vec<&str> {
        self.scopes.iter().map(|s| s.name.as_str()).collect()
    }

    /// The run tag in keys and subject ids.
    pub fn run_id(&self) -> &str {
        &self.world.run
    }

    /// The next event, stamped `at`.
    pub fn next_event(&mut self, at: DateTime<Utc>) -> Event {
        self.seq += 1;
        let index = self.world.rng.gen_range(0..self.scopes.len());
        let scope = &mut self.scopes[index];
        let (kind, actor, subject, data) = scope.step(&mut self.world, at);
        Event {
            scope: scope.name.clone(),
            kind,
            actor: self.world.people[actor].clone(),
            subject,
            data,
            key: format!("sim-{}-{}", self.world.run, self.seq),
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

impl World {
    /// Someone, the active ones more often.
    fn someone(&mut self) -> usize {
        self.activity.sample(&mut self.rng)
    }

    /// Someone for whom `eligible` holds, if anyone.
    fn someone_who(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..16 {
            let user = self.someone();
            if eligible(user) {
                return Some(user);
            }
        }
        let n = self.people.len();
        let offset = self.rng.gen_range(0..n);
        (0..n).map(|i| (offset + i) % n).find(|&u| eligible(u))
    }

    fn chat(&mut self) -> Subject {
        let chat = self.chat_activity.sample(&mut self.rng);
        debug_assert!(chat < self.chats);
        Subject {
            kind: "chat",
            id: format!("c{}", chat + 1),
            state: "open",
        }
    }

    /// An index into `weights` (positive, not all zero), by weight.
    fn pick(&mut self, weights: impl Iterator<Item = f64> + Clone) -> usize {
        let total: f64 = weights.clone().sum();
        let mut roll = self.rng.gen_range(0.0..total);
        let mut last = 0;
        for (i, weight) in weights.enumerate() {
            if roll < weight {
                return i;
            }
            roll -= weight;
            last = i;
        }
        last
    }

    /// One of `items` (not empty), by weight.
    fn weighted<T: Copy>(&mut self, items: &[(T, f64)]) -> T {
        items[self.pick(items.iter().map(|&(_, w)| w))].0
    }

    fn id(&self, prefix: &str, n: u64) -> String {
        format!("{prefix}{n}-{}", self.run)
    }

    /// A message length: mostly short, sometimes long.
    fn chars(&mut self) -> u32 {
        if self.rng.gen_bool(0.8) {
            self.rng.gen_range(2..=80)
        } else {
            self.rng.gen_range(80..=600)
        }
    }
}

type Step = (&'static str, usize, Subject, Value);

impl ScopeState {
    /// What can happen next, and how likely it is.
    fn candidates(&self, users: usize) -> Vec<(Action, f64)> {
        let mut out = vec![
            (Action::Message, 34.0),
            (Action::Reaction, 14.0),
            (Action::CheckIn, 10.0),
        ];
        match &self.poll {
            Some(poll) if poll.voters.len() >= poll.target => out.push((Action::PollClose, 6.0)),
            _ => out.push((Action::PollVote, 12.0)),
        }
        if self.questions.len() < MAX_OPEN_QUESTIONS {
            out.push((Action::Ask, 4.0));
        }
        if self.questions.iter().any(|q| q.upvoters.len() + 1 < users) {
            out.push((Action::Upvote, 8.0));
        }
        if !self.questions.is_empty() {
            out.push((Action::Answer, 3.0));
        }
        if self.tasks.len() < MAX_OPEN_TASKS {
            out.push((Action::TaskCreate, 4.0));
        }
        if self.tasks.values().any(|t| t.stage == Stage::Pending) {
            out.push((Action::TaskStart, 4.0));
        }
        if self
            .tasks
            .values()
            .any(|t| matches!(t.stage, Stage::InProgress { .. }))
        {
            out.push((Action::TaskComplete, 4.0));
        }
        if self.approvals.len() < MAX_QUEUED_APPROVALS {
            out.push((Action::ApprovalRequest, 2.5));
        }
        if !self.approvals.is_empty() {
            out.push((Action::ApprovalDecide, 2.5));
        }
        out
    }

    /// One valid next step: kind, actor (index), subject, data.
    fn step(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        let action = w.weighted(&self.candidates(w.people.len()));
        match action {
            Action::Message => {
                let who = w.someone();
                let chars = w.chars();
                ("message.sent", who, w.chat(), json!({ "chars": chars }))
            }
            Action::Reaction => {
                let who = w.someone();
                let emoji = EMOJI[w.rng.gen_range(0..EMOJI.len())];
                ("reaction", who, w.chat(), json!({ "emoji": emoji }))
            }
            Action::CheckIn => self.check_in(w),
            Action::PollVote => self.poll_vote(w),
            Action::PollClose => self.poll_close(w),
            Action::Ask => self.ask(w),
            Action::Upvote => self.upvote(w),
            Action::Answer => self.answer(w),
            Action::TaskCreate => self.task_create(w),
            Action::TaskStart => self.task_start(w, now),
            Action::TaskComplete => self.task_complete(w, now),
            Action::ApprovalRequest => self.approval_request(w, now),
            Action::ApprovalDecide => self.approval_decide(w, now),
        }
    }

    fn check_in(&mut self, w: &mut World) -> Step {
        self.next_ticket += 1;
        let who = w.someone();
        let gate = w.weighted(GATES);
        let tier = w.weighted(TIERS);
        let subject = Subject {
            kind: "ticket",
            id: w.id("t", self.next_ticket),
            state: "used",
        };
        (
            "check_in",
            who,
            subject,
            json!({ "gate": gate, "tier": tier }),
        )
    }

    fn poll_vote(&mut self, w: &mut World) -> Step {
        let users = w.people.len();
        if self.poll.is_none() {
            // The first vote opens the next poll.
            self.next_poll += 1;
            let template = ((self.next_poll - 1) as usize) % POLLS.len();
            let options = POLLS[template].1.len();
            // Each poll has a favourite or two.
            let preference = (0..options).map(|_| w.rng.gen_range(0.2..3.0)).collect();
            let share = w.rng.gen_range(0.4..0.9);
            let target = ((users as f64 * share).round() as usize).clamp(1, users);
            self.poll = Some(Poll {
                id: w.id("p", self.next_poll),
                template,
                voters: HashSet::new(),
                tally: vec![0; options],
                preference,
                target,
            });
        }
        let Some(poll) = self.poll.as_mut() else {
            return self.check_in(w);
        };
        let who = w
            .someone_who(|u| !poll.voters.contains(&u))
            .unwrap_or_else(|| w.someone());
        poll.voters.insert(who);
        let option = w.pick(poll.preference.iter().copied());
        poll.tally[option] += 1;
        let (question, options) = POLLS[poll.template];
        (
            "poll.vote",
            who,
            Subject {
                kind: "poll",
                id: poll.id.clone(),
                state: "open",
            },
            json!({ "option": options[option], "question": question }),
        )
    }

    fn poll_close(&mut self, w: &mut World) -> Step {
        let host = w.someone();
        let Some(poll) = self.poll.take() else {
            // Not offered without an open poll; stay valid anyway.
            return self.check_in(w);
        };
        let (question, options) = POLLS[poll.template];
        let winner = poll
            .tally
            .iter()
            .enumerate()
            .max_by_key(|&(i, votes)| (votes, std::cmp::Reverse(i)))
            .map(|(i, _)| options[i]);
        (
            "poll.closed",
            host,
            Subject {
                kind: "poll",
                id: poll.id,
                state: "closed",
            },
            json!({ "votes": poll.voters.len(), "winner": winner, "question": question }),
        )
    }

    fn ask(&mut self, w: &mut World) -> Step {
        self.next_question += 1;
        let who = w.someone();
        let text = QUESTIONS[w.rng.gen_range(0..QUESTIONS.len())];
        let id = w.id("q", self.next_question);
        self.questions.push(Question {
            id: id.clone(),
            asker: who,
            upvoters: HashSet::new(),
        });
        (
            "question.asked",
            who,
            Subject {
                kind: "question",
                id,
                state: "open",
            },
            json!({ "text": text }),
        )
    }

    fn upvote(&mut self, w: &mut World) -> Step {
        let users = w.people.len();
        let open: Vec<usize> = (0..self.questions.len())
            .filter(|&i| self.questions[i].upvoters.len() + 1 < users)
            .collect();
        let Some(&index) = open.choose(&mut w.rng) else {
            return self.ask(w);
        };
        let question = &mut self.questions[index];
        let Some(who) = w.someone_who(|u| u != question.asker && !question.upvoters.contains(&u))
        else {
            return self.ask(w);
        };
        question.upvoters.insert(who);
        (
            "question.upvoted",
            who,
            Subject {
                kind: "question",
                id: question.id.clone(),
                state: "open",
            },
            json!({ "votes": question.upvoters.len() }),
        )
    }

    fn answer(&mut self, w: &mut World) -> Step {
        if self.questions.is_empty() {
            return self.ask(w);
        }
        // The host mostly takes the most upvoted question (the oldest on a tie).
        let index = if w.rng.gen_bool(0.7) {
            let mut best = 0;
            for (i, q) in self.questions.iter().enumerate() {
                if q.upvoters.len() > self.questions[best].upvoters.len() {
                    best = i;
                }
            }
            best
        } else {
            w.rng.gen_range(0..self.questions.len())
        };
        let question = self.questions.remove(index);
        let host = w.someone();
        (
            "question.answered",
            host,
            Subject {
                kind: "question",
                id: question.id,
                state: "answered",
            },
            json!({ "votes": question.upvoters.len() }),
        )
    }

    fn task_create(&mut self, w: &mut World) -> Step {
        self.next_task += 1;
        let who = w.someone();
        let title = TASKS[w.rng.gen_range(0..TASKS.len())];
        let priority = w.weighted(PRIORITIES);
        self.tasks.insert(
            self.next_task,
            Task {
                title,
                stage: Stage::Pending,
            },
        );
        (
            "task.created",
            who,
            Subject {
                kind: "task",
                id: w.id("task", self.next_task),
                state: "pending",
            },
            json!({ "title": title, "priority": priority }),
        )
    }

    fn task_start(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        let pending: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.stage == Stage::Pending)
            .map(|(&n, _)| n)
            .collect();
        let Some(&n) = pending.choose(&mut w.rng) else {
            return self.task_create(w);
        };
        let who = w.someone();
        let id = w.id("task", n);
        let Some(task) = self.tasks.get_mut(&n) else {
            return self.task_create(w);
        };
        task.stage = Stage::InProgress {
            assignee: who,
            since: now,
        };
        (
            "task.started",
            who,
            Subject {
                kind: "task",
                id,
                state: "in_progress",
            },
            json!({ "title": task.title, "assignee": w.people[who].id }),
        )
    }

    fn task_complete(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        let started: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.stage, Stage::InProgress { .. }))
            .map(|(&n, _)| n)
            .collect();
        let Some(&n) = started.choose(&mut w.rng) else {
            return self.task_create(w);
        };
        // Dropped from the open tasks: a completed task never moves again.
        let Some(task) = self.tasks.remove(&n) else {
            return self.task_create(w);
        };
        let Stage::InProgress { assignee, since } = task.stage else {
            return self.task_create(w);
        };
        let took = (now - since).num_seconds().max(0);
        (
            "task.completed",
            assignee,
            Subject {
                kind: "task",
                id: w.id("task", n),
                state: "completed",
            },
            json!({ "title": task.title, "duration_s": took }),
        )
    }

    fn approval_request(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        self.next_approval += 1;
        let who = w.someone();
        let index = w.pick(REQUESTS.iter().map(|&(_, share, _)| share));
        let (request, _, range) = REQUESTS[index];
        let amount = range.map(|(lo, hi)| w.rng.gen_range(lo..=hi));
        let id = w.id("a", self.next_approval);
        self.approvals.push(Approval {
            id: id.clone(),
            requester: who,
            request,
            amount,
            requested: now,
        });
        let mut data = json!({ "request": request });
        if let Some(amount) = amount {
            data["amount"] = json!(amount);
        }
        (
            "approval.requested",
            who,
            Subject {
                kind: "approval",
                id,
                state: "queued",
            },
            data,
        )
    }

    fn approval_decide(&mut self, w: &mut World, now: DateTime<Utc>) -> Step {
        if self.approvals.is_empty() {
            return self.approval_request(w, now);
        }
        // Mostly first come, first served.
        let index = if w.rng.gen_bool(0.7) {
            0
        } else {
            w.rng.gen_range(0..self.approvals.len())
        };
        let requester = self.approvals[index].requester;
        let Some(approver) = w.someone_who(|u| u != requester) else {
            return self.approval_request(w, now);
        };
        let approval = self.approvals.remove(index);
        // Big amounts are turned down more often.
        let reject = match approval.amount {
            Some(amount) if amount > 1000 => 0.45,
            _ => 0.2,
        };
        let (kind, state) = if w.rng.gen_bool(reject) {
            ("approval.rejected", "rejected")
        } else {
            ("approval.approved", "approved")
        };
        let mut data = json!({
            "request": approval.request,
            "requested_by": w.people[approval.requester].id,
            "wait_s": (now - approval.requested).num_seconds().max(0),
        });
        if let Some(amount) = approval.amount {
            data["amount"] = json!(amount);
        }
        (
            kind,
            approver,
            Subject {
                kind: "approval",
                id: approval.id,
                state,
            },
            data,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::valid_kind;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(seed: u64) -> SimConfig {
        SimConfig {
            scopes: vec!["demo".into(), "acme".into()],
            users: 24,
            chats: 6,
            seed: Some(seed),
            run_id: "test01".into(),
        }
    }

    fn generate(config: SimConfig, n: usize) -> Vec<Event> {
        let mut sim = Simulator::new(config).expect("valid config");
        let t0 = DateTime::parse_from_rfc3339("2026-11-21T21:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        (0..n)
            .map(|i| sim.next_event(t0 + chrono::Duration::milliseconds(200 * i as i64)))
            .collect()
    }

    #[test]
    fn every_kind_matches_the_protocol() {
        for event in generate(config(1), 10_000) {
            assert!(valid_kind(event.kind), "bad kind {:?}", event.kind);
            assert!(valid_scope(&event.scope));
            assert!(
                !event.subject.id.is_empty() && !event.subject.id.contains(char::is_whitespace)
            );
            assert!(
                DateTime::parse_from_rfc3339(&event.at).is_ok(),
                "bad at {}",
                event.at
            );
            let n: usize = event.actor.id[1..].parse().expect("actor id u<n>");
            assert!(event.actor.id.starts_with('u') && (1..=24).contains(&n));
            assert!(event.data.is_object());
        }
    }

    #[test]
    fn keys_are_unique_across_10000_events() {
        let events = generate(config(2), 10_000);
        let keys: HashSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), events.len());
        // Another run never reuses a key either.
        let other = generate(
            SimConfig {
                run_id: "test02".into(),
                ..config(2)
            },
            10_000,
        );
        assert!(other.iter().all(|e| !keys.contains(e.key.as_str())));
    }

    /// Allowed (previous state → next state) per subject type; `None` is "new".
    fn allowed(kind: &str, from: Option<&str>, to: &str) -> bool {
        matches!(
            (kind, from, to),
            ("chat", _, "open")
                | ("ticket", None, "used")
                | ("poll", None | Some("open"), "open")
                | ("poll", Some("open"), "closed")
                | ("question", None | Some("open"), "open")
                | ("question", Some("open"), "answered")
                | ("task", None, "pending")
                | ("task", Some("pending"), "in_progress")
                | ("task", Some("in_progress"), "completed")
                | ("approval", None, "queued")
                | ("approval", Some("queued"), "approved" | "rejected")
        )
    }

    #[test]
    fn subjects_only_move_forward() {
        for seed in 0..5 {
            let mut state: HashMap<(String, &str, String), &str> = HashMap::new();
            for event in generate(config(seed), 10_000) {
                let s = &event.subject;
                let id = (event.scope.clone(), s.kind, s.id.clone());
                let from = state.get(&id).copied();
                assert!(
                    allowed(s.kind, from, s.state),
                    "{} {}: {:?} -> {} ({})",
                    s.kind,
                    s.id,
                    from,
                    s.state,
                    event.kind
                );
                state.insert(id, s.state);
            }
        }
    }

    #[test]
    fn tasks_never_go_backwards() {
        let events = generate(config(3), 10_000);
        let mut tasks: HashMap<(String, String), Vec<&str>> = HashMap::new();
        for e in events.iter().filter(|e| e.subject.kind == "task") {
            tasks
                .entry((e.scope.clone(), e.subject.id.clone()))
                .or_default()
                .push(e.kind);
        }
        let mut completed = 0;
        for (id, history) in &tasks {
            let expected = ["task.created", "task.started", "task.completed"];
            assert_eq!(history[..], expected[..history.len()], "task {id:?}");
            completed += usize::from(history.len() == 3);
        }
        assert!(completed > 50, "only {completed} tasks completed");
        // The one who completes a task is the one who started it.
        let mut assignee: HashMap<(String, String), String> = HashMap::new();
        for e in events.iter().filter(|e| e.subject.kind == "task") {
            let id = (e.scope.clone(), e.subject.id.clone());
            match e.kind {
                "task.started" => {
                    assignee.insert(id, e.actor.id.clone());
                }
                "task.completed" => assert_eq!(assignee.get(&id), Some(&e.actor.id)),
                _ => {}
            }
        }
    }

    #[test]
    fn people_act_plausibly() {
        let events = generate(config(4), 10_000);
        let mut votes: HashSet<(String, String, String)> = HashSet::new();
        let mut askers: HashMap<(String, String), String> = HashMap::new();
        let mut upvotes: HashSet<(String, String, String)> = HashSet::new();
        let mut requesters: HashMap<(String, String), String> = HashMap::new();
        for e in &events {
            let id = (e.scope.clone(), e.subject.id.clone());
            let by = (e.scope.clone(), e.subject.id.clone(), e.actor.id.clone());
            match e.kind {
                "poll.vote" => assert!(votes.insert(by), "double vote {e:?}"),
                "question.asked" => {
                    askers.insert(id, e.actor.id.clone());
                }
                "question.upvoted" => {
                    assert_ne!(askers.get(&id), Some(&e.actor.id), "self upvote");
                    assert!(upvotes.insert(by), "double upvote {e:?}");
                }
                "approval.requested" => {
                    requesters.insert(id, e.actor.id.clone());
                }
                "approval.approved" | "approval.rejected" => {
                    assert_ne!(requesters.get(&id), Some(&e.actor.id), "self approval")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_mix_covers_every_kind_and_chats_dominate() {
        let events = generate(config(5), 10_000);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for e in &events {
            *counts.entry(e.kind).or_default() += 1;
        }
        for kind in [
            "message.sent",
            "reaction",
            "check_in",
            "poll.vote",
            "poll.closed",
            "question.asked",
            "question.upvoted",
            "question.answered",
            "task.created",
            "task.started",
            "task.completed",
            "approval.requested",
            "approval.approved",
            "approval.rejected",
        ] {
            assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind}");
        }
        assert!(counts["message.sent"] > counts["check_in"]);
        let scopes: HashSet<&str> = events.iter().map(|e| e.scope.as_str()).collect();
        assert_eq!(scopes.len(), 2);
        let chats: HashSet<&str> = events
            .iter()
            .filter(|e| e.subject.kind == "chat")
            .map(|e| e.subject.id.as_str())
            .collect();
        assert_eq!(chats.len(), 6);
        assert!(events.iter().any(|e| e.actor.name == "Maria"));
    }

    #[test]
    fn a_seed_makes_the_stream_reproducible() {
        assert_eq!(generate(config(7), 500), generate(config(7), 500));
        assert_ne!(generate(config(7), 500), generate(config(8), 500));
    }

    #[test]
    fn events_serialize_to_the_ingest_shape() {
        let event = generate(config(9), 1).remove(0);
        let value = serde_json::to_value(&event).expect("json");
        for field in ["scope", "kind", "actor", "subject", "data", "key", "at"] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert!(value["actor"]["id"].is_string() && value["actor"]["name"].is_string());
        assert!(value["subject"]["type"].is_string());
        assert!(value["subject"]["id"].is_string());
        assert!(value["subject"]["state"].is_string());
        assert_eq!(value["at"], "2026-11-21T21:00:00.000Z");
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |c: SimConfig| Simulator::new(c).is_err();
        assert!(bad(SimConfig {
            scopes: vec!["no spaces".into()],
            ..config(0)
        }));
        assert!(bad(SimConfig {
            scopes: vec![" ".into()],
            ..config(0)
        }));
        assert!(bad(SimConfig {
            users: 1,
            ..config(0)
        }));
        assert!(bad(SimConfig {
            chats: 0,
            ..config(0)
        }));
        assert!(bad(SimConfig {
            run_id: "a b".into(),
            ..config(0)
        }));
        let sim = Simulator::new(SimConfig {
            scopes: vec!["demo".into(), " demo".into(), "".into(), "x.y-z_1".into()],
            ..config(0)
        })
        .expect("valid");
        assert_eq!(sim.scopes(), vec!["demo", "x.y-z_1"]);
        assert_eq!(sim.run_id(), "test01");
        assert!(events_endpoint("https://hub.example").is_err());
        assert!(events_endpoint("not a url").is_err());
        assert_eq!(
            events_endpoint("http://127.0.0.1:9/").expect("url"),
            "http://127.0.0.1:9/api/events"
        );
    }

    #[test]
    fn large_populations_get_distinct_names() {
        let sim = Simulator::new(SimConfig {
            users: 2000,
            ..config(0)
        })
        .expect("valid");
        let names: HashSet<&str> = sim.world.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 2000);
        assert_eq!(sim.world.people[0].name, "Maria");
        assert_eq!(sim.world.people[0].id, "u1");
    }

    #[test]
    fn pacing_and_backoff_stay_in_bounds() {
        assert_eq!(tick_interval(5.0), Duration::from_millis(200));
        assert_eq!(tick_interval(0.1), Duration::from_millis(250));
        assert_eq!(tick_interval(10_000.0), Duration::from_millis(100));
        assert!(backoff(0) <= Duration::from_millis(200));
        assert!(backoff(0) >= Duration::from_millis(100));
        assert!(backoff(50) <= MAX_BACKOFF);
        assert!(retryable(reqwest::StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(reqwest::StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(reqwest::StatusCode::BAD_REQUEST));
        assert!(!retryable(reqwest::StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let headers = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                reqwest::header::RETRY_AFTER,
                v.parse().expect("header value"),
            );
            h
        };
        assert_eq!(
            retry_after(&headers("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(&headers("3600"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:05 GMT"), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), now), None);
    }

    // --- against a fake hub -------------------------------------------------

    /// One request as the fake hub saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        authorization: String,
        body: Value,
    }

    type Reply = (u16, &'static str, String);

    /// An HTTP server on an ephemeral port that answers request `i` (with its
    /// JSON body) with `reply(i, body)`: status, extra headers, body.
    async fn fake_hub(
        reply: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, length) = loop {
                    let n = socket.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "client hung up");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.expect("read body");
                    assert!(n > 0, "client hung up");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let authorization = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + length]).expect("json body");
                let (status, headers, text) = reply(i, &body);
                log.lock().expect("lock").push(Seen {
                    authorization,
                    body,
                });
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{text}",
                    text.len()
                );
                socket.write_all(response.as_bytes()).await.expect("write");
                let _ = socket.shutdown().await;
                i += 1;
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn accepted(body: &Value) -> String {
        let n = body.as_array().map_or(1, Vec::len);
        format!(r#"{{"accepted":{n},"duplicates":0}}"#)
    }

    fn poster_for(url: &str) -> (Poster, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let poster = Poster {
            client: reqwest::Client::new(),
            endpoint: events_endpoint(url).expect("url"),
            ingest_key: "k3y".into(),
            stop: rx,
            deadline: None,
            totals: Totals::default(),
        };
        (poster, tx)
    }

    #[tokio::test]
    async fn retries_resend_the_same_keys() {
        let (url, seen) = fake_hub(|i, body| match i {
            0 => (
                503,
                "retry-after: 0\r\n",
                r#"{"error":{"code":"unavailable","message":"busy"}}"#.into(),
            ),
            1 => (
                429,
                "retry-after: 0\r\n",
                r#"{"error":{"code":"rate_limited","message":"slow down"}}"#.into(),
            ),
            _ => (202, "", accepted(body)),
        })
        .await;
        let (mut poster, _tx) = poster_for(&url);
        let batch = generate(config(10), 3);
        let outcome = poster.deliver(&batch).await.expect("delivered");
        assert!(matches!(outcome, Delivery::Done));
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.body == seen[0].body));
        assert!(seen.iter().all(|s| s.authorization == "Bearer k3y"));
        assert_eq!(seen[0].body.as_array().map(Vec::len), Some(3));
        assert_eq!(
            poster.totals,
            Totals {
                sent: 3,
                accepted: 3,
                duplicates: 0,
                errors: 2,
                unconfirmed: 0
            }
        );
    }

    #[tokio::test]
    async fn connection_refused_is_retried_until_stopped() {
        // Bind then drop to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let (mut poster, tx) = poster_for(&format!("http://127.0.0.1:{port}"));
        let batch = generate(config(11), 2);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let _ = tx.send(true);
        });
        let outcome = poster.deliver(&batch).await.expect("no hard error");
        assert!(matches!(outcome, Delivery::Stopped));
        assert!(poster.totals.errors >= 2, "{:?}", poster.totals);
        assert_eq!(poster.totals.unconfirmed, 2);
        stopper.await.expect("stopper");
    }

    #[tokio::test]
    async fn a_bad_request_stops_with_the_hubs_error_body() {
        let (url, seen) = fake_hub(|_, _| {
            (
                400,
                "",
                r#"{"error":{"code":"bad_request","message":"invalid events","details":[{"index":0,"field":"kind","message":"bad"}]}}"#.into(),
            )
        })
        .await;
        let (mut poster, _tx) = poster_for(&url);
        let err = poster
            .deliver(&generate(config(12), 1))
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("400"), "{text}");
        assert!(text.contains(r#""code":"bad_request""#), "{text}");
        assert_eq!(seen.lock().expect("lock").len(), 1, "not retried");

        let (url, _) = fake_hub(|_, _| {
            (
                401,
                "",
                r#"{"error":{"code":"unauthorized","message":"bad key"}}"#.into(),
            )
        })
        .await;
        let (mut poster, _tx) = poster_for(&url);
        let err = poster
            .deliver(&generate(config(12), 1))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("--ingest-key"), "{err}");
    }

    #[tokio::test]
    async fn run_sends_count_events_then_stops() {
        let (url, seen) = fake_hub(|_, body| (202, "", accepted(body))).await;
        let args = SimulateArgs {
            url,
            ingest_key: "k3y".into(),
            scopes: vec!["demo".into(), "acme".into()],
            rate: 200.0,
            count: Some(57),
            duration: Some(20),
            users: 10,
            chats: 3,
            seed: Some(1),
            run_id: None,
            max_batch: 7,
        };
        let started = std::time::Instant::now();
        run(args).await.expect("run");
        assert!(started.elapsed() < Duration::from_secs(5));
        let seen = seen.lock().expect("lock").clone();
        let events: Vec<&Value> = seen
            .iter()
            .flat_map(|s| s.body.as_array().into_iter().flatten())
            .collect();
        assert_eq!(events.len(), 57);
        assert!(seen
            .iter()
            .all(|s| s.body.as_array().map_or(0, Vec::len) <= 7));
        let keys: HashSet<&str> = events.iter().filter_map(|e| e["key"].as_str()).collect();
        assert_eq!(keys.len(), 57);
    }

    #[tokio::test]
    async fn run_stops_after_duration() {
        let (url, seen) = fake_hub(|_, body| (202, "", accepted(body))).await;
        let args = SimulateArgs {
            url,
            ingest_key: "k3y".into(),
            scopes: vec!["demo".into()],
            rate: 20.0,
            count: None,
            duration: Some(1),
            users: 5,
            chats: 2,
            seed: None,
            run_id: Some("dur".into()),
            max_batch: 500,
        };
        let started = std::time::Instant::now();
        run(args).await.expect("run");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let n: usize = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.body.as_array().map_or(0, Vec::len))
            .sum();
        assert!((12..=30).contains(&n), "{n} events in 1 s at 20/s");
    }

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

    #[tokio::test]
    async fn run_refuses_a_bad_rate() {
        let args = SimulateArgs {
            url: "http://127.0.0.1:9".into(),
            ingest_key: "k".into(),
            scopes: vec!["demo".into()],
            rate: 0.0,
            count: Some(1),
            duration: None,
            users: 5,
            chats: 2,
            seed: None,
            run_id: None,
            max_batch: 10,
        };
        assert!(run(args).await.is_err());
    }
}
