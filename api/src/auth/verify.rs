//! The `Authenticator`: turns a bearer token into a `Caller`, or says exactly why not.
//!
//! Order of checks, and why:
//! 1. Size and shape, then the header alone: `alg` must be the one configured algorithm, so
//!    `none`, HS256-with-the-public-key and ES384-for-ES256 are refused before any key is
//!    touched; a `crit` header is refused since we implement no JWS extension (RFC 7515 §4.1.11).
//! 2. The key named by `kid`, and the signature (jsonwebtoken on aws-lc-rs), with iss, aud,
//!    sub and exp required and iss/aud matched. Nothing in the claims is believed before this.
//! 3. Our own time checks against the `now` we are given (not a clock read inside the library,
//!    so tests and callers control time): exp, nbf when present, iat not in the future, and a
//!    maximum lifetime. Then `sub` and `role`.
//!
//! A token that passed all of this is remembered for a short while (`cache.rs`), so the same
//! token again skips the signature check while the answer would be the same.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use serde_json::Value;

use super::cache::{VerifiedTokens, token_digest};
use super::config::{AuthConfig, KeySource};
use super::keys::KeySet;
use super::{AuthError, Caller, JwtAlgorithm, MAX_SUB_LEN, Role, unix_seconds};
use crate::config::Mode;

/// Longest token we parse; real ones are well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies bearer tokens against one algorithm, issuer, audience and key set.
pub struct Authenticator {
    /// What is checked, and where the keys come from (kept for `reload_keys`).
    config: AuthConfig,
    /// Swapped whole by `reload_keys`, so a verification sees the old set or the new one.
    keys: RwLock<Arc<KeySet>>,
    validation: jsonwebtoken::Validation,
    /// Recently verified tokens (by digest), emptied when the keys change.
    verified: VerifiedTokens,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.config.algorithm)
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .field("mode", &self.config.mode)
            .field("kids", &self.current_keys())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

/// Claims we read ourselves; `Value` so a wrong type is a precise error, not a parse failure.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<Value>,
    role: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
}

impl Authenticator {
    /// Loads the keys `config` names. Refuses dev keys and the dev issuer in production, and
    /// announces the dev key loudly in dev.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        config.check_mode()?;
        let keys = load_keys(config)?;
        tracing::info!(kids = ?keys.kids(), source = ?config.keys, "JWT keys loaded");
        let mut validation = jsonwebtoken::Validation::new(config.algorithm.jsonwebtoken());
        validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        // Time is checked below against the caller's `now`, not the library's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Ok(Authenticator {
            config: config.clone(),
            keys: RwLock::new(Arc::new(keys)),
            validation,
            verified: VerifiedTokens::default(),
        })
    }

    /// The one accepted algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.config.algorithm
    }

    /// Verifies `token` at time `now` and returns who is calling.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Caller, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let now = unix_seconds(now);
        let digest = token_digest(token);
        if let Some(caller) = self.verified.get(&digest, now) {
            return Ok(caller);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: RawHeader = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(AuthError::Malformed)?;
        if header.alg.as_deref() != Some(self.config.algorithm.as_str()) {
            return Err(AuthError::WrongAlgorithm);
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let keys = self.current_keys();
        let key = keys.select(header.kid.as_deref())?;
        let claims = jsonwebtoken::decode::<RawClaims>(token, key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;
        let (caller, expires) = self.check_claims(claims, now)?;
        self.verified.put(digest, caller.clone(), now, expires);
        Ok(caller)
    }

    /// Reads the key files again (after a rotation at the issuer). On failure the current keys
    /// stay in force and the error is returned, so a half-written file cannot lock everyone out.
    pub fn reload_keys(&self) -> Result<(), AuthError> {
        let keys = load_keys(&self.config)?;
        tracing::info!(kids = ?keys.kids(), "JWT keys reloaded");
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        // A token verified under a key that is now gone must not keep passing.
        self.verified.clear();
        Ok(())
    }

    fn current_keys(&self) -> Arc<KeySet> {
        // Poisoning cannot leave a half-swapped set: the write is a single assignment.
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The caller, and the second from which the token counts as expired (leeway included).
    fn check_claims(&self, claims: RawClaims, now: u64) -> Result<(Caller, u64), AuthError> {
        let exp = numeric_date(claims.exp, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
        let iat = numeric_date(claims.iat, "iat")?.ok_or(AuthError::MissingClaim("iat"))?;
        if now >= exp.saturating_add(self.config.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims.nbf, "nbf")?
            && nbf > now.saturating_add(self.config.leeway_secs)
        {
            return Err(AuthError::NotYetValid);
        }
        // A token "issued" in the future comes from a broken or hostile clock.
        if iat > now.saturating_add(self.config.leeway_secs) {
            return Err(AuthError::NotYetValid);
        }
        if exp < iat {
            return Err(AuthError::InvalidClaim("exp"));
        }
        if exp - iat > self.config.max_lifetime_secs {
            return Err(AuthError::LifetimeTooLong);
        }
        let sub = match claims.sub {
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= MAX_SUB_LEN && !s.chars().any(char::is_control) =>
            {
                s
            }
            None => return Err(AuthError::MissingClaim("sub")),
            Some(_) => return Err(AuthError::InvalidClaim("sub")),
        };
        let role = match claims.role {
            Some(Value::String(r)) => r.parse::<Role>().map_err(|_| AuthError::BadRole)?,
            None => return Err(AuthError::MissingClaim("role")),
            Some(_) => return Err(AuthError::BadRole),
        };
        Ok((
            Caller { sub, role },
            exp.saturating_add(self.config.leeway_secs),
        ))
    }
}

/// Loads the keys of `config`, refusing dev keys in production and announcing them in dev.
fn load_keys(config: &AuthConfig) -> Result<KeySet, AuthError> {
    let allow_dev = config.mode == Mode::Dev;
    match &config.keys {
        KeySource::Jwks(path) => KeySet::from_jwks_file(path, config.algorithm, allow_dev),
        KeySource::Pem(files) => KeySet::from_pem_files(files, config.algorithm),
        KeySource::Dev => {
            let paths = super::dev::ensure_dev_key(&config.data_dir)?;
            tracing::warn!(
                jwks = %paths.jwks.display(),
                kid = %paths.kid,
                "DEV MODE: accepting JWTs signed by the dev key; production refuses it"
            );
            KeySet::from_jwks_file(&paths.jwks, config.algorithm, allow_dev)
        }
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional (truncated).
fn numeric_date(value: Option<Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && (0.0..1e15).contains(&f) => Ok(Some(f as u64)),
                    _ => Err(AuthError::InvalidClaim(name)),
                }
            }
        }
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(claim_name(c)),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaim(claim_name(c)),
        // Key-format errors cannot come from the token (keys are checked at load); fail closed.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat | ErrorKind::Provider(_) => {
            AuthError::BadSignature
        }
        _ => AuthError::Malformed,
    }
}

/// Maps a claim name from the library to a static one, so no text from outside is kept.
fn claim_name(name: &str) -> &'static str {
    match name {
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        "exp" => "exp",
        "nbf" => "nbf",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
