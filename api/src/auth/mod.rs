//! Authentication and authorization of api callers: JWT bearer tokens, verified against one
//! configured algorithm (ES256 or ES384), issuer, audience and key set.
//!
//! # What a caller is
//!
//! A [`Caller`] is the token's `sub` and `role`, nothing more. Authorization decisions use the
//! role from the signed claims, never a mutable profile row (threat T4 of the protocol seed), so
//! changing a database row cannot grant a role; only the issuer can.
//!
//! # Roles
//!
//! `client`, `freelancer`, `admin` and `system` are the protocol's parties. `reviewer` is a
//! read-only role (escrow issue: "can read metadata and write notes, and nothing else"): it
//! authenticates like the others, but [`Role::is_read_only`] is true and it passes
//! [`Caller::require_role`] only where a route lists it explicitly.
//!
//! # Wiring
//!
//! ```ignore
//! let auth = Arc::new(Authenticator::new(&AuthConfig::from_settings(&s, &dir, mode)?)?);
//! // The state lends it with `impl FromRef<State> for Arc<Authenticator>`. `State` must be a
//! // local type (the orphan rule refuses `FromRef<Arc<AppState>>`): a newtype does it.
//! async fn handler(caller: Caller) -> Result<_, AuthError> {
//!     caller.require_role(&[Role::Admin])?;
//! }
//! ```
//!
//! # Key rotation
//!
//! [`Authenticator::reload_keys`] re-reads the JWKS or PEM files, swapping the whole key set
//! at once; if the new files are unusable the old keys stay in force. Call it when the
//! issuer rotates (on SIGHUP or a timer).
//!
//! # Dev mode
//!
//! With no key source configured, dev mode trusts a key generated under
//! `DATA_DIR/auth/` ([`ensure_dev_key`]), which `enclosure dev token` signs with
//! ([`mint_dev_token`]). Production refuses it four ways: no key source is an error, key
//! files in the dev directory are refused, JWKs marked `enclosure_dev` are refused, and so is
//! the dev issuer.
//!
//! # Configuration
//!
//! The `[auth]` table ([`AuthSettings`]) of the api's TOML file, overridden by
//! `ENCLOSURE_AUTH_*` variables ([`AuthSettings::apply_env`]), checked for the mode by
//! [`AuthConfig::from_settings`].

mod cache;
mod config;
mod dev;
mod error;
mod keys;
mod verify;

#[cfg(test)]
mod testkit;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderMap, header, request::Parts};
use serde::{Deserialize, Serialize};

pub use config::{
    AuthConfig, AuthSettings, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_LIFETIME_SECS, JwtAlgorithm,
    KeySource, MAX_LEEWAY_SECS, MAX_MAX_LIFETIME_SECS,
};
pub use dev::{
    DEV_AUDIENCE, DEV_ISSUER, DEV_MAX_TTL, DevKeyPaths, dev_key_dir, ensure_dev_key, mint_dev_token,
};
pub use error::AuthError;
pub use keys::ec_thumbprint;
pub use verify::{Authenticator, MAX_TOKEN_LEN};

/// Longest accepted `sub`, in bytes: it becomes an owner key in the database.
pub const MAX_SUB_LEN: usize = 255;

/// A caller's role, from the token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Buys work and funds escrow.
    Client,
    /// Delivers work and is paid from escrow.
    Freelancer,
    /// Resolves disputes; never reads artifacts.
    Admin,
    /// The platform's own automation (validation, deadlines, provider events).
    System,
    /// Read-only: reads metadata and writes notes, nothing else.
    Reviewer,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 5] = [
        Role::Client,
        Role::Freelancer,
        Role::Admin,
        Role::System,
        Role::Reviewer,
    ];

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Freelancer => "freelancer",
            Role::Admin => "admin",
            Role::System => "system",
            Role::Reviewer => "reviewer",
        }
    }

    /// Whether the role may only read (the reviewer).
    pub fn is_read_only(self) -> bool {
        matches!(self, Role::Reviewer)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;

    /// Exact, case-sensitive match: "Admin" is not "admin".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(AuthError::BadRole)
    }
}

/// An authenticated caller: the verified token's subject and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: the caller's stable identifier at the issuer.
    pub sub: String,
    /// The token's `role`.
    pub role: Role,
}

impl Caller {
    /// Succeeds if the caller's role is one of `allowed`, else a 403 problem.
    pub fn require_role(&self, allowed: &[Role]) -> Result<(), AuthError> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { role: self.role })
        }
    }
}

/// A bearer token as it came in; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Takes the token from `Authorization: Bearer <token>`. Exactly one such header is
    /// accepted; the scheme is matched case-insensitively (RFC 9110 §11.1).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AuthError> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(if headers.contains_key(header::AUTHORIZATION) {
                AuthError::Malformed
            } else {
                AuthError::Missing
            });
        };
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(AuthError::Malformed);
        }
        Ok(BearerToken(token.to_string()))
    }

    /// The token text, for verification only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A server-side middleware that already verified this request's token leaves the
        // caller in the extensions (clients cannot set extensions), so verify only once.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let authenticator = Arc::<Authenticator>::from_ref(state);
        let result = BearerToken::from_headers(&parts.headers)
            .and_then(|token| authenticator.verify(token.expose(), SystemTime::now()));
        match &result {
            Ok(caller) => tracing::debug!(sub = %caller.sub, role = %caller.role, "authenticated"),
            // The code says why; the token itself is never logged.
            Err(e) => tracing::info!(code = e.code(), "bearer token refused"),
        }
        result
    }
}

/// Seconds since the Unix epoch; a clock before 1970 reads as 0, which fails closed (every
/// token then looks issued in the future).
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
