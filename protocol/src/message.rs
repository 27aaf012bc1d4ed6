//! Request and response messages, and their versioned CBOR envelope.

use enclosure_policy::ticket::Ticket;
use serde::{Deserialize, Serialize};

use crate::{ProtocolError, Result, SecretBytes};

/// The protocol version this code speaks. A peer sending any other is refused.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest attestation nonce or user data the enclave accepts (NSM's own limit is 512 bytes).
pub const MAX_ATTEST_FIELD: usize = 512;

/// A request to the enclave.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Liveness and identity of the enclave instance.
    Health,
    /// An attestation document binding the instance key, with caller nonce and user data.
    Attest {
        /// Caller freshness value, at most [`MAX_ATTEST_FIELD`] bytes.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// Caller data to bind, at most [`MAX_ATTEST_FIELD`] bytes.
        #[serde(with = "serde_bytes")]
        user_data: Vec<u8>,
    },
    /// Stores the ticket HMAC key. Idempotent for the same key; refused for a different one.
    Provision {
        /// The 32-byte ticket key.
        ticket_key: SecretBytes,
    },
    /// Creates a P-384 key under the ticket's key id and identity.
    GenerateKey {
        /// A `GenerateKey` ticket over the empty payload.
        ticket: Ticket,
    },
    /// Signs `message` with ECDSA P-384 / SHA-384.
    Sign {
        /// The key to sign with; the ticket must name the same key.
        key_id: String,
        /// A `Sign` ticket over this message.
        ticket: Ticket,
        /// The message to sign.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Zeroizes and forgets a key.
    DestroyKey {
        /// The key to destroy; the ticket must name the same key.
        key_id: String,
        /// A `DestroyKey` ticket over the empty payload.
        ticket: Ticket,
    },
    /// A fresh key certificate for an existing key, signed by this instance's key (public
    /// information, so no ticket): after a restart, old certificates name an old instance key.
    CertifyKey {
        /// The key.
        key_id: String,
    },
    /// Seals every key and the ticket key into one blob.
    ExportBackup,
    /// Restores keys and the ticket key from a sealed blob.
    ImportBackup {
        /// A blob made by `ExportBackup`.
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    },
}

impl Request {
    /// A stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Health => "health",
            Request::Attest { .. } => "attest",
            Request::Provision { .. } => "provision",
            Request::GenerateKey { .. } => "generate_key",
            Request::Sign { .. } => "sign",
            Request::DestroyKey { .. } => "destroy_key",
            Request::CertifyKey { .. } => "certify_key",
            Request::ExportBackup => "export_backup",
            Request::ImportBackup { .. } => "import_backup",
        }
    }
}

/// A successful answer from the enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Health`].
    Health {
        /// The enclave's protocol version.
        protocol_version: u16,
        /// "nitro" or "dev".
        mode: String,
        /// The instance public key (P-384, SPKI DER), made at boot.
        #[serde(with = "serde_bytes")]
        instance_public_key: Vec<u8>,
        /// Keys held.
        key_count: u64,
        /// Seconds since the enclave started.
        uptime_secs: u64,
        /// Whether a ticket key has been provisioned.
        provisioned: bool,
    },
    /// Answer to [`Request::Attest`]: a COSE_Sign1 attestation document.
    Attestation {
        /// The document bytes.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
    },
    /// Answer to [`Request::Provision`].
    Provisioned {
        /// True when this exact key was already provisioned (nothing changed).
        already: bool,
    },
    /// Answer to [`Request::GenerateKey`].
    KeyGenerated {
        /// The new key's id (the ticket's key id).
        key_id: String,
        /// The public key, SPKI DER.
        #[serde(with = "serde_bytes")]
        public_key: Vec<u8>,
        /// A [`crate::keycert::KeyCertificate`] signed by the instance key, CBOR-encoded.
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
    },
    /// Answer to [`Request::Sign`]: an ECDSA P-384/SHA-384 signature, DER.
    Signature {
        /// The DER signature.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Answer to [`Request::DestroyKey`].
    KeyDestroyed,
    /// Answer to [`Request::CertifyKey`].
    KeyCertified {
        /// A [`crate::keycert::KeyCertificate`], CBOR-encoded.
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
    },
    /// Answer to [`Request::ExportBackup`].
    Backup {
        /// The sealed blob.
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        /// Keys inside it.
        key_count: u64,
        /// The keystore generation it captures; it grows with every change, so the newest
        /// backup is the one with the highest generation, whoever stored it last.
        generation: u64,
    },
    /// Answer to [`Request::ImportBackup`].
    BackupImported {
        /// Keys held after the import.
        key_count: u64,
        /// Keys the import added (0 when the same blob is imported again).
        added: u64,
    },
}

/// Stable error codes; the api maps these to HTTP problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EnclaveErrorCode {
    /// The request could not be decoded or a field is out of range.
    BadRequest,
    /// The envelope's protocol version is not spoken here.
    UnsupportedVersion,
    /// A key operation arrived before any ticket key was provisioned.
    NotProvisioned,
    /// A different ticket key is already provisioned.
    ProvisionConflict,
    /// The ticket MAC does not verify.
    TicketBadMac,
    /// The ticket has expired.
    TicketExpired,
    /// The ticket was issued in the future, beyond the allowed skew.
    TicketNotYetValid,
    /// The ticket's lifetime exceeds the maximum TTL.
    TicketBadLifetime,
    /// The ticket is for another operation.
    TicketWrongOperation,
    /// The ticket is for another key.
    TicketWrongKey,
    /// The ticket is for another identity.
    TicketWrongIdentity,
    /// The ticket is for another payload.
    TicketWrongPayload,
    /// The ticket's version or ids are malformed.
    TicketMalformed,
    /// The ticket's nonce was already used.
    TicketReplayed,
    /// The replay cache is full of live nonces; retry shortly.
    ReplayCacheFull,
    /// No such key.
    UnknownKey,
    /// A key with that id already exists.
    KeyExists,
    /// The backup blob is malformed, altered, or sealed for another measurement.
    BackupRejected,
    /// The backup holds a different ticket key than the one provisioned.
    BackupConflict,
    /// The attester failed.
    AttestationFailed,
    /// Something inside the enclave failed; details stay inside.
    Internal,
    /// The enclave cannot be reached (reported by the host proxy).
    Unavailable,
}

/// An error answer: a stable code and a human message free of secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    pub code: EnclaveErrorCode,
    /// A readable explanation; never contains secret material.
    pub message: String,
}

impl ErrorBody {
    /// Makes an error body.
    pub fn new(code: EnclaveErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// A request with its version and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Caller-chosen id, echoed in the response.
    pub request_id: u64,
    /// The request.
    pub request: Request,
}

/// A response with its version and the id of the request it answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// Protocol version.
    pub version: u16,
    /// The id of the request answered (0 when the request could not be decoded).
    pub request_id: u64,
    /// The outcome.
    pub result: std::result::Result<Response, ErrorBody>,
}

/// Just the header fields, decoded first so an unknown version is reported as such rather
/// than as a decoding failure of a body whose shape may have changed.
#[derive(Deserialize)]
struct Header {
    version: u16,
    #[serde(default)]
    request_id: u64,
}

impl RequestEnvelope {
    /// Wraps a request in the current version.
    pub fn new(request_id: u64, request: Request) -> Self {
        RequestEnvelope {
            version: PROTOCOL_VERSION,
            request_id,
            request,
        }
    }

    /// CBOR-encodes the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_cbor::to_vec(self).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Decodes an envelope. On failure, returns the request id when it could be read, so the
    /// error answer can still be matched to its request.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, (u64, ProtocolError)> {
        let header: Header = serde_cbor::from_slice(bytes)
            .map_err(|e| (0, ProtocolError::Malformed(e.to_string())))?;
        if header.version != PROTOCOL_VERSION {
            return Err((
                header.request_id,
                ProtocolError::UnsupportedVersion(header.version),
            ));
        }
        serde_cbor::from_slice(bytes)
            .map_err(|e| (header.request_id, ProtocolError::Malformed(e.to_string())))
    }
}

impl ResponseEnvelope {
    /// CBOR-encodes the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_cbor::to_vec(self).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Decodes an envelope, refusing other protocol versions.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let header: Header =
            serde_cbor::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if header.version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(header.version));
        }
        serde_cbor::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let env = RequestEnvelope::new(
            42,
            Request::Attest {
                nonce: vec![1, 2],
                user_data: vec![],
            },
        );
        let back = RequestEnvelope::decode(&env.encode().unwrap()).unwrap();
        assert_eq!(back.request_id, 42);
        assert!(matches!(back.request, Request::Attest { nonce, .. } if nonce == vec![1, 2]));
    }

    #[test]
    fn unknown_versions_are_refused_with_their_id() {
        let mut env = RequestEnvelope::new(7, Request::Health);
        env.version = 9;
        let (id, err) = RequestEnvelope::decode(&env.encode().unwrap()).unwrap_err();
        assert_eq!(id, 7);
        assert!(matches!(err, ProtocolError::UnsupportedVersion(9)));
    }

    #[test]
    fn garbage_is_malformed() {
        let (_, err) = RequestEnvelope::decode(b"\xff\x00garbage").unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed(_)));
    }

    #[test]
    fn provisioning_debug_hides_the_key() {
        let req = Request::Provision {
            ticket_key: SecretBytes::new(vec![0x5a; 32]),
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("90"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
