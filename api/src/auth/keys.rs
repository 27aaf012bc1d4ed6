//! Verification keys: EC public keys from a JWKS file or PEM files, selected by `kid`.
//!
//! Keys are checked when loaded, not when the first token arrives: the curve must match the
//! configured algorithm, the point must be on the curve, a JWK's own `alg`/`use` must agree,
//! and a JWKS entry holding a private part (`d`) is refused outright, since a verifier has no
//! business holding signing keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::{AuthError, JwtAlgorithm};

/// Largest key file we read: JWKS documents are a few kilobytes.
const MAX_KEY_FILE: u64 = 1 << 20;

/// The member that marks a JWK as an Enclosure dev key, refused in production.
pub(crate) const DEV_MARKER: &str = "enclosure_dev";

/// One JWK as found in a JWKS document; unknown members are ignored, as RFC 7517 §4 asks.
#[derive(Deserialize)]
struct JwkEntry {
    kty: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<serde::de::IgnoredAny>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    #[serde(default, rename = "enclosure_dev")]
    dev: bool,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<JwkEntry>,
}

/// The loaded verification keys.
pub(crate) struct KeySet {
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kids()).finish()
    }
}

impl KeySet {
    /// Loads a JWKS file. Entries for other key types, curves, algorithms or uses are skipped
    /// (an identity provider may publish RSA keys beside ours); at least one must remain.
    pub(crate) fn from_jwks_file(
        path: &Path,
        alg: JwtAlgorithm,
        allow_dev: bool,
    ) -> Result<Self, AuthError> {
        let bytes = read_capped(path)?;
        Self::from_jwks(&bytes, alg, allow_dev)
            .map_err(|e| prefix(e, &format!("{}: ", path.display())))
    }

    /// Loads a JWKS document from bytes.
    pub(crate) fn from_jwks(
        bytes: &[u8],
        alg: JwtAlgorithm,
        allow_dev: bool,
    ) -> Result<Self, AuthError> {
        let doc: JwksDocument = serde_json::from_slice(bytes)
            .map_err(|e| AuthError::Config(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for entry in doc.keys {
            if entry.d.is_some() {
                return Err(AuthError::Config(
                    "the JWKS holds a private key; publish public keys only".into(),
                ));
            }
            if entry.dev && !allow_dev {
                return Err(AuthError::DevInProduction("a JWKS holding the dev JWT key"));
            }
            let usable = entry.kty.as_deref() == Some("EC")
                && entry.crv.as_deref() == Some(alg.curve())
                && entry.alg.as_deref().is_none_or(|a| a == alg.as_str())
                && entry.use_.as_deref().is_none_or(|u| u == "sig");
            if !usable {
                tracing::debug!(kid = ?entry.kid, "skipping a JWK that is not an {} signing key", alg.as_str());
                continue;
            }
            let (Some(x), Some(y)) = (&entry.x, &entry.y) else {
                return Err(AuthError::Config("an EC JWK lacks x or y".into()));
            };
            let point = ec_point(alg, x, y)?;
            keys.push((entry.kid, checked_key(alg, point)?));
        }
        Self::new(keys)
    }

    /// Loads PEM public keys (SubjectPublicKeyInfo), by `kid`.
    pub(crate) fn from_pem_files(
        files: &BTreeMap<String, PathBuf>,
        alg: JwtAlgorithm,
    ) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        for (kid, path) in files {
            let pem = read_capped(path)?;
            let key = DecodingKey::from_ec_pem(&pem).map_err(|e| {
                AuthError::Config(format!("{}: not an EC public key: {e}", path.display()))
            })?;
            let point = key
                .try_get_as_bytes()
                .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))?
                .to_vec();
            let key =
                checked_key(alg, point).map_err(|e| prefix(e, &format!("{}: ", path.display())))?;
            keys.push((Some(kid.clone()), key));
        }
        Self::new(keys)
    }

    fn new(keys: Vec<(Option<String>, DecodingKey)>) -> Result<Self, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::Config("no usable verification key".into()));
        }
        if keys.len() > 1 && keys.iter().any(|(kid, _)| kid.is_none()) {
            return Err(AuthError::Config(
                "with several keys, every key needs a kid".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for kid in keys.iter().filter_map(|(kid, _)| kid.as_deref()) {
            if !seen.insert(kid) {
                return Err(AuthError::Config(format!("duplicate kid {kid:?}")));
            }
        }
        Ok(KeySet { keys })
    }

    /// The key a token header names. Without `kid`, only a lone key can be meant.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&DecodingKey, AuthError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, key)| key)
                .ok_or(AuthError::UnknownKid),
            None if self.keys.len() == 1 => Ok(&self.keys[0].1),
            None => Err(AuthError::UnknownKid),
        }
    }

    /// The configured key ids (for logs).
    pub(crate) fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|(kid, _)| kid.as_deref().unwrap_or("(no kid)"))
            .collect()
    }
}

/// The uncompressed SEC1 point of base64url coordinates, length-checked for `alg`'s curve.
fn ec_point(alg: JwtAlgorithm, x: &str, y: &str) -> Result<Vec<u8>, AuthError> {
    let decode = |c: &str| {
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .filter(|v| v.len() == alg.coordinate_len())
            .ok_or_else(|| AuthError::Config(format!("bad {} coordinate", alg.curve())))
    };
    let mut point = vec![0x04];
    point.extend(decode(x)?);
    point.extend(decode(y)?);
    Ok(point)
}

/// Wraps an uncompressed point after checking it lies on `alg`'s curve: a key on the wrong
/// curve would otherwise only show up as "bad signature" on every token.
fn checked_key(alg: JwtAlgorithm, point: Vec<u8>) -> Result<DecodingKey, AuthError> {
    if point.len() != 1 + 2 * alg.coordinate_len() || point.first() != Some(&0x04) {
        return Err(AuthError::Config(format!(
            "not an uncompressed {} public key",
            alg.curve()
        )));
    }
    aws_lc_rs::signature::ParsedPublicKey::new(alg.verification(), &point)
        .map_err(|_| AuthError::Config(format!("the point is not on the {} curve", alg.curve())))?;
    Ok(DecodingKey::from_ec_der(&point))
}

/// The RFC 7638 JWK thumbprint of an EC public key: SHA-256 over the required members in
/// lexicographic order, base64url without padding.
pub fn ec_thumbprint(alg: JwtAlgorithm, x: &str, y: &str) -> String {
    // The members are fixed names and base64url text, so no JSON escaping is needed.
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{x}","y":"{y}"}}"#,
        alg.curve()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Reads a key file, refusing anything implausibly large.
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, AuthError> {
    use std::io::Read;
    let io = |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(AuthError::Config(format!(
            "{} is larger than {MAX_KEY_FILE} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn prefix(err: AuthError, at: &str) -> AuthError {
    match err {
        AuthError::Config(msg) => AuthError::Config(format!("{at}{msg}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit::TestKey;

    #[test]
    fn jwks_keys_are_selected_by_kid() {
        let (a, b) = (TestKey::es256("a"), TestKey::es256("b"));
        let doc = format!(r#"{{"keys":[{},{}]}}"#, a.jwk(), b.jwk());
        let set = KeySet::from_jwks(doc.as_bytes(), JwtAlgorithm::Es256, false).unwrap();
        assert!(set.select(Some("a")).is_ok());
        assert!(set.select(Some("b")).is_ok());
        assert!(matches!(set.select(Some("c")), Err(AuthError::UnknownKid)));
        assert!(matches!(set.select(None), Err(AuthError::UnknownKid)));
        assert_eq!(set.kids(), ["a", "b"]);
    }

    #[test]
    fn a_lone_key_serves_tokens_without_kid() {
        let a = TestKey::es256("a");
        let doc = format!(r#"{{"keys":[{}]}}"#, a.jwk());
        let set = KeySet::from_jwks(doc.as_bytes(), JwtAlgorithm::Es256, false).unwrap();
        assert!(set.select(None).is_ok());
    }

    #[test]
    fn unusable_and_dangerous_jwks_are_refused() {
        let a = TestKey::es256("a");
        // A P-256 key under an ES384 configuration is skipped, leaving nothing.
        let doc = format!(r#"{{"keys":[{}]}}"#, a.jwk());
        assert!(KeySet::from_jwks(doc.as_bytes(), JwtAlgorithm::Es384, false).is_err());
        // Other key types are skipped; the EC key remains.
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}},{}]}}"#,
            a.jwk()
        );
        assert!(KeySet::from_jwks(doc.as_bytes(), JwtAlgorithm::Es256, false).is_ok());
        // A private part, a duplicate kid, an off-curve point, a dev key in production.
        let with_d = a.jwk().replacen('{', r#"{"d":"AAAA","#, 1);
        let dup = format!(r#"{{"keys":[{},{}]}}"#, a.jwk(), a.jwk());
        let mut off = a.point.clone();
        off[40] ^= 1;
        let off = TestKey::jwk_of("a", JwtAlgorithm::Es256, &off);
        let dev = a.jwk().replacen('{', r#"{"enclosure_dev":true,"#, 1);
        for (doc, production_only) in [
            (format!(r#"{{"keys":[{with_d}]}}"#), false),
            (dup, false),
            (format!(r#"{{"keys":[{off}]}}"#), false),
            (format!(r#"{{"keys":[{dev}]}}"#), true),
            ("[]".to_string(), false),
        ] {
            assert!(KeySet::from_jwks(doc.as_bytes(), JwtAlgorithm::Es256, false).is_err());
            if production_only {
                assert!(KeySet::from_jwks(doc.as_bytes(), JwtAlgorithm::Es256, true).is_ok());
            }
        }
    }

    #[test]
    fn pem_keys_are_loaded_and_curve_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = TestKey::es256("a");
        let path = dir.path().join("a.pem");
        std::fs::write(&path, a.public_pem()).unwrap();
        let files = [("a".to_string(), path)].into();
        let set = KeySet::from_pem_files(&files, JwtAlgorithm::Es256).unwrap();
        assert!(set.select(Some("a")).is_ok());
        assert!(KeySet::from_pem_files(&files, JwtAlgorithm::Es384).is_err());
    }

    #[test]
    fn thumbprints_follow_rfc7638() {
        // The P-256 key of RFC 7517 Appendix A.1; the expected value was computed separately
        // (Python hashlib over the RFC 7638 §3 canonical JSON).
        let t = ec_thumbprint(
            JwtAlgorithm::Es256,
            "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        );
        assert_eq!(t, "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s");
        // And it agrees with jsonwebtoken's own implementation on fresh keys of both curves.
        for key in [TestKey::es256("a"), TestKey::es384("b")] {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&key.jwk()).unwrap();
            let theirs = jwk
                .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap();
            let (x, y) = key.point[1..].split_at(key.alg.coordinate_len());
            let ours = ec_thumbprint(
                key.alg,
                &URL_SAFE_NO_PAD.encode(x),
                &URL_SAFE_NO_PAD.encode(y),
            );
            assert_eq!(ours, theirs);
        }
    }
}
