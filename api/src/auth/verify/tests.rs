//! Each refusal of `Authenticator::verify`, with its own error.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::auth::testkit::{TestKey, claims, hs256_token, sign_raw_unsigned};

const ISS: &str = "https://idp.test";
const AUD: &str = "enclosure-api";

struct Fixture {
    _dir: tempfile::TempDir,
    auth: Authenticator,
    now: SystemTime,
}

impl Fixture {
    fn secs(&self) -> u64 {
        unix_seconds(self.now)
    }

    fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        self.auth.verify(token, self.now)
    }
}

fn config(dir: &std::path::Path, alg: JwtAlgorithm, keys: KeySource) -> AuthConfig {
    AuthConfig {
        mode: Mode::Production,
        data_dir: dir.to_path_buf(),
        algorithm: alg,
        issuer: ISS.into(),
        audience: AUD.into(),
        leeway_secs: 30,
        max_lifetime_secs: 24 * 3600,
        keys,
    }
}

fn jwks_fixture(alg: JwtAlgorithm, keys: &[&TestKey]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let jwks: Vec<Value> = keys
        .iter()
        .map(|k| serde_json::from_str(&k.jwk()).unwrap())
        .collect();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": jwks }).to_string()).unwrap();
    let auth = Authenticator::new(&config(dir.path(), alg, KeySource::Jwks(path))).unwrap();
    Fixture {
        _dir: dir,
        auth,
        // A fixed instant, so the test does not depend on the wall clock.
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

fn es256() -> (TestKey, Fixture) {
    let key = TestKey::es256("k1");
    let fx = jwks_fixture(JwtAlgorithm::Es256, &[&key]);
    (key, fx)
}

fn with(mut claims: Value, edits: &[(&str, Value)]) -> Value {
    for (name, value) in edits {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(*name);
        } else {
            claims[*name] = value.clone();
        }
    }
    claims
}

#[test]
fn a_valid_token_is_accepted() {
    let (key, fx) = es256();
    let caller = fx.verify(&key.token(&claims(ISS, AUD, fx.secs()))).unwrap();
    assert_eq!(
        caller,
        Caller {
            sub: "alice".into(),
            role: Role::Client
        }
    );
    // aud may be an array that contains us; a fractional NumericDate is fine.
    let c = with(
        claims(ISS, AUD, fx.secs()),
        &[
            ("aud", json!(["other", AUD])),
            ("exp", json!(fx.secs() as f64 + 60.5)),
        ],
    );
    assert!(fx.verify(&key.token(&c)).is_ok());
}

#[test]
fn malformed_tokens_are_refused() {
    let (key, fx) = es256();
    let good = key.token(&claims(ISS, AUD, fx.secs()));
    let (head, rest) = good.split_once('.').unwrap();
    let crit = key.sign_raw(
        &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"], "exp": 1}),
        &claims(ISS, AUD, fx.secs()),
    );
    let not_json_claims = format!("{head}.bm90IGpzb24.{}", rest.rsplit('.').next().unwrap());
    for bad in [
        String::new(),
        "abc".into(),
        "a.b".into(),
        format!("{good}.extra"),
        format!("!!!.{rest}"),
        format!("bm90IGpzb24.{rest}"),
        "x".repeat(MAX_TOKEN_LEN + 1),
        crit,
    ] {
        assert!(
            matches!(fx.verify(&bad), Err(AuthError::Malformed)),
            "{bad:.40}"
        );
    }
    // A claims part that is not JSON fails its signature first: nothing is parsed unsigned.
    assert!(matches!(
        fx.verify(&not_json_claims),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn a_bad_signature_is_refused() {
    let (key, fx) = es256();
    let good = key.token(&claims(ISS, AUD, fx.secs()));
    // Swap in other claims under the original signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = with(claims(ISS, AUD, fx.secs()), &[("role", json!("admin"))]);
    let forged_part = crate::auth::testkit::signing_input(&json!({}), &forged);
    parts[1] = forged_part.split('.').nth(1).unwrap();
    assert!(matches!(
        fx.verify(&parts.join(".")),
        Err(AuthError::BadSignature)
    ));
    // Another key claiming the configured kid.
    let impostor = TestKey::es256("k1");
    assert!(matches!(
        fx.verify(&impostor.token(&claims(ISS, AUD, fx.secs()))),
        Err(AuthError::BadSignature)
    ));
    // Keys offered by the token itself (jwk, jku, x5u) are never used.
    let embedded: Value = serde_json::from_str(&impostor.jwk()).unwrap();
    let header = json!({
        "alg": "ES256", "kid": "k1", "jwk": embedded,
        "jku": "https://evil.test/jwks.json", "x5u": "https://evil.test/cert.pem",
    });
    assert!(matches!(
        fx.verify(&impostor.sign_raw(&header, &claims(ISS, AUD, fx.secs()))),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let (key, fx) = es256();
    let wrong_aud = key.token(&claims(ISS, "another-api", fx.secs()));
    assert!(matches!(
        fx.verify(&wrong_aud),
        Err(AuthError::WrongAudience)
    ));
    let wrong_iss = key.token(&claims("https://evil.test", AUD, fx.secs()));
    assert!(matches!(fx.verify(&wrong_iss), Err(AuthError::WrongIssuer)));
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let (key, fx) = es256();
    let now = fx.secs();
    let base = claims(ISS, AUD, now);
    let cases = [
        (
            vec![("iat", json!(now - 100)), ("exp", json!(now - 31))],
            Some("expired"),
        ),
        (
            vec![("iat", json!(now - 100)), ("exp", json!(now - 10))],
            None,
        ),
        (vec![("nbf", json!(now + 120))], Some("not_yet_valid")),
        (vec![("nbf", json!(now + 10))], None),
        (
            vec![("iat", json!(now + 120)), ("exp", json!(now + 600))],
            Some("not_yet_valid"),
        ),
        (vec![("exp", json!(now + 25 * 3600))], Some("lifetime")),
        (vec![("exp", json!("tomorrow"))], Some("missing_exp")),
        (vec![("nbf", json!("soon"))], Some("invalid_nbf")),
    ];
    for (edits, want) in cases {
        let result = fx.verify(&key.token(&with(base.clone(), &edits)));
        let got = match &result {
            Ok(_) => None,
            Err(AuthError::Expired) => Some("expired"),
            Err(AuthError::NotYetValid) => Some("not_yet_valid"),
            Err(AuthError::LifetimeTooLong) => Some("lifetime"),
            Err(AuthError::MissingClaim("exp")) => Some("missing_exp"),
            Err(AuthError::InvalidClaim("nbf")) => Some("invalid_nbf"),
            Err(e) => panic!("{edits:?}: unexpected {e:?}"),
        };
        assert_eq!(got, want, "{edits:?}");
    }
}

#[test]
fn each_required_claim_is_required() {
    let (key, fx) = es256();
    for name in ["iss", "aud", "sub", "exp", "iat", "role"] {
        let c = with(claims(ISS, AUD, fx.secs()), &[(name, Value::Null)]);
        match fx.verify(&key.token(&c)) {
            Err(AuthError::MissingClaim(missing)) => assert_eq!(missing, name),
            other => panic!("without {name}: {other:?}"),
        }
    }
}

#[test]
fn roles_are_checked() {
    let (key, fx) = es256();
    for bad in [
        json!("superuser"),
        json!("Admin"),
        json!(""),
        json!(7),
        json!(["admin"]),
    ] {
        let c = with(claims(ISS, AUD, fx.secs()), &[("role", bad.clone())]);
        assert!(
            matches!(fx.verify(&key.token(&c)), Err(AuthError::BadRole)),
            "{bad}"
        );
    }
    for role in Role::ALL {
        let c = with(
            claims(ISS, AUD, fx.secs()),
            &[("role", json!(role.as_str()))],
        );
        assert_eq!(fx.verify(&key.token(&c)).unwrap().role, role);
    }
    for bad_sub in [
        json!(""),
        json!(42),
        json!("a\u{0}b"),
        json!("x".repeat(256)),
    ] {
        let c = with(claims(ISS, AUD, fx.secs()), &[("sub", bad_sub)]);
        assert!(matches!(
            fx.verify(&key.token(&c)),
            Err(AuthError::InvalidClaim("sub") | AuthError::MissingClaim("sub"))
        ));
    }
}

#[test]
fn other_algorithms_are_refused() {
    let (key, fx) = es256();
    let c = claims(ISS, AUD, fx.secs());
    // ES384 token against the ES256 configuration.
    let es384 = TestKey::es384("k1");
    assert!(matches!(
        fx.verify(&es384.token(&c)),
        Err(AuthError::WrongAlgorithm)
    ));
    // HS256 keyed with the public key: the classic confusion attack.
    let hs = hs256_token(key.public_pem().as_bytes(), "k1", &c);
    assert!(matches!(fx.verify(&hs), Err(AuthError::WrongAlgorithm)));
    // alg none, and a header without alg.
    let none = sign_raw_unsigned(&json!({"alg": "none", "kid": "k1"}), &c);
    assert!(matches!(fx.verify(&none), Err(AuthError::WrongAlgorithm)));
    let no_alg = key.sign_raw(&json!({"kid": "k1"}), &c);
    assert!(matches!(fx.verify(&no_alg), Err(AuthError::WrongAlgorithm)));
    // An ES256 signature relabelled as es256 (case matters).
    let lower = key.sign_raw(&json!({"alg": "es256", "kid": "k1"}), &c);
    assert!(matches!(fx.verify(&lower), Err(AuthError::WrongAlgorithm)));
}

#[test]
fn keys_are_selected_by_kid() {
    let (a, b) = (TestKey::es256("a"), TestKey::es256("b"));
    let fx = jwks_fixture(JwtAlgorithm::Es256, &[&a, &b]);
    let c = claims(ISS, AUD, fx.secs());
    assert!(fx.verify(&a.token(&c)).is_ok());
    assert!(fx.verify(&b.token(&c)).is_ok());
    let unknown = TestKey::es256("c");
    assert!(matches!(
        fx.verify(&unknown.token(&c)),
        Err(AuthError::UnknownKid)
    ));
    // Without kid, two keys are ambiguous.
    let no_kid = a.sign_raw(&json!({"alg": "ES256"}), &c);
    assert!(matches!(fx.verify(&no_kid), Err(AuthError::UnknownKid)));
    // With one key, a token without kid is fine.
    let (key, fx1) = es256();
    let no_kid = key.sign_raw(&json!({"alg": "ES256"}), &claims(ISS, AUD, fx1.secs()));
    assert!(fx1.verify(&no_kid).is_ok());
}

#[test]
fn pem_keys_and_es384_work() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TestKey::es384("a"), TestKey::es384("b"));
    let mut files = std::collections::BTreeMap::new();
    for k in [&a, &b] {
        let path: PathBuf = dir.path().join(format!("{}.pem", k.kid));
        std::fs::write(&path, k.public_pem()).unwrap();
        files.insert(k.kid.clone(), path);
    }
    let cfg = config(dir.path(), JwtAlgorithm::Es384, KeySource::Pem(files));
    let auth = Authenticator::new(&cfg).unwrap();
    assert_eq!(auth.algorithm(), JwtAlgorithm::Es384);
    let now = SystemTime::now();
    let c = claims(ISS, AUD, unix_seconds(now));
    assert_eq!(auth.verify(&b.token(&c), now).unwrap().sub, "alice");
    assert!(auth.verify(&a.token(&c), now).is_ok());
    // An ES256 token against the ES384 configuration.
    let es256 = TestKey::es256("a");
    assert!(matches!(
        auth.verify(&es256.token(&c), now),
        Err(AuthError::WrongAlgorithm)
    ));
}

#[test]
fn debug_shows_configuration_not_keys() {
    let (_key, fx) = es256();
    let text = format!("{:?}", fx.auth);
    assert!(text.contains("Es256") && text.contains("k1") && text.contains(ISS));
}

#[test]
fn keys_reload_after_rotation_and_survive_a_bad_file() {
    let (old, new) = (TestKey::es256("old"), TestKey::es256("new"));
    let fx = jwks_fixture(JwtAlgorithm::Es256, &[&old]);
    let c = claims(ISS, AUD, fx.secs());
    assert!(matches!(
        fx.verify(&new.token(&c)),
        Err(AuthError::UnknownKid)
    ));
    let path = fx._dir.path().join("jwks.json");
    // A broken file is refused and the old keys stay in force.
    std::fs::write(&path, "{\"keys\": [").unwrap();
    assert!(fx.auth.reload_keys().is_err());
    assert!(fx.verify(&old.token(&c)).is_ok());
    // The rotated set replaces the old one.
    std::fs::write(&path, format!(r#"{{"keys":[{}]}}"#, new.jwk())).unwrap();
    fx.auth.reload_keys().unwrap();
    assert!(fx.verify(&new.token(&c)).is_ok());
    assert!(matches!(
        fx.verify(&old.token(&c)),
        Err(AuthError::UnknownKid)
    ));
}
