//! The api side of tickets: the ticket key (kept in a 0600 file or given by environment) and
//! issuing one ticket per key operation, bound exactly as the enclave checks it.

use std::path::Path;

use enclosure_policy::ticket::{
    MAX_TICKET_TTL_SECS, TICKET_KEY_LEN, TICKET_VERSION, Ticket, TicketClaims, TicketKey,
    TicketOperation, payload_digest,
};
use rand::RngCore;

use crate::tls::write_private;

/// Environment variable that may carry the ticket key (64 hex digits) instead of a file.
pub const TICKET_KEY_ENV: &str = "ENCLOSURE_TICKET_KEY";

/// Why the ticket key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketKeyError {
    /// The key file could not be read or written.
    #[error("ticket key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file or variable does not hold exactly 32 bytes of hex.
    #[error("ticket key in {0} is not {TICKET_KEY_LEN} bytes of hex")]
    Malformed(String),
    /// The key file is readable by others than its owner.
    #[error("ticket key file {0} must not be readable by group or others (chmod 600)")]
    Permissions(String),
}

/// Loads the ticket key from the environment, else from `DATA_DIR/secrets/ticket.key`,
/// generating it there (mode 0600) at first start.
pub fn load_or_create_ticket_key(
    data_dir: &Path,
    env: Option<String>,
) -> Result<TicketKey, TicketKeyError> {
    if let Some(hex_key) = env {
        return parse(hex_key.trim(), TICKET_KEY_ENV);
    }
    let path = data_dir.join("secrets").join("ticket.key");
    let shown = path.display().to_string();
    let io = |source| TicketKeyError::Io {
        path: shown.clone(),
        source,
    };
    if path.exists() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TicketKeyError::Permissions(shown));
        }
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(io)?);
        return parse(text.trim(), &shown);
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; TICKET_KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = zeroize::Zeroizing::new(hex::encode(bytes.as_slice()));
    write_private(&path, text.as_bytes()).map_err(io)?;
    Ok(TicketKey::from_bytes(*bytes))
}

fn parse(hex_key: &str, source: &str) -> Result<TicketKey, TicketKeyError> {
    let bytes = zeroize::Zeroizing::new(
        hex::decode(hex_key).map_err(|_| TicketKeyError::Malformed(source.to_string()))?,
    );
    TicketKey::from_slice(&bytes).map_err(|_| TicketKeyError::Malformed(source.to_string()))
}

/// Issues tickets under the ticket key.
pub struct TicketIssuer {
    key: TicketKey,
    ttl_secs: u64,
}

impl std::fmt::Debug for TicketIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketIssuer")
            .field("key", &self.key)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl TicketIssuer {
    /// An issuer with a lifetime capped at the protocol maximum.
    pub fn new(key: TicketKey, ttl_secs: u64) -> Self {
        TicketIssuer {
            key,
            ttl_secs: ttl_secs.clamp(1, MAX_TICKET_TTL_SECS),
        }
    }

    /// The key, for provisioning the enclave.
    pub fn key(&self) -> &TicketKey {
        &self.key
    }

    /// A fresh ticket (random id and nonce) for one operation on one key.
    pub fn issue(
        &self,
        operation: TicketOperation,
        identity_id: &str,
        key_id: &str,
        payload: &[u8],
        now_secs: u64,
    ) -> Result<Ticket, enclosure_policy::ticket::TicketError> {
        let mut ticket_id = [0u8; 16];
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut ticket_id);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.key.issue(TicketClaims {
            version: TICKET_VERSION,
            ticket_id,
            operation,
            identity_id: identity_id.to_string(),
            key_id: key_id.to_string(),
            payload_sha384: payload_digest(payload),
            nonce,
            issued_at: now_secs,
            expires_at: now_secs + self.ttl_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_ticket_key(dir.path(), None).unwrap();
        let path = dir.path().join("secrets/ticket.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create_ticket_key(dir.path(), None).unwrap();
        assert!(a.ct_eq(&b));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_ticket_key(dir.path(), None),
            Err(TicketKeyError::Permissions(_))
        ));
    }

    #[test]
    fn the_environment_wins_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let k = load_or_create_ticket_key(dir.path(), Some("11".repeat(32))).unwrap();
        assert_eq!(k.expose_secret(), &[0x11; 32]);
        assert!(!dir.path().join("secrets").exists());
        let err = load_or_create_ticket_key(dir.path(), Some("abc".into())).unwrap_err();
        assert!(!err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn tickets_are_capped_and_unique() {
        let issuer = TicketIssuer::new(TicketKey::from_bytes([1; 32]), 3600);
        let a = issuer
            .issue(TicketOperation::Sign, "i", "k", b"m", 100)
            .unwrap();
        let b = issuer
            .issue(TicketOperation::Sign, "i", "k", b"m", 100)
            .unwrap();
        assert_eq!(
            a.claims.expires_at - a.claims.issued_at,
            MAX_TICKET_TTL_SECS
        );
        assert_ne!(a.claims.nonce, b.claims.nonce);
        assert_ne!(a.claims.ticket_id, b.claims.ticket_id);
    }
}
