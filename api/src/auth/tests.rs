//! The auth module end to end: dev tokens, production refusals, redaction, and the `Caller`
//! extractor driven through a real `Router`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower::ServiceExt;

use super::testkit::{TestKey, claims};
use super::*;
use crate::config::Mode;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn dev_tokens_verify_against_the_dev_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let token = mint_dev_token(dir.path(), "alice", Role::Freelancer, HOUR, now).unwrap();
    let auth = Authenticator::new(&AuthConfig::dev(dir.path())).unwrap();
    let caller = auth.verify(&token, now).unwrap();
    assert_eq!(caller.sub, "alice");
    assert_eq!(caller.role, Role::Freelancer);
    // The header names the dev key by its thumbprint.
    let kid = ensure_dev_key(dir.path()).unwrap().kid;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    // It expires after its ttl.
    assert!(matches!(
        auth.verify(&token, now + HOUR + Duration::from_secs(31)),
        Err(AuthError::Expired)
    ));
}

#[test]
fn a_remembered_token_answers_only_as_verification_would() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let token = mint_dev_token(dir.path(), "alice", Role::Client, HOUR, now).unwrap();
    let auth = Authenticator::new(&AuthConfig::dev(dir.path())).unwrap();
    assert_eq!(auth.verify(&token, now).unwrap().sub, "alice");
    assert_eq!(
        auth.verify(&token, now).unwrap().sub,
        "alice",
        "from the cache"
    );
    // Earlier than its iat (beyond leeway) and after its expiry it still fails.
    assert!(matches!(
        auth.verify(&token, now - HOUR),
        Err(AuthError::NotYetValid)
    ));
    assert!(matches!(
        auth.verify(&token, now + HOUR + Duration::from_secs(31)),
        Err(AuthError::Expired)
    ));
    // A tampered copy is a different token: verified, and refused.
    let mut tampered = token.clone();
    tampered.pop();
    assert!(auth.verify(&tampered, now).is_err());
    // Reloading the keys forgets what was verified under the old ones.
    auth.reload_keys().unwrap();
    assert_eq!(auth.verify(&token, now).unwrap().sub, "alice");
}

#[test]
fn production_refuses_the_dev_key() {
    let dir = tempfile::tempdir().unwrap();
    let paths = ensure_dev_key(dir.path()).unwrap();

    // The dev configuration itself.
    let mut cfg = AuthConfig::dev(dir.path());
    cfg.mode = Mode::Production;
    assert!(matches!(
        Authenticator::new(&cfg),
        Err(AuthError::DevInProduction(_))
    ));

    // The dev JWKS named as a production key source, by its own path...
    let prod = |jwks: std::path::PathBuf| AuthConfig {
        mode: Mode::Production,
        issuer: "https://idp.test".into(),
        keys: KeySource::Jwks(jwks),
        ..AuthConfig::dev(dir.path())
    };
    assert!(matches!(
        Authenticator::new(&prod(paths.jwks.clone())),
        Err(AuthError::DevInProduction(_))
    ));
    // ...or copied elsewhere: the JWK marker gives it away.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("jwks.json");
    std::fs::copy(&paths.jwks, &copy).unwrap();
    assert!(matches!(
        Authenticator::new(&prod(copy.clone())),
        Err(AuthError::DevInProduction(_))
    ));
    // Dev mode accepts the same file.
    let mut dev = prod(copy);
    dev.mode = Mode::Dev;
    assert!(Authenticator::new(&dev).is_ok());
}

#[test]
fn tokens_never_show_in_debug_errors_or_responses() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let token = mint_dev_token(dir.path(), "alice", Role::Admin, HOUR, now).unwrap();
    let signature = token.rsplit('.').next().unwrap().to_string();

    let mut headers = axum::http::HeaderMap::new();
    let value = format!("Bearer {token}");
    headers.insert(header::AUTHORIZATION, value.parse().unwrap());
    let bearer = BearerToken::from_headers(&headers).unwrap();
    assert_eq!(bearer.expose(), token);
    assert_eq!(format!("{bearer:?}"), "BearerToken(<redacted>)");

    let auth = Authenticator::new(&AuthConfig::dev(dir.path())).unwrap();
    let caller = auth.verify(&token, now).unwrap();
    let tampered = format!("{token}x");
    let err = auth.verify(&tampered, now).unwrap_err();
    for text in [
        format!("{caller:?}"),
        format!("{auth:?}"),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(!text.contains(&signature), "{text}");
        assert!(!text.contains(&token[..20]), "{text}");
    }
}

#[test]
fn roles_are_required_from_the_claims() {
    let client = Caller {
        sub: "alice".into(),
        role: Role::Client,
    };
    assert!(
        client
            .require_role(&[Role::Client, Role::Freelancer])
            .is_ok()
    );
    assert!(matches!(
        client.require_role(&[Role::Admin]),
        Err(AuthError::Forbidden { role: Role::Client })
    ));
    let reviewer = Caller {
        sub: "rita".into(),
        role: Role::Reviewer,
    };
    assert!(reviewer.role.is_read_only());
    assert!(reviewer.require_role(&[Role::Admin, Role::System]).is_err());
    for role in Role::ALL {
        assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
        assert_eq!(
            serde_json::to_string(&role).unwrap(),
            format!("\"{}\"", role.as_str())
        );
    }
}

#[test]
fn the_authorization_header_is_parsed_strictly() {
    let parse = |values: &[&str]| {
        let mut headers = axum::http::HeaderMap::new();
        for v in values {
            headers.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        BearerToken::from_headers(&headers).map(|t| t.expose().to_string())
    };
    assert!(matches!(parse(&[]), Err(AuthError::Missing)));
    assert_eq!(parse(&["Bearer abc"]).unwrap(), "abc");
    assert_eq!(parse(&["bearer abc"]).unwrap(), "abc");
    for bad in [
        "Basic YWxpY2U6cHc=",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "abc",
    ] {
        assert!(matches!(parse(&[bad]), Err(AuthError::Malformed)), "{bad}");
    }
    assert!(matches!(
        parse(&["Bearer a", "Bearer b"]),
        Err(AuthError::Malformed)
    ));
}

/// A stand-in for the api's `AppState`.
#[derive(Clone)]
struct State {
    auth: Arc<Authenticator>,
}

impl axum::extract::FromRef<State> for Arc<Authenticator> {
    fn from_ref(state: &State) -> Self {
        state.auth.clone()
    }
}

async fn whoami(caller: Caller) -> String {
    format!("{} {}", caller.sub, caller.role)
}

async fn admin_only(caller: Caller) -> axum::response::Response {
    match caller.require_role(&[Role::Admin]) {
        Ok(()) => "ok".into_response(),
        Err(e) => e.into_response(),
    }
}

#[tokio::test]
async fn the_extractor_answers_with_problems() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let auth = Arc::new(Authenticator::new(&AuthConfig::dev(dir.path())).unwrap());
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/admin", get(admin_only))
        .with_state(State { auth });
    let client = mint_dev_token(dir.path(), "alice", Role::Client, HOUR, now).unwrap();
    let admin = mint_dev_token(dir.path(), "root", Role::Admin, HOUR, now).unwrap();
    let stranger = TestKey::es256("k").token(&claims(DEV_ISSUER, DEV_AUDIENCE, unix_seconds(now)));

    let call = |path: &'static str, auth: Option<String>| {
        let app = app.clone();
        async move {
            let mut req = Request::get(path);
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            (status, headers, body)
        }
    };

    let (status, _, body) = call("/whoami", Some(format!("Bearer {client}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"alice client");

    let refusals = [
        ("/whoami", None, StatusCode::UNAUTHORIZED, "missing_token"),
        (
            "/whoami",
            Some("Bearer not.a.jwt".to_string()),
            StatusCode::UNAUTHORIZED,
            "malformed_token",
        ),
        (
            "/whoami",
            Some(format!("Bearer {stranger}")),
            StatusCode::UNAUTHORIZED,
            "unknown_kid",
        ),
        (
            "/whoami",
            Some(format!("Basic {client}")),
            StatusCode::UNAUTHORIZED,
            "malformed_token",
        ),
        (
            "/admin",
            Some(format!("Bearer {client}")),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (path, auth, want_status, want_code) in refusals {
        let (status, headers, body) = call(path, auth).await;
        assert_eq!(status, want_status, "{want_code}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], want_code);
        assert_eq!(problem["status"], want_status.as_u16());
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(&client[..20]) && !text.contains(&stranger[..20]));
    }

    let (status, _, body) = call("/admin", Some(format!("Bearer {admin}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
}
