//! The built-in dashboard: its files, embedded in the binary and served
//! with validators and a strict CSP, and the demo-mode token endpoint.

use crate::auth::claims_for;
use crate::error::HubError;
use crate::protocol::{valid_scope, valid_user_id};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::sync::OnceLock;

#[derive(Deserialize)]
pub struct DevTokenQuery {
    user: Option<String>,
    name: Option<String>,
    scopes: Option<String>,
}

/// Lifetime of a dev token; the dashboard fetches a new one before it ends.
const DEV_TOKEN_TTL_SECS: i64 = 3600;

/// `GET /api/dev/token?user=&name=&scopes=`: a browser token for anyone,
/// only in demo mode (404 otherwise). Stands in for the login of a real
/// application, which mints tokens in its own backend.
pub async fn dev_token(
    query: web::Query<DevTokenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    if !state.config.demo {
        return Err(HubError::NotFound(
            "the dev token endpoint exists only in demo mode (serve --demo)".into(),
        ));
    }
    let user = match query.user.as_deref() {
        Some(u) if valid_user_id(u) => u.to_string(),
        Some(_) => {
            return Err(HubError::BadRequest(
                "'user' must be 1-128 characters without whitespace".into(),
            ))
        }
        None => format!("guest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    let name = query
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 64) {
        return Err(HubError::BadRequest(
            "'name' is longer than 64 characters".into(),
        ));
    }
    let scopes: Vec<&str> = match query.scopes.as_deref() {
        None => vec!["demo"],
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if scopes.is_empty() || scopes.iter().any(|s| *s != "*" && !valid_scope(s)) {
        return Err(HubError::BadRequest(
            "'scopes' must be a comma-separated list of scope names or '*'".into(),
        ));
    }
    let claims = claims_for(&user, name, &scopes, DEV_TOKEN_TTL_SECS);
    let token = state.tokens.mint(&claims)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "token": token,
            "user": claims.user(),
            "scopes": claims.scopes,
            "exp": claims.exp,
        })))
}

/// Files embedded in the binary: `(path, bytes)` from one directory of the
/// repository, with their validators computed on first use.
struct Files {
    /// What they are, for a 404's message.
    what: &'static str,
    list: &'static [(&'static str, &'static [u8])],
    etags: OnceLock<Vec<String>>,
    /// Served to any origin (`Access-Control-Allow-Origin: *`), so a page
    /// elsewhere can `import` them.
    public: bool,
}

macro_rules! embed {
    ($dir:literal, [$($path:literal),* $(,)?]) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $path)) as &[u8])),*]
    };
}

/// The dashboard (`static/`, see `static/index.html`). Every file of
/// `static/` must be listed here; a unit test checks it.
static DASHBOARD: Files = Files {
    what: "dashboard file",
    list: embed!(
        "static",
        [
            "index.html",
            "app.css",
            "favicon.svg",
            "icons.svg",
            "js/main.js",
            "js/token.js",
            "js/ui.js",
            "js/sentences.js",
            "js/notifications.js",
            "js/sparkline.js",
            "js/util.js",
        ]
    ),
    etags: OnceLock::new(),
    public: false,
};

/// The client SDK `@pulsehub/client` (`clients/js/src/`) at `/sdk/`, so a
/// page without a bundler can `import { PulseClient } from
/// "https://hub/sdk/pulsehub.js"`. Every file of the directory must be
/// listed here (the entry imports its siblings); a unit test checks it.
static SDK: Files = Files {
    what: "SDK file",
    list: embed!(
        "clients/js/src",
        [
            "backoff.js",
            "channel.js",
            "client.js",
            "diff.js",
            "emitter.js",
            "errors.js",
            "jwt.js",
            "poller.js",
            "pulsehub.js",
            "timers.js",
            "types.js",
            "views.js",
        ]
    ),
    etags: OnceLock::new(),
    public: true,
};

/// The page's Content-Security-Policy: only its own scripts, styles and
/// connections (`'self'` covers same-origin `ws:`/`wss:` in current browsers).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "webmanifest") => "application/json",
        _ => "application/octet-stream",
    }
}

impl Files {
    /// Strong validators (FNV-1a of the bytes), computed once: a browser
    /// revalidates every file (`no-cache`) and gets a 304 while the binary
    /// is unchanged, and the new file right after a deploy.
    fn etags(&self) -> &[String] {
        self.etags.get_or_init(|| {
            self.list
                .iter()
                .map(|(_, bytes)| {
                    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                    });
                    format!("\"{hash:016x}\"")
                })
                .collect()
        })
    }

    fn serve(&self, req: &HttpRequest, path: &str) -> Result<HttpResponse, HubError> {
        let Some(i) = self.list.iter().position(|(p, _)| *p == path) else {
            return Err(HubError::NotFound(format!(
                "no {} '{}'",
                self.what,
                path.chars().take(100).collect::<String>()
            )));
        };
        let etag = &self.etags()[i];
        let fresh = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut res = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        res.insert_header((header::ETAG, etag.as_str()))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if path.ends_with(".html") {
            res.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
                .insert_header((header::REFERRER_POLICY, "no-referrer"));
        }
        if self.public {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
        }
        if fresh {
            return Ok(res.finish());
        }
        Ok(res.content_type(content_type(path)).body(self.list[i].1))
    }
}

pub async fn page(req: HttpRequest) -> Result<HttpResponse, HubError> {
    DASHBOARD.serve(&req, "index.html")
}

pub async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, HubError> {
    DASHBOARD.serve(&req, &path)
}

pub async fn sdk(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, HubError> {
    SDK.serve(&req, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_in(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }

    fn check(files: &Files, dir: &str) {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut found = Vec::new();
        files_in(&base, &base, &mut found);
        let mut listed: Vec<String> = files.list.iter().map(|(p, _)| p.to_string()).collect();
        found.sort();
        listed.sort();
        assert_eq!(
            found, listed,
            "{dir} and its table in routes/dashboard.rs must list the same files"
        );
        for (path, _) in files.list {
            assert_ne!(content_type(path), "application/octet-stream", "{path}");
        }
    }

    #[test]
    fn every_static_and_sdk_file_is_embedded() {
        check(&DASHBOARD, "static");
        check(&SDK, "clients/js/src");
    }
}
