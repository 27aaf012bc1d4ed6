//! Why a caller was refused, and its RFC 9457 problem+json rendering.
//!
//! Every refusal has its own variant and a stable snake_case `code`, so clients and tests can
//! tell a wrong audience from an expired token. No variant carries the token or any text taken
//! from it: claim names are `&'static str` chosen by us, never echoed from the request.

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Role;

/// Everything authentication and authorization can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header: the caller did not try to authenticate.
    #[error("a bearer token is required")]
    Missing,
    /// The header or the token is not a well-formed `Bearer` JWT (shape, base64, JSON, size,
    /// an unsupported `crit` header).
    #[error("the bearer token is malformed")]
    Malformed,
    /// The signature does not verify under the key the token names: forged or altered.
    #[error("the token signature does not verify")]
    BadSignature,
    /// `exp` is in the past, beyond the configured leeway.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future, or `iat` is, beyond the configured leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not name this api: a token minted for another service.
    #[error("the token is not meant for this audience")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by an unexpected issuer")]
    WrongIssuer,
    /// The header's `alg` is not the one configured algorithm (this covers `none` and HS*,
    /// the classic algorithm-confusion attacks).
    #[error("the token algorithm is not accepted")]
    WrongAlgorithm,
    /// The header's `kid` names no configured key, or it has no `kid` while several keys are
    /// configured.
    #[error("the token names an unknown signing key")]
    UnknownKid,
    /// A required claim (iss, aud, sub, exp, iat, role) is absent.
    #[error("the token lacks the required claim {0}")]
    MissingClaim(&'static str),
    /// A claim is present but has the wrong type or an unacceptable value.
    #[error("the token claim {0} is invalid")]
    InvalidClaim(&'static str),
    /// `role` is not one of client, freelancer, admin, system, reviewer.
    #[error("the token role is not recognised")]
    BadRole,
    /// `exp - iat` exceeds the configured maximum lifetime: long-lived tokens are refused so
    /// that a leaked one stops working soon.
    #[error("the token lifetime exceeds the allowed maximum")]
    LifetimeTooLong,
    /// The caller is authenticated but its role may not do this.
    #[error("the role {role} may not perform this operation")]
    Forbidden {
        /// The caller's role, from its token.
        role: Role,
    },
    /// The key configuration is unusable (bad JWKS, wrong curve, duplicate kid, ...).
    #[error("JWT key configuration: {0}")]
    Config(String),
    /// Production mode was asked to trust a dev key or the dev issuer.
    #[error("production mode refuses {0}")]
    DevInProduction(&'static str),
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Signing a dev token failed (a broken dev key file, an invalid argument).
    #[error("dev token: {0}")]
    DevToken(String),
}

impl AuthError {
    /// The HTTP status and the stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let unauthorized = StatusCode::UNAUTHORIZED;
        match self {
            AuthError::Missing => (unauthorized, "missing_token"),
            AuthError::Malformed => (unauthorized, "malformed_token"),
            AuthError::BadSignature => (unauthorized, "bad_signature"),
            AuthError::Expired => (unauthorized, "token_expired"),
            AuthError::NotYetValid => (unauthorized, "token_not_yet_valid"),
            AuthError::WrongAudience => (unauthorized, "wrong_audience"),
            AuthError::WrongIssuer => (unauthorized, "wrong_issuer"),
            AuthError::WrongAlgorithm => (unauthorized, "wrong_algorithm"),
            AuthError::UnknownKid => (unauthorized, "unknown_kid"),
            AuthError::MissingClaim(_) => (unauthorized, "missing_claim"),
            AuthError::InvalidClaim(_) => (unauthorized, "invalid_claim"),
            AuthError::BadRole => (unauthorized, "bad_role"),
            AuthError::LifetimeTooLong => (unauthorized, "token_lifetime_too_long"),
            AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            AuthError::Config(_) | AuthError::DevInProduction(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "auth_misconfigured")
            }
            AuthError::Io { .. } | AuthError::DevToken(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    /// The stable machine-readable code alone (for logs and metrics).
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The `WWW-Authenticate` challenge of RFC 6750 §3, when the status calls for one.
    fn challenge(&self) -> Option<&'static str> {
        match self.status_and_code().0 {
            // §3.1: a request without credentials gets the bare challenge, no error code.
            StatusCode::UNAUTHORIZED if matches!(self, AuthError::Missing) => {
                Some(r#"Bearer realm="enclosure""#)
            }
            StatusCode::UNAUTHORIZED => Some(r#"Bearer realm="enclosure", error="invalid_token""#),
            StatusCode::FORBIDDEN => {
                Some(r#"Bearer realm="enclosure", error="insufficient_scope""#)
            }
            _ => None,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = if status.is_server_error() {
            // Paths and reasons are for the operator's log, not for the caller.
            tracing::error!(error = %self, "authentication is misconfigured");
            "authentication is unavailable".to_string()
        } else {
            self.to_string()
        };
        let mut resp = crate::error::problem_response(status, code, detail);
        if let Some(challenge) = self.challenge() {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn refusals_are_problem_json_with_a_bearer_challenge() {
        let resp = AuthError::Expired.into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="enclosure", error="invalid_token""#
        );
        let body = body_json(resp).await;
        assert_eq!(body["code"], "token_expired");
        assert_eq!(body["status"], 401);
        assert_eq!(body["type"], "https://enclosure.dev/problems/token_expired");
        assert_eq!(body["title"], "Unauthorized");
        assert!(body["detail"].is_string());
    }

    #[tokio::test]
    async fn a_missing_token_gets_the_bare_challenge() {
        let resp = AuthError::Missing.into_response();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="enclosure""#
        );
    }

    #[tokio::test]
    async fn forbidden_is_403_insufficient_scope() {
        let resp = AuthError::Forbidden { role: Role::Client }.into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(
            resp.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
        assert_eq!(body_json(resp).await["code"], "forbidden");
    }

    #[tokio::test]
    async fn configuration_details_stay_in_the_log() {
        let resp = AuthError::Config("/etc/secret/path.json is odd".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body = body_json(resp).await;
        assert_eq!(body["code"], "auth_misconfigured");
        assert!(!body["detail"].as_str().unwrap().contains("/etc"));
    }

    #[test]
    fn codes_are_distinct() {
        let all = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::WrongAlgorithm,
            AuthError::UnknownKid,
            AuthError::MissingClaim("iat"),
            AuthError::InvalidClaim("sub"),
            AuthError::BadRole,
            AuthError::LifetimeTooLong,
            AuthError::Forbidden {
                role: Role::Reviewer,
            },
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(AuthError::code).collect();
        assert_eq!(codes.len(), all.len());
    }
}
