//! Test keys and hand-built tokens, so tests can produce exactly the malformed or hostile
//! token they need (any header, any claims, any algorithm).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::JwtAlgorithm;

/// A signing key with its public point.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: JwtAlgorithm,
    pub(crate) point: Vec<u8>,
    pair: aws_lc_rs::signature::EcdsaKeyPair,
}

impl TestKey {
    fn generate(kid: &str, alg: JwtAlgorithm) -> Self {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
        };
        let signing = match alg {
            JwtAlgorithm::Es256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
            JwtAlgorithm::Es384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let pair = EcdsaKeyPair::generate(signing).unwrap();
        TestKey {
            kid: kid.to_string(),
            alg,
            point: pair.public_key().as_ref().to_vec(),
            pair,
        }
    }

    /// A P-256 key.
    pub(crate) fn es256(kid: &str) -> Self {
        Self::generate(kid, JwtAlgorithm::Es256)
    }

    /// A P-384 key.
    pub(crate) fn es384(kid: &str) -> Self {
        Self::generate(kid, JwtAlgorithm::Es384)
    }

    /// The public JWK, as JSON text.
    pub(crate) fn jwk(&self) -> String {
        Self::jwk_of(&self.kid, self.alg, &self.point)
    }

    /// A JWK for any point (for off-curve tests).
    pub(crate) fn jwk_of(kid: &str, alg: JwtAlgorithm, point: &[u8]) -> String {
        let (x, y) = point[1..].split_at(alg.coordinate_len());
        json!({
            "kty": "EC", "crv": alg.curve(), "kid": kid, "use": "sig", "alg": alg.as_str(),
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        })
        .to_string()
    }

    /// The public key as a SubjectPublicKeyInfo PEM.
    pub(crate) fn public_pem(&self) -> String {
        // DER prefixes of SubjectPublicKeyInfo for id-ecPublicKey on each named curve.
        let prefix = match self.alg {
            JwtAlgorithm::Es256 => "3059301306072a8648ce3d020106082a8648ce3d030107034200",
            JwtAlgorithm::Es384 => "3076301006072a8648ce3d020106052b81040022036200",
        };
        let mut der = hex::decode(prefix).unwrap();
        der.extend(&self.point);
        crate::pem::encode("PUBLIC KEY", &der)
    }

    /// A token with this key's algorithm and kid over `claims`.
    pub(crate) fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        self.sign_raw(&header, claims)
    }

    /// A token with any header, signed by this key (whatever the header says).
    pub(crate) fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = self.pair.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// `base64url(header).base64url(claims)`.
pub(crate) fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An HS256 token keyed with `secret` (the "public key as HMAC secret" attack).
pub(crate) fn hs256_token(secret: &[u8], kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let input = signing_input(&header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Claims valid at `now` for an hour.
pub(crate) fn claims(iss: &str, aud: &str, now: u64) -> Value {
    json!({
        "iss": iss, "aud": aud, "sub": "alice", "role": "client",
        "iat": now, "exp": now + 3600,
    })
}

/// An unsigned token (`alg: none` style): header and claims with an empty signature.
pub(crate) fn sign_raw_unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.", signing_input(header, claims))
}
