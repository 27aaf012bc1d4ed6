//! [`EnclosureClient`]: the verifying HTTPS client.

use std::time::SystemTime;

use base64::Engine;
use enclosure_attestation::{VerifiedDocument, Verifier};
use enclosure_policy::attestation::AttestationPolicy;
use enclosure_protocol::keycert::KeyCertificate;
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::pkcs8::DecodePublicKey;
use rand::RngCore;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The HTTPS exchange failed (connection, TLS, timeout).
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The api answered with a problem document.
    #[error("api refused ({status} {code}): {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable problem code.
        code: String,
        /// Explanation.
        detail: String,
    },
    /// The api answered something this client cannot read.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The attestation document did not verify under the policy.
    #[error("attestation refused: {0}")]
    Attestation(#[from] enclosure_attestation::VerifyError),
    /// The verified document binds no instance key.
    #[error("the attestation document binds no instance public key")]
    NoInstanceKey,
    /// A key certificate does not verify under the attested instance key, or says something
    /// other than the api claims.
    #[error("key certificate refused: {0}")]
    KeyCertificate(String),
    /// A signature does not verify under the key's certified public key.
    #[error("signature from key {0} does not verify")]
    BadSignature(String),
    /// The TLS root given could not be read.
    #[error("TLS root certificate: {0}")]
    TlsRoot(String),
}

/// How to reach and what to trust.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The api's base URL, e.g. `https://127.0.0.1:8443`.
    pub base_url: String,
    /// An extra TLS root (PEM), e.g. the dev stack's self-signed certificate.
    pub tls_root_pem: Option<Vec<u8>>,
    /// A bearer token for authenticated calls.
    pub token: Option<String>,
    /// The attestation policy; the client adds its own fresh nonce.
    pub policy: AttestationPolicy,
}

/// An identity.
#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    /// Identity id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A key whose certificate verified under the attested instance key.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    /// Key id.
    pub key_id: String,
    /// Owning identity.
    pub identity_id: String,
    /// SPKI DER public key, as certified by the enclave.
    pub public_key_der: Vec<u8>,
    /// Creation time (Unix seconds) the enclave certified.
    pub created_at: u64,
}

/// A signature that verified under its key.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    /// The key that signed.
    pub key_id: String,
    /// DER ECDSA P-384/SHA-384 signature.
    pub signature_der: Vec<u8>,
    /// The ticket that authorised it.
    pub ticket_id: String,
}

#[derive(Deserialize)]
struct Problem {
    code: String,
    detail: String,
}

#[derive(Deserialize)]
struct AttestationAnswer {
    document: String,
}

#[derive(Deserialize)]
struct KeyAnswer {
    key_id: String,
    identity_id: String,
    public_key_pem: String,
    key_certificate: String,
}

#[derive(Deserialize)]
struct SignatureAnswer {
    key_id: String,
    signature: String,
    ticket_id: String,
}

fn b64d(s: &str) -> Result<Vec<u8>, ClientError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| ClientError::Unexpected("a field is not base64".into()))
}

/// A client bound to one attested enclave instance.
pub struct EnclosureClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    policy: AttestationPolicy,
    verifier: Verifier,
    document: VerifiedDocument,
    instance_key: Vec<u8>,
}

impl std::fmt::Debug for EnclosureClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclosureClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl EnclosureClient {
    /// Connects: fetches and verifies a fresh attestation, and learns the instance key.
    pub async fn connect(options: ClientOptions) -> Result<Self, ClientError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &options.tls_root_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::TlsRoot(e.to_string()))?;
            builder = builder.tls_certs_only([cert]);
        }
        let http = builder.build()?;
        let base = options.base_url.trim_end_matches('/').to_string();
        let verifier = Verifier::new();
        let (document, instance_key) = attest(&http, &base, &options.policy, &verifier).await?;
        Ok(EnclosureClient {
            http,
            base,
            token: options.token,
            policy: options.policy,
            verifier,
            document,
            instance_key,
        })
    }

    /// The verified attestation document this client trusts.
    pub fn attestation(&self) -> &VerifiedDocument {
        &self.document
    }

    /// The attested instance public key (SPKI DER).
    pub fn instance_public_key(&self) -> &[u8] {
        &self.instance_key
    }

    /// Attests again (after an enclave restart the instance key changes).
    pub async fn reattest(&mut self) -> Result<(), ClientError> {
        let (document, key) = attest(&self.http, &self.base, &self.policy, &self.verifier).await?;
        self.document = document;
        self.instance_key = key;
        Ok(())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, ClientError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if method != reqwest::Method::GET {
            req = req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await?;
            return Err(match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => ClientError::Api {
                    status: status.as_u16(),
                    code: p.code,
                    detail: p.detail,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "unknown".into(),
                    detail: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(resp.json::<T>().await?))
    }

    async fn send_some<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        self.send(method, path, body)
            .await?
            .ok_or_else(|| ClientError::Unexpected("empty answer".into()))
    }

    /// Creates an identity.
    pub async fn create_identity(&self, name: &str) -> Result<Identity, ClientError> {
        self.send_some(
            reqwest::Method::POST,
            "/v1/identities",
            Some(serde_json::json!({ "name": name })),
        )
        .await
    }

    /// Lists the caller's identities.
    pub async fn list_identities(&self) -> Result<Vec<Identity>, ClientError> {
        self.send_some(reqwest::Method::GET, "/v1/identities", None)
            .await
    }

    /// Creates a key and verifies its certificate.
    pub async fn create_key(&self, identity_id: &str) -> Result<VerifiedKey, ClientError> {
        let a: KeyAnswer = self
            .send_some(
                reqwest::Method::POST,
                &format!("/v1/identities/{identity_id}/keys"),
                None,
            )
            .await?;
        self.verify_key(a)
    }

    /// Fetches a key and verifies its certificate.
    pub async fn get_key(&self, key_id: &str) -> Result<VerifiedKey, ClientError> {
        let a: KeyAnswer = self
            .send_some(reqwest::Method::GET, &format!("/v1/keys/{key_id}"), None)
            .await?;
        self.verify_key(a)
    }

    fn verify_key(&self, a: KeyAnswer) -> Result<VerifiedKey, ClientError> {
        verify_key_answer(&self.instance_key, a)
    }

    /// Signs a message with a verified key and verifies the signature.
    pub async fn sign(
        &self,
        key: &VerifiedKey,
        message: &[u8],
    ) -> Result<VerifiedSignature, ClientError> {
        let a: SignatureAnswer = self
            .send_some(
                reqwest::Method::POST,
                &format!("/v1/keys/{}/sign", key.key_id),
                Some(serde_json::json!({
                    "message": base64::engine::general_purpose::STANDARD.encode(message)
                })),
            )
            .await?;
        if a.key_id != key.key_id {
            return Err(ClientError::BadSignature(a.key_id));
        }
        let der = b64d(&a.signature)?;
        verify_signature(key, message, &der)?;
        Ok(VerifiedSignature {
            key_id: a.key_id,
            signature_der: der,
            ticket_id: a.ticket_id,
        })
    }

    /// Destroys a key.
    pub async fn destroy_key(&self, key_id: &str) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(reqwest::Method::DELETE, &format!("/v1/keys/{key_id}"), None)
            .await
            .map(|_| ())
    }

    /// Reads audit entries after a sequence number.
    pub async fn audit(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send_some(
            reqwest::Method::GET,
            &format!("/v1/audit?after={after}&limit={limit}"),
            None,
        )
        .await
    }
}

/// Checks a key the api returned: its certificate must verify under the attested instance key,
/// and every field the api states must equal what the enclave certified.
fn verify_key_answer(instance_key: &[u8], a: KeyAnswer) -> Result<VerifiedKey, ClientError> {
    let cert = KeyCertificate::from_bytes(&b64d(&a.key_certificate)?)
        .map_err(|e| ClientError::KeyCertificate(e.to_string()))?;
    let body = cert
        .verify(instance_key)
        .map_err(|e| ClientError::KeyCertificate(e.to_string()))?;
    let pem_key = VerifyingKey::from_public_key_pem(&a.public_key_pem)
        .map_err(|_| ClientError::KeyCertificate("public_key_pem is not P-384".into()))?;
    let certified = VerifyingKey::from_public_key_der(&body.public_key)
        .map_err(|_| ClientError::KeyCertificate("certified key is not P-384".into()))?;
    if body.key_id != a.key_id || body.identity_id != a.identity_id || pem_key != certified {
        return Err(ClientError::KeyCertificate(
            "the api's key fields differ from the certified ones".into(),
        ));
    }
    Ok(VerifiedKey {
        key_id: body.key_id,
        identity_id: body.identity_id,
        public_key_der: body.public_key,
        created_at: body.created_at,
    })
}

/// Verifies a DER signature over `message` with a verified key.
pub fn verify_signature(key: &VerifiedKey, message: &[u8], der: &[u8]) -> Result<(), ClientError> {
    let vk = VerifyingKey::from_public_key_der(&key.public_key_der)
        .map_err(|_| ClientError::BadSignature(key.key_id.clone()))?;
    let sig =
        Signature::from_der(der).map_err(|_| ClientError::BadSignature(key.key_id.clone()))?;
    vk.verify(message, &sig)
        .map_err(|_| ClientError::BadSignature(key.key_id.clone()))
}

async fn attest(
    http: &reqwest::Client,
    base: &str,
    policy: &AttestationPolicy,
    verifier: &Verifier,
) -> Result<(VerifiedDocument, Vec<u8>), ClientError> {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let resp = http
        .get(format!("{base}/v1/attestation"))
        .query(&[("nonce", hex::encode(nonce))])
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let p: Problem = resp
            .json()
            .await
            .map_err(|_| ClientError::Unexpected("attestation failed".into()))?;
        return Err(ClientError::Api {
            status,
            code: p.code,
            detail: p.detail,
        });
    }
    let answer: AttestationAnswer = resp.json().await?;
    let doc = b64d(&answer.document)?;
    // The policy gets this request's nonce, so a replayed document is refused.
    let policy = policy.clone().with_nonce(&nonce);
    let verified = verifier.verify(&doc, &policy, SystemTime::now())?;
    let key = verified
        .public_key()
        .ok_or(ClientError::NoInstanceKey)?
        .to_vec();
    Ok((verified, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclosure_protocol::keycert::{KEYCERT_VERSION, KeyCertificateBody};
    use p384::ecdsa::SigningKey;
    use p384::ecdsa::signature::Signer;
    use p384::pkcs8::{EncodePublicKey, LineEnding};

    fn spki(k: &SigningKey) -> Vec<u8> {
        k.verifying_key().to_public_key_der().unwrap().into_vec()
    }

    fn pem(k: &SigningKey) -> String {
        k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap()
    }

    fn answer(instance: &SigningKey, key: &SigningKey, key_id: &str, identity: &str) -> KeyAnswer {
        let cert = KeyCertificate::issue(
            &KeyCertificateBody {
                version: KEYCERT_VERSION,
                key_id: key_id.into(),
                identity_id: identity.into(),
                public_key: spki(key),
                created_at: 1,
            },
            instance,
        )
        .unwrap();
        KeyAnswer {
            key_id: key_id.into(),
            identity_id: identity.into(),
            public_key_pem: pem(key),
            key_certificate: base64::engine::general_purpose::STANDARD
                .encode(cert.to_bytes().unwrap()),
        }
    }

    #[test]
    fn a_host_cannot_swap_keys_or_fields() {
        let instance = SigningKey::random(&mut rand::rngs::OsRng);
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let other = SigningKey::random(&mut rand::rngs::OsRng);
        let ik = spki(&instance);
        let ok = verify_key_answer(&ik, answer(&instance, &key, "k1", "i1")).unwrap();
        assert_eq!(ok.public_key_der, spki(&key));

        // Certified by some other key than the attested instance key.
        let forged = answer(&other, &key, "k1", "i1");
        assert!(matches!(
            verify_key_answer(&ik, forged),
            Err(ClientError::KeyCertificate(_))
        ));
        // A genuine certificate, but the api shows another public key, key id or identity.
        let mut swapped = answer(&instance, &key, "k1", "i1");
        swapped.public_key_pem = pem(&other);
        assert!(verify_key_answer(&ik, swapped).is_err());
        let mut renamed = answer(&instance, &key, "k1", "i1");
        renamed.key_id = "k2".into();
        assert!(verify_key_answer(&ik, renamed).is_err());
        let mut moved = answer(&instance, &key, "k1", "i1");
        moved.identity_id = "i2".into();
        assert!(verify_key_answer(&ik, moved).is_err());
    }

    #[test]
    fn signatures_by_any_other_key_are_refused() {
        let instance = SigningKey::random(&mut rand::rngs::OsRng);
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let other = SigningKey::random(&mut rand::rngs::OsRng);
        let vk = verify_key_answer(&spki(&instance), answer(&instance, &key, "k", "i")).unwrap();
        let good: Signature = key.sign(b"msg");
        verify_signature(&vk, b"msg", good.to_der().as_bytes()).unwrap();
        let bad: Signature = other.sign(b"msg");
        assert!(matches!(
            verify_signature(&vk, b"msg", bad.to_der().as_bytes()),
            Err(ClientError::BadSignature(_))
        ));
        assert!(verify_signature(&vk, b"other", good.to_der().as_bytes()).is_err());
        assert!(verify_signature(&vk, b"msg", b"not DER").is_err());
    }
}
