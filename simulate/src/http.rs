//! [`HttpSink`]: posts batches to the hub's `POST {url}/api/events`.
//!
//! - Each batch is a JSON array sent with `Authorization: Bearer
//!   {ingest_key}`, serialized once: a retry sends the same bytes.
//! - Plain `http://` only (this build has no TLS); redirects are not
//!   followed. Connect timeout 5 s, request timeout 30 s.
//! - Retried, with exponential backoff and jitter (~0.2 s doubling up to
//!   10 s) or after `Retry-After` when given (seconds or an HTTP date,
//!   capped at 60 s): connection errors, timeouts, 429 and 5xx (503
//!   included). Any other non-2xx answer (400, 401, 403, 413, …) ends the
//!   run with an error that includes the hub's JSON error body (truncated
//!   at 8 KiB) and a hint at the flag to check.
//! - The 202 body `{"accepted","duplicates"}` feeds the [`Totals`]; an
//!   unexpected one is logged and the whole batch counted as accepted.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::event::Event;
use crate::sink::{Delivery, Sink, Totals};
use crate::stop::Stop;

const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_ERROR_BODY: usize = 8 * 1024;

/// Posts batches to one hub.
pub struct HttpSink {
    client: reqwest::Client,
    endpoint: String,
    ingest_key: String,
}

/// The hub's 202 body.
#[derive(Debug, Deserialize)]
struct Ingested {
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
}

impl HttpSink {
    /// A sink for the hub at `url`, or why it cannot be reached.
    pub fn new(url: &str, ingest_key: String) -> anyhow::Result<Self> {
        let endpoint = events_endpoint(url)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pulsehub-simulate/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(HttpSink {
            client,
            endpoint,
            ingest_key,
        })
    }
}

impl Sink for HttpSink {
    fn destination(&self) -> &str {
        &self.endpoint
    }

    /// Posts one batch until the hub commits it, the run stops, or the hub
    /// refuses it for good (the error carries the hub's error body).
    async fn deliver(
        &mut self,
        batch: &[Event],
        stop: &Stop,
        totals: &mut Totals,
    ) -> anyhow::Result<Delivery> {
        // Serialized once: every retry sends the very same bytes and keys.
        let body = serde_json::to_vec(batch).context("cannot encode events")?;
        let mut attempt: u32 = 0;
        loop {
            let request = self
                .client
                .post(&self.endpoint)
                .bearer_auth(&self.ingest_key)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send();
            let outcome = tokio::select! {
                outcome = request => outcome,
                _ = stop.signalled() => return Ok(give_up(batch, totals)),
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
                        totals.sent += batch.len() as u64;
                        totals.accepted += ingested.accepted;
                        totals.duplicates += ingested.duplicates;
                        return Ok(Delivery::Done);
                    }
                    let retry_after = retry_after(response.headers(), Utc::now());
                    let text = error_body(response).await;
                    totals.errors += 1;
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
                    totals.errors += 1;
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
            if stop.past_deadline() {
                return Ok(give_up(batch, totals));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.signalled() => return Ok(give_up(batch, totals)),
                _ = stop.deadline() => return Ok(give_up(batch, totals)),
            }
        }
    }
}

/// The run stopped with `batch` unconfirmed.
fn give_up(batch: &[Event], totals: &mut Totals) -> Delivery {
    totals.unconfirmed += batch.len() as u64;
    Delivery::Stopped
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

/// Exponential backoff with jitter: ~0.2 s, 0.4 s, 0.8 s … up to 10 s.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let jitter: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    base.mul_f64(jitter)
}

/// Worth trying again: rate limiting and server errors (503 included).
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at 60 s.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
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
fn refusal(status: StatusCode, body: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{accepted, config, fake_hub, generate};
    use tokio::sync::watch;

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(events_endpoint("https://hub.example").is_err());
        assert!(events_endpoint("not a url").is_err());
        assert_eq!(
            events_endpoint("http://127.0.0.1:9/").expect("url"),
            "http://127.0.0.1:9/api/events"
        );
    }

    #[test]
    fn backoff_stays_in_bounds() {
        assert!(backoff(0) <= Duration::from_millis(200));
        assert!(backoff(0) >= Duration::from_millis(100));
        assert!(backoff(50) <= MAX_BACKOFF);
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().expect("header value"));
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
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    // --- against a fake hub -------------------------------------------------

    /// A sink for `url` with key `k3y`, and the sender that stops it.
    fn sink_for(url: &str) -> (HttpSink, Stop, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let sink = HttpSink::new(url, "k3y".into()).expect("url");
        (sink, Stop::new(rx, None), tx)
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
        let (mut sink, stop, _tx) = sink_for(&url);
        let mut totals = Totals::default();
        let batch = generate(config(10), 3);
        let outcome = sink
            .deliver(&batch, &stop, &mut totals)
            .await
            .expect("delivered");
        assert!(matches!(outcome, Delivery::Done));
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.body == seen[0].body));
        assert!(seen.iter().all(|s| s.authorization == "Bearer k3y"));
        assert_eq!(seen[0].body.as_array().map(Vec::len), Some(3));
        assert_eq!(
            totals,
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
        let (mut sink, stop, tx) = sink_for(&format!("http://127.0.0.1:{port}"));
        let mut totals = Totals::default();
        let batch = generate(config(11), 2);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let _ = tx.send(true);
        });
        let outcome = sink
            .deliver(&batch, &stop, &mut totals)
            .await
            .expect("no hard error");
        assert!(matches!(outcome, Delivery::Stopped));
        assert!(totals.errors >= 2, "{totals:?}");
        assert_eq!(totals.unconfirmed, 2);
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
        let (mut sink, stop, _tx) = sink_for(&url);
        let err = sink
            .deliver(&generate(config(12), 1), &stop, &mut Totals::default())
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
        let (mut sink, stop, _tx) = sink_for(&url);
        let err = sink
            .deliver(&generate(config(12), 1), &stop, &mut Totals::default())
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("--ingest-key"), "{err}");
    }
}
