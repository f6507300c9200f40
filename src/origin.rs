//! Which browser origins may use the hub: the Origin check and CORS, both
//! driven by `PULSEHUB_ALLOWED_ORIGINS`.
//!
//! - Empty list (default): no Origin check and no CORS headers. Pages on the
//!   hub's own origin (its dashboard) work; a page elsewhere can open `/ws`
//!   but a browser will not let it read the HTTP API.
//! - A list (`https://app.example.com`, or `*` for any origin): a request
//!   whose `Origin` is not listed gets 403 `forbidden` (JSON) on every path
//!   but the dashboard's page and assets, preflights included. Listed origins
//!   get CORS headers on the HTTP API (`GET`, `POST`, `Authorization`,
//!   `Content-Type`), so a dashboard hosted elsewhere can call it. No cookies
//!   are involved, so credentials are never allowed.
//! - A request without `Origin` (curl, services) is never checked: the token
//!   or ingest key protects it.

use crate::error::HubError;
use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{Condition, Next};
use actix_web::web;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: usize = 3600;

/// Checks that a configured origin is what browsers send: `*`, or a scheme,
/// host and optional port with no path (`https://app.example.com`).
pub fn validate(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    match url::Url::parse(origin) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.origin().ascii_serialization() == origin =>
        {
            Ok(())
        }
        _ => Err(format!(
            "PULSEHUB_ALLOWED_ORIGINS: '{origin}' is not an origin; write it as browsers send it, \
             e.g. https://app.example.com (no path, no trailing slash) or *"
        )),
    }
}

/// The configured origins (`PULSEHUB_ALLOWED_ORIGINS`), shared with the
/// [`guard`] as `web::Data`. An empty list allows every origin.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(pub Vec<String>);

impl AllowedOrigins {
    /// Whether `origin` is allowed.
    fn allows(&self, origin: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|a| a == origin || a == "*")
    }
}

/// The dashboard's page and assets and the client SDK are public and served
/// to any origin (module scripts are fetched with an `Origin` header).
fn is_dashboard(path: &str) -> bool {
    path == "/" || path.starts_with("/static/") || path.starts_with("/sdk/")
}

/// Middleware: 403 for a browser request from an origin that is not allowed.
/// Runs before CORS so a refused preflight also gets the JSON error body.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let everyone = AllowedOrigins::default();
    let allowed = req
        .app_data::<web::Data<AllowedOrigins>>()
        .map_or(&everyone, |a| a.get_ref());
    let refused = match req.headers().get(header::ORIGIN) {
        Some(origin) if !is_dashboard(req.path()) => {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            (!allowed.allows(&origin)).then(|| {
                HubError::Forbidden(format!(
                    "origin '{}' is not allowed",
                    origin.chars().take(100).collect::<String>()
                ))
            })
        }
        _ => None,
    };
    match refused {
        Some(err) => Ok(req.error_response(err).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// CORS for the listed origins; disabled when the list is empty. Origins
/// that are not listed never reach it (see [`guard`]).
pub fn cors(allowed: &AllowedOrigins) -> Condition<Cors> {
    let list = &allowed.0;
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE_SECS);
    if list.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in list {
            cors = cors.allowed_origin(origin);
        }
    }
    Condition::new(!list.is_empty(), cors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_validated_as_browsers_send_them() {
        for ok in ["*", "https://app.example.com", "http://localhost:3000"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://app.example.com/",
            "app.example.com",
            "https://app.example.com/path",
            "ftp://example.com",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn allowed_lists() {
        assert!(AllowedOrigins::default().allows("http://any"));
        let list = AllowedOrigins(vec!["https://a.example".to_string()]);
        assert!(list.allows("https://a.example"));
        assert!(!list.allows("https://b.example"));
        assert!(AllowedOrigins(vec!["*".to_string()]).allows("https://b.example"));
    }
}
