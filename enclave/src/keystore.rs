//! The keystore: P-384 signing keys by id, each owned by one identity.

use std::collections::HashMap;
use std::sync::Arc;

use p384::ecdsa::SigningKey;

/// One enclave-held key. The signing key zeroizes itself when the last reference drops.
pub struct KeyEntry {
    /// The key id.
    pub key_id: String,
    /// The identity that owns it.
    pub identity_id: String,
    /// Unix seconds at creation.
    pub created_at: u64,
    /// The public key, SPKI DER.
    pub public_key: Vec<u8>,
    /// The private key; never leaves the enclave except sealed.
    pub signing_key: SigningKey,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key_id", &self.key_id)
            .field("identity_id", &self.identity_id)
            .field("created_at", &self.created_at)
            .field("signing_key", &"[REDACTED]")
            .finish()
    }
}

/// Keys by id. Entries are shared as `Arc` so a signature can be computed outside the lock.
#[derive(Debug, Default)]
pub struct KeyStore {
    keys: HashMap<String, Arc<KeyEntry>>,
}

impl KeyStore {
    /// The key with this id.
    pub fn get(&self, key_id: &str) -> Option<&Arc<KeyEntry>> {
        self.keys.get(key_id)
    }

    /// Whether a key with this id exists.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// Adds a key; the caller checked that the id is free.
    pub fn insert(&mut self, entry: KeyEntry) {
        self.keys.insert(entry.key_id.clone(), Arc::new(entry));
    }

    /// Removes a key. Its secret is zeroized once in-flight signatures release it.
    pub fn remove(&mut self, key_id: &str) -> Option<Arc<KeyEntry>> {
        self.keys.remove(key_id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, in id order (so backups are deterministic apart from their nonce).
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        let mut v: Vec<_> = self.keys.values().cloned().collect();
        v.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        v
    }
}
