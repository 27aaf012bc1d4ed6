//! A small cache of verified tokens, so a caller who sends the same token again skips the
//! ECDSA verification (the dearest step of authenticating a request).
//!
//! Entries are keyed by SHA-256 of the token, so the cache never holds a token itself. An
//! entry answers only for times at which verifying again would give the same answer: from
//! the moment it was verified (so nbf and iat checks still hold) until the earlier of the
//! token's expiry with leeway and [`CACHE_TTL_SECS`] later. The signature and the other claims
//! do not depend on time; the key set does, so a key reload empties the cache.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::Caller;

/// Longest an entry is trusted without verifying again, in seconds.
pub const CACHE_TTL_SECS: u64 = 60;
/// Most entries kept; a full cache first drops stale entries, then everything.
const CACHE_CAPACITY: usize = 4096;

/// One verified token's answer and the seconds `[from, until)` it holds for.
struct Entry {
    caller: Caller,
    from: u64,
    until: u64,
}

/// Verified tokens by SHA-256 of their text.
#[derive(Default)]
pub(super) struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// The cache key of `token`.
pub(super) fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedTokens {
    /// The caller a token with `digest` was verified as, if that answer holds at `now`.
    pub(super) fn get(&self, digest: &[u8; 32], now: u64) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(digest)
            .filter(|e| e.from <= now && now < e.until)
            .map(|e| e.caller.clone())
    }

    /// Remembers that the token with `digest` verified as `caller` at `now` and stays valid
    /// until `expires` (exclusive, leeway included).
    pub(super) fn put(&self, digest: [u8; 32], caller: Caller, now: u64, expires: u64) {
        let until = expires.min(now.saturating_add(CACHE_TTL_SECS));
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, e| now < e.until);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                caller,
                from: now,
                until,
            },
        );
    }

    /// Forgets every entry (the key set changed).
    pub(super) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn alice() -> Caller {
        Caller {
            sub: "alice".into(),
            role: Role::Client,
        }
    }

    #[test]
    fn an_entry_holds_only_between_its_verification_and_its_end() {
        let cache = VerifiedTokens::default();
        let d = token_digest("a.b.c");
        cache.put(d, alice(), 100, 130);
        assert_eq!(cache.get(&d, 99), None, "not before it was verified");
        assert_eq!(cache.get(&d, 100), Some(alice()));
        assert_eq!(cache.get(&d, 129), Some(alice()));
        assert_eq!(cache.get(&d, 130), None, "not from expiry on");
        assert_eq!(cache.get(&token_digest("a.b.d"), 110), None);
        cache.put(d, alice(), 200, 10_000);
        assert_eq!(cache.get(&d, 200 + CACHE_TTL_SECS - 1), Some(alice()));
        assert_eq!(cache.get(&d, 200 + CACHE_TTL_SECS), None, "at most the TTL");
        cache.clear();
        assert_eq!(cache.get(&d, 201), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedTokens::default();
        for i in 0..(CACHE_CAPACITY + 10) {
            cache.put(token_digest(&i.to_string()), alice(), 100, 130);
        }
        let len = cache
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(len <= CACHE_CAPACITY, "{len}");
    }
}
