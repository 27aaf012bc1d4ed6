//! The ticket nonce replay cache: bounded in entries and in time.
//!
//! Each nonce is remembered until its ticket expires, because after that the ticket is refused
//! as expired anyway. When the cache is full of live nonces, a new ticket is refused: forgetting
//! a live nonce to make room would let that ticket be replayed.

use std::collections::{BTreeSet, HashMap};

/// Why a nonce was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The nonce was seen before and its ticket has not yet expired.
    #[error("ticket nonce already used")]
    Replayed,
    /// Every slot holds a live nonce; try again once some tickets expire.
    #[error("replay cache is full")]
    Full,
}

/// Remembers ticket nonces until their tickets expire.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    expiry_of: HashMap<[u8; 16], u64>,
    by_expiry: BTreeSet<(u64, [u8; 16])>,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` live nonces.
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity,
            expiry_of: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Live nonces currently held.
    pub fn len(&self) -> usize {
        self.expiry_of.len()
    }

    /// Whether the cache holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.expiry_of.is_empty()
    }

    /// Records `nonce`, valid until `expires_at` (Unix seconds), or refuses it.
    ///
    /// Call this only after the ticket's MAC and expiry have been checked, so forged tickets
    /// cannot fill the cache.
    pub fn admit(&mut self, nonce: [u8; 16], expires_at: u64, now: u64) -> Result<(), ReplayError> {
        self.evict_expired(now);
        if self.expiry_of.contains_key(&nonce) {
            return Err(ReplayError::Replayed);
        }
        if self.expiry_of.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        self.expiry_of.insert(nonce, expires_at);
        self.by_expiry.insert((expires_at, nonce));
        Ok(())
    }

    fn evict_expired(&mut self, now: u64) {
        while let Some(&(exp, nonce)) = self.by_expiry.first() {
            if exp > now {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry_of.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_until_its_ticket_expires() {
        let mut c = ReplayCache::new(4);
        c.admit([1; 16], 100, 50).unwrap();
        assert_eq!(c.admit([1; 16], 100, 99), Err(ReplayError::Replayed));
        // At expiry the ticket itself is dead, so the slot is freed.
        c.admit([1; 16], 160, 100).unwrap();
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let mut c = ReplayCache::new(2);
        c.admit([1; 16], 100, 0).unwrap();
        c.admit([2; 16], 110, 0).unwrap();
        assert_eq!(c.admit([3; 16], 120, 10), Err(ReplayError::Full));
        // The old nonces are still remembered.
        assert_eq!(c.admit([1; 16], 100, 10), Err(ReplayError::Replayed));
        // Once one expires there is room again.
        c.admit([3; 16], 120, 100).unwrap();
        assert_eq!(c.len(), 2);
    }
}
