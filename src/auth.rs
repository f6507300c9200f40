//! Who may do what: browser tokens (HS256 JWT), the ingest key of services,
//! and the Origin check. Tokens and keys are never logged.

use crate::error::HubError;
use crate::protocol::{valid_user_id, Channel, UserRef};
use actix_web::HttpRequest;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a browser token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub exp: i64,
}

impl Claims {
    pub fn user(&self) -> UserRef {
        UserRef {
            id: self.sub.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether the token grants `scope` (`"*"` grants every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == "*" || s == scope)
    }

    /// Whether this user may read `channel`.
    pub fn may_read(&self, channel: &Channel) -> Result<(), HubError> {
        let allowed = match channel {
            Channel::System => true,
            Channel::User(id) => *id == self.sub,
            other => other.scope().is_some_and(|s| self.has_scope(s)),
        };
        if allowed {
            return Ok(());
        }
        Err(HubError::Forbidden(match channel.scope() {
            Some(scope) => format!("token has no access to scope '{scope}'"),
            None => format!("channel '{channel}' belongs to another user"),
        }))
    }
}

/// Verifies and mints browser tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        TokenKeys {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Checks signature, algorithm, expiry and claims.
    pub fn verify(&self, token: &str) -> Result<Claims, HubError> {
        let claims = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                HubError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".into(),
                    ErrorKind::InvalidSignature => "bad token signature".into(),
                    ErrorKind::InvalidAlgorithm => "token must be signed with HS256".into(),
                    ErrorKind::MissingRequiredClaim(c) => format!("token lacks claim '{c}'"),
                    _ => format!("invalid token: {e}"),
                })
            })?
            .claims;
        if !valid_user_id(&claims.sub) {
            return Err(HubError::Unauthorized(
                "token 'sub' is not a valid user id".into(),
            ));
        }
        Ok(claims)
    }

    /// Mints a token (the `token` subcommand, tests, demo mode).
    pub fn mint(&self, claims: &Claims) -> Result<String, HubError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(HubError::internal)
    }
}

/// Claims for `user` valid for `ttl_secs` from now.
pub fn claims_for(user: &str, name: Option<&str>, scopes: &[&str], ttl_secs: i64) -> Claims {
    Claims {
        sub: user.into(),
        name: name.map(Into::into),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        exp: chrono::Utc::now().timestamp() + ttl_secs,
    }
}

/// The bearer token of a request: `Authorization: Bearer …` or `?token=…`.
pub fn request_token(req: &HttpRequest) -> Option<String> {
    bearer(req).or_else(|| {
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    })
}

/// The `Authorization: Bearer` value of a request.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Verifies the ingest key of a service request, in constant time.
pub fn check_ingest_key(req: &HttpRequest, key: &str) -> Result<(), HubError> {
    match bearer(req) {
        None => Err(HubError::Unauthorized(
            "missing ingest key (Authorization: Bearer <key>)".into(),
        )),
        Some(given) if constant_time_eq::constant_time_eq(given.as_bytes(), key.as_bytes()) => {
            Ok(())
        }
        Some(_) => Err(HubError::Unauthorized("wrong ingest key".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let keys = TokenKeys::new("secret");
        let claims = claims_for("alice", Some("Alice"), &["demo"], 60);
        let token = keys.mint(&claims).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), claims);

        let other = TokenKeys::new("other");
        assert_eq!(other.verify(&token).unwrap_err().code(), "unauthorized");

        let expired = keys.mint(&claims_for("a", None, &[], -10)).unwrap();
        assert!(keys
            .verify(&expired)
            .unwrap_err()
            .to_string()
            .contains("expired"));

        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(keys.verify(&hs512).unwrap_err().code(), "unauthorized");
    }

    #[test]
    fn channel_access() {
        let c = claims_for("alice", None, &["demo"], 60);
        assert!(c.may_read(&Channel::Feed("demo".into())).is_ok());
        assert!(c.may_read(&Channel::Stats("acme".into())).is_err());
        assert!(c.may_read(&Channel::User("alice".into())).is_ok());
        assert!(c.may_read(&Channel::User("bob".into())).is_err());
        assert!(c.may_read(&Channel::System).is_ok());
        let all = claims_for("root", None, &["*"], 60);
        assert!(all.may_read(&Channel::Presence("anything".into())).is_ok());
        assert!(all.may_read(&Channel::User("alice".into())).is_err());
    }
}
