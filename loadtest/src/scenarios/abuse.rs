//! `abuse`: hostile clients against a hub that well-behaved clients use at
//! the same time. Shows, with figures, that the hostile ones make the hub
//! lose nothing for the others and that its memory stays bounded and is
//! given back.
//!
//! W well-behaved subscribers read every frame of `feed:{scope}` (the
//! [`Swarm`] of `fanout`) while a publisher ingests E events/s for the
//! attack's duration, and four hostile groups attack at the same time:
//!
//! - **slowloris**: raw TCP connections that send a partial request head to
//!   `/ws`, then one more header byte every 100 ms, never finishing it. The
//!   hub answers 408 and closes them after `PULSEHUB_REQUEST_TIMEOUT_SECS`.
//!   A closed one is opened again until the attack ends; those open then
//!   keep trickling until the hub closes them too.
//! - **over-limit**: one user opening many connections with the same token.
//!   The hub admits `PULSEHUB_MAX_CONNECTIONS_PER_USER` (in the cluster
//!   with Redis, else per replica) and
//!   refuses the rest with 429 `limit_reached`. Refused clients try again
//!   every second; admitted ones are held (answering pings).
//! - **never-reading**: subscribers of the same feed with a tiny receive
//!   buffer (`SO_RCVBUF`) that never read. After the attack each reads what
//!   it was sent, to learn how the hub cut it off (a close frame; the stream
//!   ended: the hub shut the socket down; a reset: its TCP user timeout
//!   dropped it) or that it still serves it (it answers a `ping`).
//! - **floods**: clients sending malformed JSON, frames just over 64 KiB and
//!   pings as fast as they can, counting the `error` frames by code and how
//!   the hub ended them (1008 for repeated abuse); they connect again.
//!
//! The hub's `VmRSS` (`--hub-pid`) is read before the attack, every second
//! during it, and after the hostile clients left and it settled (the
//! well-behaved subscribers still connected, as before); its own counters
//! (`/metrics`: slow consumers, refused connections, dropped frames) before
//! and after.
//!
//! Asserts (`--check`): every well-behaved subscriber connected and got
//! every event the hub acknowledged, once and in order; every event was
//! ingested; every slowloris connection was closed by the hub (one still
//! open twice the request timeout plus 5 s after it was opened never was).
//! The other groups' counts (admitted and refused, cut off or still served,
//! errors and closes by code) and the memory figures are reported, not
//! checked: the tests check them for what is behaviour.

use crate::client::{scan_event, tcp_connect};
use crate::measure::{self, mb, rss_bytes, rss_total, Latency, SharedHistogram};
use crate::publisher::{self, Plan, Published};
use crate::raw::{encode_frame, RawWs, Upgrade, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::run_info::RunInfo;
use crate::swarm::{tally, Delivery, Swarm, SwarmSpec, Tracker};
use crate::target::{run_id, Target};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct AbuseOpts {
    /// Well-behaved subscribers.
    pub subscribers: usize,
    /// Slowloris connections kept open at once.
    pub slowloris: usize,
    /// Connections one user tries to hold.
    pub over_limit: usize,
    /// Subscribers that never read.
    pub never_reading: usize,
    /// Flooding clients.
    pub flooders: usize,
    /// Events per second while the attack lasts.
    pub rate: f64,
    /// How long the attack (and the publishing) lasts.
    pub duration: Duration,
    pub tick: Duration,
    pub inflight: usize,
    pub connect_concurrency: usize,
    /// The hub's `PULSEHUB_REQUEST_TIMEOUT_SECS`: a slowloris connection
    /// still open twice this plus 5 s after it was opened was never closed.
    pub request_timeout: Duration,
    /// A slowloris connection sends one more byte this often.
    pub trickle: Duration,
    /// `SO_RCVBUF` of the never-reading subscribers.
    pub recv_buffer: u32,
    /// After the attack, how long to wait for well-behaved stragglers.
    pub drain: Duration,
    /// After the hostile clients left, how long at most to wait for the
    /// hub's memory to settle (two 1-second samples within 1 %).
    pub settle: Duration,
    /// Hub processes whose memory is read (added up).
    pub hub_pids: Vec<u32>,
    pub progress: bool,
}

impl Default for AbuseOpts {
    fn default() -> Self {
        AbuseOpts {
            subscribers: 200,
            slowloris: 500,
            over_limit: 100,
            never_reading: 50,
            flooders: 50,
            rate: 200.0,
            duration: Duration::from_secs(30),
            tick: Duration::from_millis(10),
            inflight: 8,
            connect_concurrency: 200,
            request_timeout: Duration::from_secs(10),
            trickle: Duration::from_millis(100),
            recv_buffer: 4096,
            drain: Duration::from_secs(10),
            settle: Duration::from_secs(15),
            hub_pids: Vec::new(),
            progress: false,
        }
    }
}

/// The hub's counters read before and after the attack (`/metrics`).
const COUNTERS: [&str; 3] = [
    "pulsehub_slow_consumers_total",
    "pulsehub_connections_refused_total",
    "pulsehub_frames_dropped_total",
];

/// An oversized frame's payload: just over the hub's 64 KiB frame limit,
/// well under its 1 MiB hard cap (so it gets `too_large`, not a close).
const OVERSIZED_BYTES: usize = 64 * 1024 + 64;

/// How long a never-reading subscriber reads after the attack at most.
const READ_BACK: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowlorisReport {
    /// Connections trickling at once.
    pub connections: usize,
    /// Connections opened in all (closed ones are opened again).
    pub opened: u64,
    pub connect_failed: u64,
    /// Closed by the hub (end of stream or reset).
    pub closed_by_hub: u64,
    /// … after answering `HTTP/1.1 408`.
    pub answered_408: u64,
    /// … after answering something else (the first one: `other_answer`).
    pub answered_other: u64,
    /// … without answering anything.
    pub answered_nothing: u64,
    pub other_answer: Option<String>,
    /// Still open `give_up_s` after they were opened: never closed by the hub.
    pub never_closed: u64,
    pub give_up_s: f64,
    /// Opened → closed by the hub.
    pub closed_after: Latency,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OverLimitReport {
    /// Clients of the one user; refused ones try again every second.
    pub clients: usize,
    pub attempts: u64,
    pub admitted: u64,
    /// Most admitted connections open at once.
    pub max_open: u64,
    pub refused_by_status: BTreeMap<u16, u64>,
    /// `error.code` in the refusals' JSON bodies (`-` when there was none).
    pub refused_by_code: BTreeMap<String, u64>,
    /// Handshakes that got no HTTP answer (transport errors, timeouts).
    pub failed: u64,
    /// Admitted connections that the hub ended during the attack.
    pub dropped: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NeverReadingReport {
    pub clients: usize,
    /// `SO_RCVBUF` asked for.
    pub recv_buffer: u32,
    pub subscribed: u64,
    pub failed: u64,
    /// Read after the attack: a close frame, by code.
    pub closed_by_code: BTreeMap<u16, u64>,
    /// The stream ended without a close frame (the hub shut it down).
    pub ended: u64,
    /// The connection was reset (e.g. the hub's TCP user timeout dropped it).
    pub reset: u64,
    /// Answered a `ping` after the attack: never cut off.
    pub still_served: u64,
    /// Neither ended nor answering within 20 s of reading.
    pub no_answer: u64,
    /// Events read after the attack, all of them together.
    pub events_read: u64,
    /// Clients whose events were not a gapless, ordered, duplicate-free run
    /// from offset 1 (what a cut-off client got must be a prefix).
    pub not_a_prefix: u64,
    pub first_error: Option<String>,
}

impl NeverReadingReport {
    /// Cut off by the hub, however.
    pub fn cut_off(&self) -> u64 {
        self.closed_by_code.values().sum::<u64>() + self.ended + self.reset
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodReport {
    pub clients: usize,
    /// Sessions opened in all (an ended flooder connects again).
    pub connections: u64,
    pub connect_failed: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub pongs: u64,
    /// How the hub ended flooding connections: close frames, by code.
    pub closed_by_code: BTreeMap<u16, u64>,
    /// Ended without a close frame (end of stream or reset).
    pub dropped: u64,
    /// Still open when the attack ended.
    pub open_at_end: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    #[serde(flatten)]
    pub info: RunInfo,
    pub subscribers: usize,
    pub subscribed: usize,
    pub connect_failed: usize,
    pub rate_target: f64,
    pub duration_s: f64,
    /// Publishing started → the last hostile client gone.
    pub attack_s: f64,
    pub publish: Published,
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Fewest and most events one well-behaved subscriber got.
    pub received_min: u64,
    pub received_max: u64,
    /// Ingest (send time) → delivery, every well-behaved delivery.
    pub latency: Latency,
    /// Per event: ingest → delivery to its last well-behaved receiver.
    pub last_receiver: Latency,
    pub slowloris: SlowlorisReport,
    pub over_limit: OverLimitReport,
    pub never_reading: NeverReadingReport,
    pub floods: FloodReport,
    pub hub_pids: Vec<u32>,
    pub hub_rss_before_mb: Option<f64>,
    /// Highest of the samples taken every second during the attack.
    pub hub_rss_peak_mb: Option<f64>,
    pub hub_rss_after_mb: Option<f64>,
    pub hub_rss_samples_mb: Vec<f64>,
    /// Share of the growth (peak − before) given back (peak − after);
    /// `None` when it grew by less than 1 MiB.
    pub returned_pct: Option<f64>,
    /// Change of the hub's counters over the run (`None`: no `/metrics`).
    pub hub_counters: Option<BTreeMap<String, f64>>,
    pub first_error: Option<String>,
}

/// Waits until the attack ends (or whoever could end it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Sleeps for `d`, or less if the attack ends.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopped(stop) => {}
    }
}

fn note(first: &mut Option<String>, e: impl std::fmt::Display) {
    first.get_or_insert_with(|| e.to_string());
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for a group's tasks; the first that panicked, as an error.
async fn join_all(tasks: &mut JoinSet<()>) -> Option<String> {
    let mut first = None;
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            note(&mut first, format!("a client task failed: {e}"));
        }
    }
    first
}

// ---- slowloris -------------------------------------------------------------

struct Loris {
    report: Mutex<SlowlorisReport>,
    closed_after: SharedHistogram,
}

async fn slowloris(
    target: Arc<Target>,
    opts: AbuseOpts,
    token: String,
    stop: watch::Receiver<bool>,
) -> SlowlorisReport {
    let give_up = opts.request_timeout * 2 + Duration::from_secs(5);
    let shared = Arc::new(Loris {
        report: Mutex::new(SlowlorisReport {
            connections: opts.slowloris,
            give_up_s: give_up.as_secs_f64(),
            ..Default::default()
        }),
        closed_after: SharedHistogram::default(),
    });
    let mut tasks = JoinSet::new();
    for i in 0..opts.slowloris {
        // The first connections spread over a second, so their timeouts
        // (and the reopenings) spread too.
        let delay = Duration::from_secs_f64(i as f64 / opts.slowloris as f64);
        tasks.spawn(loris(
            target.clone(),
            i,
            token.clone(),
            delay,
            opts.trickle,
            give_up,
            shared.clone(),
            stop.clone(),
        ));
    }
    let panicked = join_all(&mut tasks).await;
    let mut report = locked(&shared.report).clone();
    report.closed_after = shared.closed_after.summary();
    if let Some(e) = panicked {
        note(&mut report.first_error, e);
    }
    report
}

/// One slowloris connection after another until the attack ends.
#[allow(clippy::too_many_arguments)]
async fn loris(
    target: Arc<Target>,
    i: usize,
    token: String,
    delay: Duration,
    every: Duration,
    give_up: Duration,
    shared: Arc<Loris>,
    mut stop: watch::Receiver<bool>,
) {
    pause(delay, &mut stop).await;
    let hub = target.hub(i);
    let head = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        hub.authority
    );
    while !is_stopped(&stop) {
        let opened_at = Instant::now();
        let mut s = match tcp_connect(hub.addr, target.source(i), None).await {
            Ok(s) => s,
            Err(e) => {
                {
                    let mut r = locked(&shared.report);
                    r.connect_failed += 1;
                    note(&mut r.first_error, format!("{e:#}"));
                }
                pause(Duration::from_millis(100), &mut stop).await;
                continue;
            }
        };
        locked(&shared.report).opened += 1;
        let outcome = match s.write_all(head.as_bytes()).await {
            Ok(()) => trickle(&mut s, every, opened_at + give_up).await,
            Err(_) => Some(Vec::new()),
        };
        let mut r = locked(&shared.report);
        match outcome {
            None => r.never_closed += 1,
            Some(answer) => {
                shared
                    .closed_after
                    .record_all(&[opened_at.elapsed().as_micros() as u64]);
                r.closed_by_hub += 1;
                if answer.starts_with(b"HTTP/1.1 408") {
                    r.answered_408 += 1;
                } else if answer.is_empty() {
                    r.answered_nothing += 1;
                } else {
                    r.answered_other += 1;
                    let line = String::from_utf8_lossy(&answer);
                    let line = line.lines().next().unwrap_or_default().to_string();
                    r.other_answer.get_or_insert(line);
                }
            }
        }
    }
}

/// Sends one byte every `every` until the server closes the connection:
/// what it answered, or `None` when it was still open at `deadline`.
async fn trickle(s: &mut TcpStream, every: Duration, deadline: Instant) -> Option<Vec<u8>> {
    let mut answer = Vec::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let give_up = tokio::time::sleep_until(deadline.into());
    tokio::pin!(give_up);
    let mut writing = true;
    loop {
        tokio::select! {
            r = s.read_buf(&mut answer) => match r {
                Ok(0) | Err(_) => return Some(answer),
                // The answer (408); the close follows.
                Ok(_) => answer.truncate(4096),
            },
            _ = ticker.tick(), if writing => {
                // A failed write means the server is gone; reading says so.
                writing = s.write_all(b"x").await.is_ok();
            }
            _ = &mut give_up => return None,
        }
    }
}

// ---- over-limit ------------------------------------------------------------

struct Greedy {
    report: Mutex<OverLimitReport>,
    open: AtomicU64,
    /// Handshakes under way: when the attack ends, admitted connections
    /// are held until these are answered, so no attempt takes a slot that
    /// a leaving connection just gave back.
    attempting: AtomicU64,
}

async fn over_limit(
    target: Arc<Target>,
    opts: AbuseOpts,
    token: String,
    stop: watch::Receiver<bool>,
) -> OverLimitReport {
    let shared = Arc::new(Greedy {
        report: Mutex::new(OverLimitReport {
            clients: opts.over_limit,
            ..Default::default()
        }),
        open: AtomicU64::new(0),
        attempting: AtomicU64::new(0),
    });
    let mut tasks = JoinSet::new();
    for i in 0..opts.over_limit {
        tasks.spawn(greedy(
            target.clone(),
            i,
            token.clone(),
            shared.clone(),
            stop.clone(),
        ));
    }
    let panicked = join_all(&mut tasks).await;
    let mut report = locked(&shared.report).clone();
    if let Some(e) = panicked {
        note(&mut report.first_error, e);
    }
    report
}

/// One more connection of the greedy user, tried again every second while
/// refused, held while admitted.
async fn greedy(
    target: Arc<Target>,
    i: usize,
    token: String,
    shared: Arc<Greedy>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Counted as under way before looking at the stop (see `hold`).
        shared.attempting.fetch_add(1, Ordering::SeqCst);
        if is_stopped(&stop) {
            shared.attempting.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        locked(&shared.report).attempts += 1;
        let attempt = RawWs::connect(&target, target.hub(i), target.source(i), &token, None).await;
        shared.attempting.fetch_sub(1, Ordering::SeqCst);
        match attempt {
            Ok(Upgrade::Open(ws)) => {
                let open = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut r = locked(&shared.report);
                    r.admitted += 1;
                    r.max_open = r.max_open.max(open);
                }
                let ended_by_hub = hold(ws, &shared.attempting, &mut stop).await;
                shared.open.fetch_sub(1, Ordering::Relaxed);
                if !ended_by_hub {
                    return;
                }
                locked(&shared.report).dropped += 1;
            }
            Ok(Upgrade::Refused { status, body }) => {
                let code = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "-".into());
                let mut r = locked(&shared.report);
                *r.refused_by_status.entry(status).or_default() += 1;
                *r.refused_by_code.entry(code).or_default() += 1;
            }
            Err(e) => {
                let mut r = locked(&shared.report);
                r.failed += 1;
                note(&mut r.first_error, format!("{e:#}"));
            }
        }
        pause(Duration::from_secs(1), &mut stop).await;
    }
}

/// Holds an admitted connection (answering pings) until the attack ends
/// and no handshake of the user is under way any more (`false`: then closes
/// it), or the hub ends it (`true`).
async fn hold(ws: RawWs, attempting: &AtomicU64, stop: &mut watch::Receiver<bool>) -> bool {
    let RawWs {
        mut reader,
        mut writer,
    } = ws;
    loop {
        tokio::select! {
            f = reader.frame() => match f {
                Ok(Some(f)) if f.opcode == OP_PING => {
                    let _ = writer.send(OP_PONG, &f.payload).await;
                }
                Ok(Some(f)) if f.opcode == OP_CLOSE => return true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return true,
            },
            _ = stopped(stop) => {
                // Attempts stop once the attack ends; the last ones are
                // refused while this connection still holds its slot.
                let deadline = Instant::now() + Duration::from_secs(15);
                while attempting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = writer.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
                return false;
            }
        }
    }
}

// ---- never-reading subscribers ---------------------------------------------

async fn never_reading(
    target: Arc<Target>,
    opts: AbuseOpts,
    tokens: Vec<String>,
    channel: String,
    stop: watch::Receiver<bool>,
) -> NeverReadingReport {
    let shared = Arc::new(Mutex::new(NeverReadingReport {
        clients: opts.never_reading,
        recv_buffer: opts.recv_buffer,
        ..Default::default()
    }));
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        tasks.spawn(never_reader(
            target.clone(),
            i,
            token,
            channel.clone(),
            opts.recv_buffer,
            shared.clone(),
            stop.clone(),
        ));
    }
    let panicked = join_all(&mut tasks).await;
    let mut report = locked(&shared).clone();
    if let Some(e) = panicked {
        note(&mut report.first_error, e);
    }
    report
}

/// How a never-reading subscriber found its connection after the attack.
enum Found {
    Closed(u16),
    Ended,
    Reset,
    Served,
    NoAnswer,
}

/// Subscribes, never reads until the attack ends, then reads it all.
async fn never_reader(
    target: Arc<Target>,
    i: usize,
    token: String,
    channel: String,
    recv_buffer: u32,
    shared: Arc<Mutex<NeverReadingReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let failed = |e: String| {
        let mut r = locked(&shared);
        r.failed += 1;
        note(&mut r.first_error, e);
    };
    let hub = target.hub(i);
    let ws = match RawWs::connect(&target, hub, target.source(i), &token, Some(recv_buffer)).await {
        Ok(Upgrade::Open(ws)) => ws,
        Ok(Upgrade::Refused { status, body }) => {
            return failed(format!("refused {status}: {body}"))
        }
        Err(e) => return failed(format!("{e:#}")),
    };
    let RawWs {
        mut reader,
        mut writer,
    } = ws;
    // `since: 0`: everything from offset 1, even if publishing started first.
    let subscribe =
        serde_json::json!({"type": "subscribe", "ref": 1, "channel": channel, "since": 0});
    if let Err(e) = writer.text(&subscribe.to_string()).await {
        return failed(format!("subscribing: {e}"));
    }
    let mut tracker = Tracker::default();
    let mut events = 0u64;
    // Read up to `subscribed`: the last read until the attack ends.
    let subscribed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match reader.frame().await {
                Ok(Some(f)) => {
                    let Some(t) = f.text() else { continue };
                    if t.starts_with(r#"{"type":"subscribed""#) {
                        return Ok(());
                    }
                    if let Some(ev) = scan_event(t) {
                        tracker.offer(ev.offset);
                        events += 1;
                    } else if t.starts_with(r#"{"type":"error""#) {
                        return Err(format!("subscribe refused: {t}"));
                    }
                }
                Ok(None) => return Err("closed while subscribing".to_string()),
                Err(e) => return Err(format!("subscribing: {e}")),
            }
        }
    })
    .await;
    match subscribed {
        Ok(Ok(())) => locked(&shared).subscribed += 1,
        Ok(Err(e)) => return failed(e),
        Err(_) => return failed("no reply to subscribe within 30 s".into()),
    }
    stopped(&mut stop).await;
    // Now read what was on its way, then how it ended (or a pong).
    let _ = writer.text(r#"{"type":"ping","ref":2}"#).await;
    let found = tokio::time::timeout(READ_BACK, async {
        loop {
            match reader.frame().await {
                Ok(Some(f)) => {
                    if let Some(code) = f.close_code() {
                        return Found::Closed(code);
                    }
                    let Some(t) = f.text() else { continue };
                    if let Some(ev) = scan_event(t) {
                        tracker.offer(ev.offset);
                        events += 1;
                    } else if t.starts_with(r#"{"type":"pong""#) {
                        return Found::Served;
                    }
                }
                Ok(None) => return Found::Ended,
                Err(_) => return Found::Reset,
            }
        }
    })
    .await
    .unwrap_or(Found::NoAnswer);
    let mut r = locked(&shared);
    match found {
        Found::Closed(code) => *r.closed_by_code.entry(code).or_default() += 1,
        Found::Ended => r.ended += 1,
        Found::Reset => r.reset += 1,
        Found::Served => r.still_served += 1,
        Found::NoAnswer => r.no_answer += 1,
    }
    r.events_read += events;
    if tracker.duplicated > 0 || tracker.out_of_order > 0 || tracker.contiguous != tracker.max_seen
    {
        r.not_a_prefix += 1;
    }
}

// ---- floods ----------------------------------------------------------------

struct Flood {
    report: Mutex<FloodReport>,
    frames: AtomicU64,
    bytes: AtomicU64,
}

async fn floods(
    target: Arc<Target>,
    opts: AbuseOpts,
    tokens: Vec<String>,
    stop: watch::Receiver<bool>,
) -> FloodReport {
    let shared = Arc::new(Flood {
        report: Mutex::new(FloodReport {
            clients: opts.flooders,
            ..Default::default()
        }),
        frames: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    // {"type":"ping","pad":"xxx…"}: valid JSON, over the frame limit.
    let pad = "x".repeat(OVERSIZED_BYTES - r#"{"type":"ping","pad":""}"#.len());
    let oversized = format!(r#"{{"type":"ping","pad":"{pad}"}}"#);
    let oversized = Arc::new(encode_frame(OP_TEXT, oversized.as_bytes()));
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        tasks.spawn(flooder(
            target.clone(),
            i,
            token,
            oversized.clone(),
            shared.clone(),
            stop.clone(),
        ));
    }
    let panicked = join_all(&mut tasks).await;
    let mut report = locked(&shared.report).clone();
    report.frames_sent = shared.frames.load(Ordering::Relaxed);
    report.bytes_sent = shared.bytes.load(Ordering::Relaxed);
    if let Some(e) = panicked {
        note(&mut report.first_error, e);
    }
    report
}

/// Connects and floods, again and again, until the attack ends.
async fn flooder(
    target: Arc<Target>,
    i: usize,
    token: String,
    oversized: Arc<Vec<u8>>,
    shared: Arc<Flood>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hub_ix = i;
    while !is_stopped(&stop) {
        let hub = target.hub(hub_ix);
        hub_ix += 1;
        match RawWs::connect(&target, hub, target.source(i), &token, None).await {
            Ok(Upgrade::Open(ws)) => {
                locked(&shared.report).connections += 1;
                flood(ws, oversized.clone(), &shared, &mut stop).await;
            }
            Ok(Upgrade::Refused { status, body }) => {
                let mut r = locked(&shared.report);
                r.connect_failed += 1;
                note(&mut r.first_error, format!("refused {status}: {body}"));
            }
            Err(e) => {
                let mut r = locked(&shared.report);
                r.connect_failed += 1;
                note(&mut r.first_error, format!("{e:#}"));
            }
        }
        pause(Duration::from_millis(100), &mut stop).await;
    }
}

/// One flooding session: a writer sends malformed JSON, an oversized frame
/// and a ping in turn as fast as the socket takes them; the reader counts
/// the replies until the hub ends the connection or the attack ends.
async fn flood(
    ws: RawWs,
    oversized: Arc<Vec<u8>>,
    shared: &Arc<Flood>,
    stop: &mut watch::Receiver<bool>,
) {
    let RawWs {
        mut reader,
        mut writer,
    } = ws;
    let counts = shared.clone();
    let writing = tokio::spawn(async move {
        for n in 0u64.. {
            let sent = match n % 3 {
                0 => {
                    let text = format!(r#"{{"type":"ping","ref":{n}"#);
                    writer.text(&text).await.map(|()| text.len())
                }
                1 => writer.framed(&oversized).await.map(|()| oversized.len()),
                _ => {
                    let text = format!(r#"{{"type":"ping","ref":{n}}}"#);
                    writer.text(&text).await.map(|()| text.len())
                }
            };
            let Ok(bytes) = sent else { break };
            counts.frames.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    });
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut pongs = 0u64;
    let ending = loop {
        tokio::select! {
            f = reader.frame() => match f {
                Ok(Some(f)) => {
                    if let Some(code) = f.close_code() {
                        break Some(code);
                    }
                    let Some(t) = f.text() else { continue };
                    if t.starts_with(r#"{"type":"pong""#) {
                        pongs += 1;
                    } else if t.starts_with(r#"{"type":"error""#) {
                        let code = serde_json::from_str::<Value>(t)
                            .ok()
                            .and_then(|v| v["code"].as_str().map(str::to_string))
                            .unwrap_or_else(|| "-".into());
                        *errors.entry(code).or_default() += 1;
                    }
                }
                Ok(None) | Err(_) => break None,
            },
            _ = stopped(stop) => {
                writing.abort();
                let mut r = locked(&shared.report);
                r.open_at_end += 1;
                merge(&mut r, errors, pongs);
                return;
            }
        }
    };
    writing.abort();
    let mut r = locked(&shared.report);
    match ending {
        Some(code) => *r.closed_by_code.entry(code).or_default() += 1,
        None => r.dropped += 1,
    }
    merge(&mut r, errors, pongs);
}

fn merge(r: &mut FloodReport, errors: BTreeMap<String, u64>, pongs: u64) {
    for (code, n) in errors {
        *r.errors_by_code.entry(code).or_default() += n;
    }
    r.pongs += pongs;
}

// ---- memory ----------------------------------------------------------------

/// The hubs' memory every second until told to stop.
async fn sample_rss(pids: Vec<u32>, mut stop: watch::Receiver<bool>) -> Vec<u64> {
    let mut samples = Vec::new();
    if pids.is_empty() {
        return samples;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(rss) = rss_total(&pids) {
                    samples.push(rss);
                }
            }
            _ = stopped(&mut stop) => return samples,
        }
    }
}

/// The hubs' memory once two successive 1-second samples are within 1 %
/// of each other (or after `max`).
async fn settled_rss(pids: &[u32], max: Duration) -> Option<u64> {
    let deadline = Instant::now() + max;
    let mut last = rss_total(pids)?;
    let mut steady = 0;
    while steady < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_total(pids)?;
        steady = if now.abs_diff(last) <= last / 100 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    Some(last)
}

// ---- the scenario ----------------------------------------------------------

/// Runs the scenario; `Err` only when it cannot run at all.
pub async fn run(target: Arc<Target>, opts: &AbuseOpts) -> anyhow::Result<AbuseReport> {
    let mut info = RunInfo::start("abuse", &target);
    for pid in &opts.hub_pids {
        if rss_bytes(*pid).is_none() {
            anyhow::bail!("cannot read /proc/{pid}/status: is the hub's pid right?");
        }
    }
    let id = run_id();
    let scope = format!("lt-{id}-0");
    let channel = format!("feed:{scope}");
    let total = publisher::events_for(opts.rate, opts.duration);

    let (swarm, subscribed) = Swarm::subscribe(
        target.clone(),
        SwarmSpec {
            connections: opts.subscribers,
            scopes: vec![scope.clone()],
            connect_concurrency: opts.connect_concurrency,
            reconnect: false,
            events_per_scope: total as usize + 1,
            user_prefix: format!("lt-{id}-u"),
        },
        opts.progress,
    )
    .await;
    let rss_before = rss_total(&opts.hub_pids);
    let counters_before = measure::hub_counters(&target, &COUNTERS).await;

    // The attack: every hostile group and the publisher at once.
    let ttl = Duration::from_secs(6 * 3600);
    let token = |user: String| target.token(&user, &[scope.as_str()], ttl);
    let tokens = |kind: &str, n: usize| -> anyhow::Result<Vec<String>> {
        (0..n)
            .map(|i| token(format!("lt-{id}-{kind}{i}")))
            .collect()
    };
    let (stop, stop_rx) = watch::channel(false);
    let (end_sampling, sampling_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(opts.hub_pids.clone(), sampling_rx));
    let started = Instant::now();
    let slowloris = tokio::spawn(slowloris(
        target.clone(),
        opts.clone(),
        token(format!("lt-{id}-loris"))?,
        stop_rx.clone(),
    ));
    let over_limit = tokio::spawn(over_limit(
        target.clone(),
        opts.clone(),
        token(format!("lt-{id}-greedy"))?,
        stop_rx.clone(),
    ));
    let never_reading = tokio::spawn(never_reading(
        target.clone(),
        opts.clone(),
        tokens("stalled", opts.never_reading)?,
        channel,
        stop_rx.clone(),
    ));
    let floods = tokio::spawn(floods(
        target.clone(),
        opts.clone(),
        tokens("flood", opts.flooders)?,
        stop_rx,
    ));
    let plan = Plan {
        scopes: vec![scope],
        rate: opts.rate,
        total,
        tick: opts.tick,
        inflight: opts.inflight,
        keys: None,
        retry_for: Duration::ZERO,
        via: crate::publisher::Via::Http,
    };
    let bar = measure::progress(opts.progress, total * subscribed as u64, "under attack");
    let publisher = tokio::spawn(publisher::run(target.clone(), plan));
    let publish = swarm.deliver_until(publisher, &bar).await?;
    tokio::time::sleep_until((started + opts.duration).into()).await;
    let _ = stop.send(true);
    let slowloris = slowloris.await?;
    let over_limit = over_limit.await?;
    let never_reading = never_reading.await?;
    let floods = floods.await?;
    let attack_s = started.elapsed().as_secs_f64();
    let _ = end_sampling.send(true);
    let samples = sampler.await?;

    // The well-behaved stragglers, then the memory once it settled.
    swarm
        .drain(&publish.stored_per_scope, opts.drain, &bar)
        .await;
    let rss_after = settled_rss(&opts.hub_pids, opts.settle).await;
    let counters_after = measure::hub_counters(&target, &COUNTERS).await;
    let first_error = swarm.first_error().or(publish.first_error.clone());
    let state = swarm.state.clone();
    let results = swarm.stop().await;
    let delivery = tally(&results, &publish.stored_per_scope);
    let received = results.iter().filter(|r| r.subscribed).map(|r| r.unique);
    let (received_min, received_max) = (
        received.clone().min().unwrap_or(0),
        received.max().unwrap_or(0),
    );
    let last_receiver = state.last_receiver_latency(&publish.stored_per_scope);

    let rss_peak = samples.iter().copied().max();
    let returned_pct = match (rss_before, rss_peak, rss_after) {
        // Less than 1 MiB of growth: nothing worth a percentage.
        (Some(b), Some(p), Some(a)) if p > b + (1 << 20) => {
            Some(((p as f64 - a as f64) / (p - b) as f64 * 1000.0).round() / 10.0)
        }
        _ => None,
    };
    let hub_counters = match (counters_before, counters_after) {
        (Some(b), Some(a)) => Some(
            a.into_iter()
                .map(|(name, v)| {
                    let short = name
                        .trim_start_matches("pulsehub_")
                        .trim_end_matches("_total")
                        .to_string();
                    (short, v - b.get(&name).copied().unwrap_or(0.0))
                })
                .collect(),
        ),
        _ => None,
    };
    info.finish();
    Ok(AbuseReport {
        info,
        subscribers: opts.subscribers,
        subscribed,
        connect_failed: opts.subscribers - subscribed,
        rate_target: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        attack_s: (attack_s * 10.0).round() / 10.0,
        publish,
        delivery,
        received_min,
        received_max,
        latency: state.latency.summary(),
        last_receiver,
        slowloris,
        over_limit,
        never_reading,
        floods,
        hub_pids: opts.hub_pids.clone(),
        hub_rss_before_mb: mb(rss_before),
        hub_rss_peak_mb: mb(rss_peak),
        hub_rss_after_mb: mb(rss_after),
        hub_rss_samples_mb: samples.iter().filter_map(|s| mb(Some(*s))).collect(),
        returned_pct,
        hub_counters,
        first_error,
    })
}

/// `{a: 1, b: 2}` for tables.
fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

impl AbuseReport {
    pub fn table(&self) -> String {
        let (sl, ol, nr, fl) = (
            &self.slowloris,
            &self.over_limit,
            &self.never_reading,
            &self.floods,
        );
        let opt = |v: Option<f64>, unit: &str| {
            v.map_or("n/a (no --hub-pid)".into(), |v| format!("{v} {unit}"))
        };
        let mut t = self.info.header();
        t += &format!(
            "subscribers        {} of {} well-behaved subscribed to one feed ({} failed); attack {:.1}s (until the last hostile client was gone)\n",
            self.subscribed, self.subscribers, self.connect_failed, self.attack_s
        );
        t += &self.publish.lines(self.rate_target);
        t += &self.delivery.line();
        t += &format!(
            "per subscriber     {}–{} events\n",
            self.received_min, self.received_max
        );
        t += &format!("latency (all)      {}\n", self.latency.line());
        t += &format!("latency (last rx)  {}\n", self.last_receiver.line());
        t += &format!(
            "slowloris          {} at a time: {} opened ({} failed); closed by the hub {} ({} with 408, {} other, {} without an answer); never closed {} (limit {:.0}s)\n",
            sl.connections,
            sl.opened,
            sl.connect_failed,
            sl.closed_by_hub,
            sl.answered_408,
            sl.answered_other,
            sl.answered_nothing,
            sl.never_closed,
            sl.give_up_s
        );
        t += &format!("slowloris closed   after {}\n", sl.closed_after.line());
        t += &format!(
            "over-limit         {} clients of one user: {} attempts, {} admitted (at most {} open at once), refused {} codes {}, {} failed, {} dropped by the hub\n",
            ol.clients,
            ol.attempts,
            ol.admitted,
            ol.max_open,
            counts(&ol.refused_by_status),
            counts(&ol.refused_by_code),
            ol.failed,
            ol.dropped
        );
        t += &format!(
            "never-reading      {} of {} subscribed (SO_RCVBUF {}): cut off {} (close frames {}, stream ended {}, reset {}), still served {}, no answer {}; {} events read afterwards, {} not a gapless prefix\n",
            nr.subscribed,
            nr.clients,
            nr.recv_buffer,
            nr.cut_off(),
            counts(&nr.closed_by_code),
            nr.ended,
            nr.reset,
            nr.still_served,
            nr.no_answer,
            nr.events_read,
            nr.not_a_prefix
        );
        t += &format!(
            "floods             {} clients: {} sessions ({} failed to connect), {} frames / {:.1} MB sent; errors {}, {} pongs; closed {}, dropped without a close frame {}, open at the end {}\n",
            fl.clients,
            fl.connections,
            fl.connect_failed,
            fl.frames_sent,
            fl.bytes_sent as f64 / 1048576.0,
            counts(&fl.errors_by_code),
            fl.pongs,
            counts(&fl.closed_by_code),
            fl.dropped,
            fl.open_at_end
        );
        t += &format!(
            "hub RSS            before {}, peak {} (every second during the attack), after {}\n",
            opt(self.hub_rss_before_mb, "MB"),
            opt(self.hub_rss_peak_mb, "MB"),
            opt(self.hub_rss_after_mb, "MB")
        );
        if !self.hub_pids.is_empty() {
            t += &match self.returned_pct {
                Some(pct) => format!("returned           {pct} % of the growth\n"),
                None => "returned           (it grew by less than 1 MB)\n".to_string(),
            };
        }
        if let Some(c) = &self.hub_counters {
            let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} +{v}")).collect();
            t += &format!("hub counters       {}\n", parts.join(", "));
        }
        let errors = [
            ("first error        ", &self.first_error),
            ("slowloris error    ", &sl.first_error),
            ("over-limit error   ", &ol.first_error),
            ("never-reading error", &nr.first_error),
            ("flood error        ", &fl.first_error),
        ];
        for (what, e) in errors {
            if let Some(e) = e {
                t += &format!("{what} {e}\n");
            }
        }
        t
    }

    /// What `--check` fails on.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.connect_failed > 0 {
            p.push(format!(
                "{} well-behaved subscribers failed to connect",
                self.connect_failed
            ));
        }
        p.extend(self.publish.problems());
        p.extend(self.delivery.problems());
        if self.slowloris.never_closed > 0 {
            p.push(format!(
                "{} slowloris connections never closed by the hub",
                self.slowloris.never_closed
            ));
        }
        if self.slowloris.connections > 0 && self.slowloris.opened == 0 {
            p.push("no slowloris connection could be opened".into());
        }
        p
    }
}
