//! The plaintext inside a sealed backup: the ticket key and every key, CBOR-encoded.
//!
//! The plaintext exists only briefly, in zeroizing buffers, between the keystore and the sealer.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The backup plaintext format version.
pub const BACKUP_VERSION: u8 = 1;

/// One key in a backup.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct BackupKey {
    /// The key id.
    pub key_id: String,
    /// The owning identity.
    pub identity_id: String,
    /// Unix seconds at creation.
    pub created_at: u64,
    /// The 48-byte private scalar.
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
}

/// Everything a backup restores.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct BackupContents {
    /// Format version, [`BACKUP_VERSION`].
    pub version: u8,
    /// The ticket key, when one was provisioned.
    #[serde(with = "serde_bytes")]
    pub ticket_key: Option<Vec<u8>>,
    /// The keys.
    pub keys: Vec<BackupKey>,
    /// The keystore generation captured.
    pub generation: u64,
}

impl std::fmt::Debug for BackupContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BackupContents {{ keys: {}, secrets: [REDACTED] }}",
            self.keys.len()
        )
    }
}

impl BackupContents {
    /// Encodes into a zeroizing buffer.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, serde_cbor::Error> {
        serde_cbor::to_vec(self).map(Zeroizing::new)
    }

    /// Decodes, refusing other versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let c: BackupContents = serde_cbor::from_slice(bytes).map_err(|_| "malformed backup")?;
        if c.version != BACKUP_VERSION {
            return Err("unsupported backup version");
        }
        Ok(c)
    }
}
