//! One error type for the whole hub. Its `code` strings are the stable,
//! snake_case error codes of PROTOCOL.md, shared by WebSocket `error` frames
//! and HTTP error bodies `{"error":{"code","message","details"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// A problem with one item of a request (e.g. one event of a batch).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detail {
    /// Index of the item in the request's array (0 for a single object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The field at fault, as a dotted path (`subject.id`).
    pub field: String,
    pub message: String,
}

/// `Clone`: one failure may answer several waiters (a group commit, a stats
/// computation).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<Detail>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    TooLarge(String),
    /// A request's body did not arrive in time (HTTP 408, code `bad_request`).
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    LimitReached(String),
    /// The hub cannot take more work right now (queue full, stopping).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl HubError {
    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            HubError::BadRequest(_) | HubError::Invalid { .. } | HubError::Timeout(_) => {
                "bad_request"
            }
            HubError::Unauthorized(_) => "unauthorized",
            HubError::Forbidden(_) => "forbidden",
            HubError::NotFound(_) => "not_found",
            HubError::RateLimited(_) => "rate_limited",
            HubError::TooLarge(_) => "too_large",
            HubError::LimitReached(_) => "limit_reached",
            HubError::Unavailable(_) => "unavailable",
            HubError::Internal(_) => "internal",
        }
    }

    pub fn details(&self) -> &[Detail] {
        match self {
            HubError::Invalid { details, .. } => details,
            _ => &[],
        }
    }

    /// Logs the cause and returns an error that tells the client nothing internal.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        HubError::Internal("internal error".into())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [Detail],
}

impl ResponseError for HubError {
    fn status_code(&self) -> StatusCode {
        match self {
            HubError::BadRequest(_) | HubError::Invalid { .. } => StatusCode::BAD_REQUEST,
            HubError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HubError::Forbidden(_) => StatusCode::FORBIDDEN,
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            HubError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HubError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            // Over HTTP only the per-user connection limit raises it.
            HubError::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            HubError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HubError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let HubError::Unavailable(_) = self {
            res.insert_header(("Retry-After", "1"));
        }
        res.json(Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
                details: self.details(),
            },
        })
    }
}

/// A statement's failure: `unavailable` when the database could not be
/// reached (PostgreSQL restarting, the connection cut), `internal` otherwise.
impl From<diesel::result::Error> for HubError {
    fn from(e: diesel::result::Error) -> Self {
        if is_unreachable(&e) {
            warn_unreachable("database unreachable", &e);
            HubError::Unavailable("database unavailable; retry".into())
        } else {
            HubError::internal(e)
        }
    }
}

/// Whether a statement failed because the database is unreachable (the
/// connection was closed, by the server shutting down or by the network),
/// as opposed to a fault of the statement: such a failure is `unavailable`
/// (retry later), not `internal`.
///
/// diesel-async reports a closed connection as `UnableToSendCommand` (no
/// SQLSTATE) or `ClosedConnection`, and a transaction cut off in the middle
/// as a broken transaction manager. A statement that was running when the
/// server shut down gets the server's own FATAL first (class 57, "operator
/// intervention": `terminating connection due to administrator command`,
/// `... immediate shutdown ...`, `the database system is shutting down`);
/// diesel keeps no SQLSTATE, so those are known by their (English) text.
fn is_unreachable(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _,
        ) => true,
        Error::BrokenTransactionManager => true,
        Error::DatabaseError(_, info) => {
            let m = info.message();
            m.starts_with("terminating connection")
                || m.starts_with("the database system is")
                || m.contains("connection closed")
        }
        _ => false,
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for HubError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        warn_unreachable("database pool", &e);
        HubError::Unavailable("database unavailable; retry".into())
    }
}

/// Logs that the database could not be reached, at most once a second with
/// the number of such failures left unlogged since: during an outage every
/// request fails the same way (and the request log has each of them). A
/// warning, not an error: the hub answers `unavailable` and recovers by
/// itself.
fn warn_unreachable(what: &str, cause: &dyn std::fmt::Display) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let last = LAST_MS.load(Relaxed);
    if now.saturating_sub(last) >= 1000
        && LAST_MS
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    {
        let unlogged = UNLOGGED.swap(0, Relaxed);
        tracing::warn!(%cause, unlogged, "{what}");
    } else {
        UNLOGGED.fetch_add(1, Relaxed);
    }
}

impl From<actix::MailboxError> for HubError {
    fn from(e: actix::MailboxError) -> Self {
        HubError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn db_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_string()))
    }

    #[test]
    fn a_lost_database_is_unavailable_and_a_bad_statement_internal() {
        for e in [
            db_error(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            db_error(DatabaseErrorKind::ClosedConnection, "closed"),
            Error::BrokenTransactionManager,
            db_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            db_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to immediate shutdown command",
            ),
            db_error(
                DatabaseErrorKind::Unknown,
                "the database system is shutting down",
            ),
        ] {
            assert_eq!(HubError::from(e).code(), "unavailable");
        }
        for e in [
            db_error(DatabaseErrorKind::Unknown, "syntax error at or near \"x\""),
            db_error(DatabaseErrorKind::UniqueViolation, "duplicate key value"),
            Error::NotFound,
        ] {
            assert_eq!(HubError::from(e).code(), "internal");
        }
    }
}
