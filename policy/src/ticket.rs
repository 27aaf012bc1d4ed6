//! Signing tickets: the one-time authorisation the api issues and the enclave checks.
//!
//! A ticket binds one key operation to one identity, one key and one payload digest, for at
//! most [`MAX_TICKET_TTL_SECS`]. Its MAC is HMAC-SHA256 under the ticket key over a canonical,
//! length-prefixed encoding of every field, so no two distinct tickets share a MAC input.
//!
//! Check order matters: the version and the MAC come first, so a forged ticket learns nothing
//! about which of its other fields would have been accepted.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The only ticket format version this code issues and accepts.
pub const TICKET_VERSION: u8 = 1;
/// The longest a ticket may live, from issue to expiry.
pub const MAX_TICKET_TTL_SECS: u64 = 60;
/// How far in the future `issued_at` may be, to absorb clock skew between api and enclave.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5;
/// The longest identity or key id a ticket may carry.
pub const MAX_ID_LEN: usize = 64;
/// Bytes in a ticket key.
pub const TICKET_KEY_LEN: usize = 32;

/// Domain separation for the MAC input, so a ticket MAC can never be confused with any other
/// HMAC made under the same key.
const MAC_DOMAIN: &[u8] = b"enclosure/ticket/v1\0";

/// The key operation a ticket authorises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TicketOperation {
    /// Create a new key under the ticket's key id and identity.
    GenerateKey,
    /// Sign the message whose SHA-384 the ticket carries.
    Sign,
    /// Zeroize and forget the key.
    DestroyKey,
}

impl TicketOperation {
    /// The byte that stands for this operation in the canonical encoding.
    fn code(self) -> u8 {
        match self {
            TicketOperation::GenerateKey => 1,
            TicketOperation::Sign => 2,
            TicketOperation::DestroyKey => 3,
        }
    }

    /// A stable lower-case name, for logs and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketOperation::GenerateKey => "generate_key",
            TicketOperation::Sign => "sign",
            TicketOperation::DestroyKey => "destroy_key",
        }
    }
}

/// The fields a ticket binds; everything except the MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Format version, [`TICKET_VERSION`].
    pub version: u8,
    /// Unique ticket id chosen by the api; the api marks it used exactly once.
    #[serde(with = "serde_bytes")]
    pub ticket_id: [u8; 16],
    /// The one operation this ticket allows.
    pub operation: TicketOperation,
    /// The identity that owns the key.
    pub identity_id: String,
    /// The key the operation acts on (for `GenerateKey`, the id the new key will get).
    pub key_id: String,
    /// SHA-384 of the operation's payload (the message for `Sign`, empty otherwise).
    #[serde(with = "serde_bytes")]
    pub payload_sha384: [u8; 48],
    /// 128 random bits; the enclave refuses a nonce it has already seen.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
    /// Unix seconds at issue.
    pub issued_at: u64,
    /// Unix seconds after which the ticket is dead.
    pub expires_at: u64,
}

impl TicketClaims {
    /// The canonical byte string the MAC covers: fixed order, fixed widths, lengths before
    /// variable fields.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAC_DOMAIN.len() + 128 + 2 * MAX_ID_LEN);
        out.extend_from_slice(MAC_DOMAIN);
        out.push(self.version);
        out.extend_from_slice(&self.ticket_id);
        out.push(self.operation.code());
        put_str(&mut out, &self.identity_id);
        put_str(&mut out, &self.key_id);
        out.extend_from_slice(&self.payload_sha384);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Ids are checked to be at most MAX_ID_LEN bytes before a ticket is issued or accepted;
    // the saturation only matters for a malformed ticket, whose MAC then cannot match.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A ticket: its claims and their MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// What the ticket authorises.
    pub claims: TicketClaims,
    /// HMAC-SHA256 of [`TicketClaims::canonical_bytes`] under the ticket key.
    #[serde(with = "serde_bytes")]
    pub mac: [u8; 32],
}

/// The HMAC key shared by the api (which issues tickets) and the enclave (which checks them).
///
/// Zeroized on drop; `Debug` shows only a fingerprint.
#[derive(Clone)]
pub struct TicketKey(Zeroizing<[u8; TICKET_KEY_LEN]>);

impl TicketKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; TICKET_KEY_LEN]) -> Self {
        TicketKey(Zeroizing::new(bytes))
    }

    /// Wraps a slice, refusing any length but [`TICKET_KEY_LEN`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, TicketError> {
        let arr: [u8; TICKET_KEY_LEN] = bytes.try_into().map_err(|_| TicketError::BadKeyLength)?;
        Ok(Self::from_bytes(arr))
    }

    /// The raw key, for sealing into a backup or provisioning; handle with care.
    pub fn expose_secret(&self) -> &[u8; TICKET_KEY_LEN] {
        &self.0
    }

    /// A short public fingerprint (first 8 bytes of SHA-256 of the key), safe to log.
    pub fn fingerprint(&self) -> [u8; 8] {
        let digest = Sha256::digest(self.0.as_slice());
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&digest[..8]);
        fp
    }

    /// Whether two keys are equal, in constant time.
    pub fn ct_eq(&self, other: &TicketKey) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }

    fn mac_of(&self, claims: &TicketClaims) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&claims.canonical_bytes());
        mac
    }

    /// Issues a ticket over `claims`, after checking that they are well formed.
    pub fn issue(&self, claims: TicketClaims) -> Result<Ticket, TicketError> {
        check_shape(&claims)?;
        let mac = self.mac_of(&claims).finalize().into_bytes().into();
        Ok(Ticket { claims, mac })
    }
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKey(fingerprint={})", hex8(&self.fingerprint()))
    }
}

fn hex8(bytes: &[u8; 8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-384 of a payload, as tickets carry it.
pub fn payload_digest(payload: &[u8]) -> [u8; 48] {
    Sha384::digest(payload).into()
}

/// What the checker expects a ticket to authorise.
#[derive(Clone, Copy, Debug)]
pub struct TicketExpectation<'a> {
    /// The operation being performed.
    pub operation: TicketOperation,
    /// The key being acted on.
    pub key_id: &'a str,
    /// The identity that owns the key, when the checker knows it (it does for existing keys).
    pub identity_id: Option<&'a str>,
    /// The payload the operation is about to process.
    pub payload: &'a [u8],
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The ticket's version is not one this code knows; refusing is the only safe reading.
    #[error("unsupported ticket version {0}")]
    UnsupportedVersion(u8),
    /// The MAC does not match: the ticket was forged, altered, or made under another key.
    #[error("ticket MAC does not verify")]
    BadMac,
    /// The ticket's expiry has passed.
    #[error("ticket expired")]
    Expired,
    /// The ticket claims to be issued further in the future than the allowed clock skew.
    #[error("ticket issued in the future")]
    NotYetValid,
    /// The ticket lives longer than the maximum TTL, or expires before it is issued.
    #[error("ticket lifetime is over the maximum of {MAX_TICKET_TTL_SECS} s or negative")]
    BadLifetime,
    /// The ticket is for a different operation.
    #[error("ticket is for another operation")]
    WrongOperation,
    /// The ticket is for a different key.
    #[error("ticket is for another key")]
    WrongKey,
    /// The ticket is for a different identity than the key belongs to.
    #[error("ticket is for another identity")]
    WrongIdentity,
    /// The ticket is for a different payload.
    #[error("ticket is for another payload")]
    WrongPayload,
    /// An id is empty or longer than [`MAX_ID_LEN`].
    #[error("ticket id field is empty or too long")]
    BadId,
    /// A ticket key of the wrong length was offered.
    #[error("ticket key must be {TICKET_KEY_LEN} bytes")]
    BadKeyLength,
}

fn check_shape(claims: &TicketClaims) -> Result<(), TicketError> {
    if claims.version != TICKET_VERSION {
        return Err(TicketError::UnsupportedVersion(claims.version));
    }
    for id in [&claims.identity_id, &claims.key_id] {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(TicketError::BadId);
        }
    }
    if claims.expires_at <= claims.issued_at
        || claims.expires_at - claims.issued_at > MAX_TICKET_TTL_SECS
    {
        return Err(TicketError::BadLifetime);
    }
    Ok(())
}

/// Checks a ticket against the key, the expectation and the current time (Unix seconds).
///
/// Replay is not checked here: the enclave's replay cache and the api's `used_at` do that.
pub fn verify_ticket<'t>(
    ticket: &'t Ticket,
    key: &TicketKey,
    expect: &TicketExpectation<'_>,
    now: u64,
) -> Result<&'t TicketClaims, TicketError> {
    let claims = &ticket.claims;
    if claims.version != TICKET_VERSION {
        return Err(TicketError::UnsupportedVersion(claims.version));
    }
    // verify_slice compares in constant time.
    key.mac_of(claims)
        .verify_slice(&ticket.mac)
        .map_err(|_| TicketError::BadMac)?;
    check_shape(claims)?;
    if now >= claims.expires_at {
        return Err(TicketError::Expired);
    }
    if claims.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(TicketError::NotYetValid);
    }
    if claims.operation != expect.operation {
        return Err(TicketError::WrongOperation);
    }
    if !bool::from(claims.key_id.as_bytes().ct_eq(expect.key_id.as_bytes())) {
        return Err(TicketError::WrongKey);
    }
    if let Some(identity) = expect.identity_id
        && !bool::from(claims.identity_id.as_bytes().ct_eq(identity.as_bytes()))
    {
        return Err(TicketError::WrongIdentity);
    }
    let digest = payload_digest(expect.payload);
    if !bool::from(claims.payload_sha384.ct_eq(&digest)) {
        return Err(TicketError::WrongPayload);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn key() -> TicketKey {
        TicketKey::from_bytes([7u8; 32])
    }

    fn claims(op: TicketOperation, payload: &[u8]) -> TicketClaims {
        TicketClaims {
            version: TICKET_VERSION,
            ticket_id: [1; 16],
            operation: op,
            identity_id: "id-alice".into(),
            key_id: "key-1".into(),
            payload_sha384: payload_digest(payload),
            nonce: [9; 16],
            issued_at: NOW,
            expires_at: NOW + 30,
        }
    }

    fn expect<'a>(op: TicketOperation, payload: &'a [u8]) -> TicketExpectation<'a> {
        TicketExpectation {
            operation: op,
            key_id: "key-1",
            identity_id: Some("id-alice"),
            payload,
        }
    }

    #[test]
    fn a_valid_ticket_passes() {
        let t = key().issue(claims(TicketOperation::Sign, b"hi")).unwrap();
        let got =
            verify_ticket(&t, &key(), &expect(TicketOperation::Sign, b"hi"), NOW + 1).unwrap();
        assert_eq!(got.key_id, "key-1");
    }

    #[test]
    fn each_binding_is_enforced() {
        let t = key().issue(claims(TicketOperation::Sign, b"hi")).unwrap();
        let e = expect(TicketOperation::Sign, b"hi");
        let cases: Vec<(TicketExpectation, TicketError)> = vec![
            (
                TicketExpectation {
                    operation: TicketOperation::DestroyKey,
                    ..e
                },
                TicketError::WrongOperation,
            ),
            (
                TicketExpectation {
                    key_id: "key-2",
                    ..e
                },
                TicketError::WrongKey,
            ),
            (
                TicketExpectation {
                    identity_id: Some("id-bob"),
                    ..e
                },
                TicketError::WrongIdentity,
            ),
            (
                TicketExpectation {
                    payload: b"other",
                    ..e
                },
                TicketError::WrongPayload,
            ),
        ];
        for (exp, err) in cases {
            assert_eq!(verify_ticket(&t, &key(), &exp, NOW).unwrap_err(), err);
        }
    }

    #[test]
    fn time_rules() {
        let t = key().issue(claims(TicketOperation::Sign, b"")).unwrap();
        let e = expect(TicketOperation::Sign, b"");
        assert_eq!(
            verify_ticket(&t, &key(), &e, NOW + 30),
            Err(TicketError::Expired)
        );
        assert_eq!(
            verify_ticket(&t, &key(), &e, NOW - MAX_CLOCK_SKEW_SECS - 1),
            Err(TicketError::NotYetValid)
        );
        assert!(verify_ticket(&t, &key(), &e, NOW - MAX_CLOCK_SKEW_SECS).is_ok());
        let mut long = claims(TicketOperation::Sign, b"");
        long.expires_at = NOW + MAX_TICKET_TTL_SECS + 1;
        assert_eq!(
            key().issue(long.clone()).unwrap_err(),
            TicketError::BadLifetime
        );
        // A long-lived ticket with a valid MAC (made by a buggy or hostile issuer) is refused too.
        let mac = key().mac_of(&long).finalize().into_bytes().into();
        let forged_ttl = Ticket { claims: long, mac };
        assert_eq!(
            verify_ticket(&forged_ttl, &key(), &e, NOW),
            Err(TicketError::BadLifetime)
        );
    }

    #[test]
    fn any_changed_field_breaks_the_mac() {
        let t = key().issue(claims(TicketOperation::Sign, b"")).unwrap();
        let e = expect(TicketOperation::Sign, b"");
        let mut altered = t.clone();
        altered.claims.nonce[0] ^= 1;
        assert_eq!(
            verify_ticket(&altered, &key(), &e, NOW),
            Err(TicketError::BadMac)
        );
        let mut altered = t.clone();
        altered.claims.expires_at += 1;
        assert_eq!(
            verify_ticket(&altered, &key(), &e, NOW),
            Err(TicketError::BadMac)
        );
        let other = TicketKey::from_bytes([8; 32]);
        assert_eq!(verify_ticket(&t, &other, &e, NOW), Err(TicketError::BadMac));
        let mut v2 = t.clone();
        v2.claims.version = 2;
        assert_eq!(
            verify_ticket(&v2, &key(), &e, NOW),
            Err(TicketError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn id_boundaries_cannot_be_shifted() {
        // "ab"+"c" and "a"+"bc" must not share a MAC input.
        let mut a = claims(TicketOperation::Sign, b"");
        a.identity_id = "ab".into();
        a.key_id = "c".into();
        let mut b = a.clone();
        b.identity_id = "a".into();
        b.key_id = "bc".into();
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let shown = format!("{:?}", TicketKey::from_bytes([0xab; 32]));
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
