//! Sealing: authenticated encryption of backups, bound to the enclave measurement.
//!
//! Blob layout: `"ENCB" ‖ format version (1) ‖ sealer kind (1) ‖ nonce (12) ‖ AES-256-GCM
//! ciphertext and tag`. The AAD is the header plus the 48-byte measurement (PCR0 on Nitro), so a
//! blob opens only in an enclave with the same measurement, and a changed header byte is caught.
//!
//! [`Sealer`] is the seam for a production sealer (for example AWS KMS with an attestation-bound
//! key policy); [`DevSealer`] uses a fixed key compiled into the binary and must never run in
//! production, which [`crate::service::Enclave::new`] enforces.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"ENCB";
/// The sealed-blob format version.
pub const SEAL_FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 12;
const TAG_LEN: usize = 16;

/// Which kind of sealer made a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealerKind {
    /// The fixed-key development sealer.
    Dev,
    /// A production sealer (KMS or equivalent).
    Production,
}

impl SealerKind {
    fn code(self) -> u8 {
        match self {
            SealerKind::Dev => 1,
            SealerKind::Production => 2,
        }
    }
}

/// Why sealing or unsealing failed. Messages never include key or plaintext bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealingError {
    /// The blob is shorter than a header and a tag.
    #[error("sealed blob is truncated")]
    Truncated,
    /// The magic bytes are wrong: this is not a sealed blob.
    #[error("not a sealed blob")]
    BadMagic,
    /// The blob uses a format version this code does not read.
    #[error("unsupported sealed blob version {0}")]
    UnsupportedVersion(u8),
    /// The blob was made by another kind of sealer.
    #[error("blob was sealed by another kind of sealer")]
    WrongSealer,
    /// Authentication failed: the blob was altered, or sealed under another key or measurement.
    #[error("sealed blob does not authenticate (altered, or sealed for another measurement)")]
    Unauthentic,
    /// Encryption failed.
    #[error("sealing failed")]
    SealFailed,
}

/// Seals and unseals backups for one enclave measurement.
pub trait Sealer: Send + Sync + 'static {
    /// Which kind of sealer this is.
    fn kind(&self) -> SealerKind;
    /// Encrypts `plaintext`, binding the measurement.
    fn seal(&self, plaintext: &[u8], measurement: &[u8; 48]) -> Result<Vec<u8>, SealingError>;
    /// Decrypts a blob sealed for the same measurement.
    fn unseal(
        &self,
        blob: &[u8],
        measurement: &[u8; 48],
    ) -> Result<Zeroizing<Vec<u8>>, SealingError>;
}

/// The development sealer: AES-256-GCM under a fixed, publicly known key.
///
/// Anyone with this source code can open its blobs; it exists so the local stack can survive
/// enclave restarts. Production mode refuses it.
pub struct DevSealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for DevSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevSealer { key: [REDACTED, dev-only] }")
    }
}

impl Default for DevSealer {
    fn default() -> Self {
        Self::new()
    }
}

impl DevSealer {
    /// The dev sealer with its fixed key.
    pub fn new() -> Self {
        let key = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(
            b"enclosure dev sealing key - NOT FOR PRODUCTION",
        )));
        DevSealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_slice())),
        }
    }
}

fn aad(header: &[u8], measurement: &[u8; 48]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 48);
    aad.extend_from_slice(header);
    aad.extend_from_slice(measurement);
    aad
}

impl Sealer for DevSealer {
    fn kind(&self) -> SealerKind {
        SealerKind::Dev
    }

    fn seal(&self, plaintext: &[u8], measurement: &[u8; 48]) -> Result<Vec<u8>, SealingError> {
        // A fresh random 96-bit nonce per blob; blobs are few, so collisions are negligible.
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(SEAL_FORMAT_VERSION);
        out.push(self.kind().code());
        out.extend_from_slice(&nonce);
        let aad = aad(&out[..6], measurement);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealingError::SealFailed)?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(
        &self,
        blob: &[u8],
        measurement: &[u8; 48],
    ) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        if blob.len() < HEADER_LEN + TAG_LEN {
            return Err(SealingError::Truncated);
        }
        if &blob[..4] != MAGIC {
            return Err(SealingError::BadMagic);
        }
        if blob[4] != SEAL_FORMAT_VERSION {
            return Err(SealingError::UnsupportedVersion(blob[4]));
        }
        if blob[5] != self.kind().code() {
            return Err(SealingError::WrongSealer);
        }
        let nonce = Nonce::from_slice(&blob[6..HEADER_LEN]);
        let aad = aad(&blob[..6], measurement);
        self.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealingError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_every_byte_matters() {
        let s = DevSealer::new();
        let m = [3u8; 48];
        let blob = s.seal(b"secret keys", &m).unwrap();
        assert_eq!(s.unseal(&blob, &m).unwrap().as_slice(), b"secret keys");
        // Fresh nonce each time.
        assert_ne!(blob, s.seal(b"secret keys", &m).unwrap());
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                s.unseal(&bad, &m).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        assert_eq!(s.unseal(&blob, &[4u8; 48]), Err(SealingError::Unauthentic));
        assert_eq!(s.unseal(&blob[..10], &m), Err(SealingError::Truncated));
    }
}
