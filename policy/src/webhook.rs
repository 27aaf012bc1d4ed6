//! Payment-provider webhook signatures, in the format Stripe documents for `Stripe-Signature`.
//!
//! The header is `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`, and the MAC input is the
//! timestamp, a full stop and the raw request body: `"{t}.{body}"`. Several `v1` entries appear
//! while the sender rotates its secret; the receiver may also hold several secrets while it
//! rotates, so a header verifies when any `v1` matches under any configured secret.
//!
//! Check order: the header is parsed strictly first (one `t`, at least one `v1`, every `v1`
//! valid hex, bounded length), then the signature, then the timestamp. Checking the signature
//! before the clock means [`WebhookError::Stale`] and [`WebhookError::FutureTimestamp`] are only
//! ever reported for genuine signatures, so they are evidence of a replay or a skewed clock
//! rather than noise from forgeries. The timestamp is inside the MAC, so an attacker cannot
//! refresh an old delivery; the tolerance bounds how long a captured one can be replayed, and
//! the receiver's dedupe by event id covers the window itself.
//!
//! Nothing here reads a clock: `now_secs` is a parameter.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The HTTP header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// The default tolerance between the signed timestamp and the receiver's clock, either way.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// The longest header accepted; a real one with a few `v1` entries is under 400 bytes.
pub const MAX_HEADER_LEN: usize = 2048;
/// Bytes in an HMAC-SHA256 output.
pub const SIGNATURE_LEN: usize = 32;

/// Why a webhook signature was refused. Nothing here carries a secret or a computed MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No secret is configured: refusing is the only safe answer.
    #[error("no webhook secret is configured")]
    NoSecrets,
    /// The header is longer than [`MAX_HEADER_LEN`]: not a real provider header.
    #[error("the signature header is longer than {MAX_HEADER_LEN} bytes")]
    HeaderTooLong,
    /// An element is not `key=value`.
    #[error("the signature header has an element without '='")]
    MalformedElement,
    /// There is no `t=` element.
    #[error("the signature header has no timestamp (t=)")]
    MissingTimestamp,
    /// There is more than one `t=` element, so which one was signed is ambiguous.
    #[error("the signature header has more than one timestamp (t=)")]
    DuplicateTimestamp,
    /// `t=` is not a decimal number of seconds.
    #[error("the signature header's timestamp is not a number")]
    BadTimestamp,
    /// There is no `v1=` element.
    #[error("the signature header has no v1 signature")]
    MissingSignature,
    /// A `v1=` value is not hexadecimal.
    #[error("a v1 signature is not hexadecimal")]
    BadHex,
    /// No `v1` matches the body under any configured secret: forged, altered or wrong secret.
    #[error("no v1 signature matches the body")]
    BadSignature,
    /// Genuinely signed, but longer ago than the tolerance: possibly a replay.
    #[error("the signed timestamp is {age_secs} s old, beyond the tolerance")]
    Stale {
        /// How old the timestamp is.
        age_secs: u64,
    },
    /// Genuinely signed, but further in the future than the tolerance: a skewed clock.
    #[error("the signed timestamp is {ahead_secs} s in the future, beyond the tolerance")]
    FutureTimestamp {
        /// How far ahead the timestamp is.
        ahead_secs: u64,
    },
}

/// The MAC of `"{t}.{body}"` under `secret`.
fn mac(secret: &[u8], t: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps it total anyway.
    let mut m = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Stripe-Signature` header value for `body` sent at `t` (unix seconds) under `secret`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

/// A parsed header: the one timestamp and every `v1` candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The signed timestamp, unix seconds.
    pub timestamp: u64,
    /// Every `v1` value, decoded; lengths are not checked here (a wrong length never matches).
    pub signatures: Vec<Vec<u8>>,
}

/// Parses a header strictly. Unknown schemes (`v0=`, future `v2=`) are ignored, as the
/// provider's documentation asks, but must still be well-formed `key=value` elements.
pub fn parse_header(header: &str) -> Result<SignatureHeader, WebhookError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(WebhookError::HeaderTooLong);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        let (key, value) = element
            .split_once('=')
            .ok_or(WebhookError::MalformedElement)?;
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(WebhookError::DuplicateTimestamp);
                }
                let value = value.trim();
                // u64::from_str accepts a leading '+'; a provider never sends one.
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(WebhookError::BadTimestamp);
                }
                timestamp = Some(value.parse().map_err(|_| WebhookError::BadTimestamp)?);
            }
            "v1" => {
                signatures.push(hex::decode(value.trim()).map_err(|_| WebhookError::BadHex)?);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::MissingTimestamp)?;
    if signatures.is_empty() {
        return Err(WebhookError::MissingSignature);
    }
    Ok(SignatureHeader {
        timestamp,
        signatures,
    })
}

/// Verifies a webhook: returns the signed timestamp when some `v1` in `header` is the MAC of
/// `body` under one of `secrets`, and that timestamp is within `tolerance_secs` of `now_secs`
/// either way.
///
/// Every candidate is compared with every secret, each comparison length-checked and constant
/// time (`verify_slice`), without stopping early, so timing reveals neither which secret nor
/// which candidate matched.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<u64, WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::NoSecrets);
    }
    let parsed = parse_header(header)?;
    let t = parsed.timestamp;
    let mut matched = false;
    for secret in secrets {
        let expected = mac(secret, t, body);
        for candidate in &parsed.signatures {
            // verify_slice consumes the MAC, so each comparison gets its own clone.
            matched |= expected.clone().verify_slice(candidate).is_ok();
        }
    }
    if !matched {
        return Err(WebhookError::BadSignature);
    }
    if now_secs > t && now_secs - t > tolerance_secs {
        return Err(WebhookError::Stale {
            age_secs: now_secs - t,
        });
    }
    if t > now_secs && t - now_secs > tolerance_secs {
        return Err(WebhookError::FutureTimestamp {
            ahead_secs: t - now_secs,
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret_one";
    const OTHER: &[u8] = b"whsec_test_secret_two";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment.succeeded"}"#;
    const NOW: u64 = 1_780_000_000;
    const TOL: u64 = DEFAULT_TOLERANCE_SECS;

    fn v1(secret: &[u8], t: u64, body: &[u8]) -> String {
        sign(secret, t, body)
            .split_once(",v1=")
            .map(|(_, s)| s.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn sign_matches_an_independent_hmac() {
        // The MAC input is literally "{t}.{body}", computed here without the module's helper.
        let mut m = HmacSha256::new_from_slice(SECRET).unwrap();
        m.update(format!("{NOW}.").as_bytes());
        m.update(BODY);
        let expected = hex::encode(m.finalize().into_bytes());
        assert_eq!(sign(SECRET, NOW, BODY), format!("t={NOW},v1={expected}"));
    }

    #[test]
    fn known_vector() {
        // Computed independently: printf '1700000000.{"id":"evt_1"}' |
        //   openssl dgst -sha256 -hmac whsec_vector
        assert_eq!(
            sign(b"whsec_vector", 1_700_000_000, br#"{"id":"evt_1"}"#),
            "t=1700000000,v1=c6014fd4b390b4bc9c887a309c78277b7c4c562fbe61a9e713bfc5da054789da"
        );
    }

    #[test]
    fn genuine_signature_verifies() {
        let h = sign(SECRET, NOW, BODY);
        assert_eq!(verify(&h, BODY, &[SECRET], NOW, TOL), Ok(NOW));
    }

    #[test]
    fn altered_body_is_refused() {
        let h = sign(SECRET, NOW, BODY);
        let altered = br#"{"id":"evt_1","type":"payment.failed"}"#;
        assert_eq!(
            verify(&h, altered, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn forged_signature_is_refused() {
        let h = sign(b"attacker's guess", NOW, BODY);
        assert_eq!(
            verify(&h, BODY, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
        let zeros = format!("t={NOW},v1={}", "00".repeat(32));
        assert_eq!(
            verify(&zeros, BODY, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn changed_timestamp_breaks_the_signature() {
        // Refreshing t on a captured delivery must not work: t is inside the MAC.
        let sig = v1(SECRET, NOW - 1000, BODY);
        let h = format!("t={NOW},v1={sig}");
        assert_eq!(
            verify(&h, BODY, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn truncated_or_extended_signatures_never_match() {
        let sig = v1(SECRET, NOW, BODY);
        for bad in [&sig[..62], &sig[..2], &format!("{sig}00")[..]] {
            let h = format!("t={NOW},v1={bad}");
            assert_eq!(
                verify(&h, BODY, &[SECRET], NOW, TOL),
                Err(WebhookError::BadSignature),
                "{bad}"
            );
        }
        let empty = format!("t={NOW},v1=");
        assert_eq!(
            verify(&empty, BODY, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn tolerance_applies_both_ways_inclusive() {
        for t in [NOW - TOL, NOW + TOL, NOW] {
            assert_eq!(
                verify(&sign(SECRET, t, BODY), BODY, &[SECRET], NOW, TOL),
                Ok(t)
            );
        }
        assert_eq!(
            verify(
                &sign(SECRET, NOW - TOL - 1, BODY),
                BODY,
                &[SECRET],
                NOW,
                TOL
            ),
            Err(WebhookError::Stale { age_secs: TOL + 1 })
        );
        assert_eq!(
            verify(
                &sign(SECRET, NOW + TOL + 1, BODY),
                BODY,
                &[SECRET],
                NOW,
                TOL
            ),
            Err(WebhookError::FutureTimestamp {
                ahead_secs: TOL + 1
            })
        );
        // Extremes do not overflow.
        assert!(matches!(
            verify(&sign(SECRET, 0, BODY), BODY, &[SECRET], u64::MAX, TOL),
            Err(WebhookError::Stale { .. })
        ));
        assert!(matches!(
            verify(&sign(SECRET, u64::MAX, BODY), BODY, &[SECRET], 0, TOL),
            Err(WebhookError::FutureTimestamp { .. })
        ));
    }

    #[test]
    fn stale_forgery_reports_the_forgery() {
        let h = sign(OTHER, NOW - 10_000, BODY);
        assert_eq!(
            verify(&h, BODY, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn any_configured_secret_passes_during_rotation() {
        let old = sign(SECRET, NOW, BODY);
        let new = sign(OTHER, NOW, BODY);
        for h in [&old, &new] {
            assert_eq!(verify(h, BODY, &[OTHER, SECRET], NOW, TOL), Ok(NOW));
        }
        // Once the old secret is retired, its signatures stop passing.
        assert_eq!(
            verify(&old, BODY, &[OTHER], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn every_v1_candidate_is_tried() {
        let good = v1(OTHER, NOW, BODY);
        let stale_secret = v1(SECRET, NOW, BODY);
        let h = format!("t={NOW},v1={stale_secret},v0=ignored,v1={good}");
        assert_eq!(verify(&h, BODY, &[OTHER], NOW, TOL), Ok(NOW));
        let h = format!("v1={good},t={NOW}");
        assert_eq!(verify(&h, BODY, &[OTHER], NOW, TOL), Ok(NOW));
    }

    #[test]
    fn no_secrets_fails_closed() {
        let h = sign(SECRET, NOW, BODY);
        assert_eq!(
            verify(&h, BODY, &[], NOW, TOL),
            Err(WebhookError::NoSecrets)
        );
    }

    #[test]
    fn empty_secret_is_just_another_key() {
        // An empty configured secret must not make every header pass.
        let h = sign(b"", NOW, BODY);
        assert_eq!(
            verify(&h, BODY, &[SECRET], NOW, TOL),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_have_their_own_errors() {
        let sig = v1(SECRET, NOW, BODY);
        let cases: Vec<(String, WebhookError)> = vec![
            (format!("v1={sig}"), WebhookError::MissingTimestamp),
            (format!("t={NOW}"), WebhookError::MissingSignature),
            (format!("t={NOW},v0={sig}"), WebhookError::MissingSignature),
            (format!("t={NOW},v1=zz{sig}"), WebhookError::BadHex),
            (format!("t={NOW},v1=abc"), WebhookError::BadHex),
            (
                format!("t={NOW},t={NOW},v1={sig}"),
                WebhookError::DuplicateTimestamp,
            ),
            (format!("t=,v1={sig}"), WebhookError::BadTimestamp),
            (format!("t=-5,v1={sig}"), WebhookError::BadTimestamp),
            (format!("t=+5,v1={sig}"), WebhookError::BadTimestamp),
            (format!("t=1e9,v1={sig}"), WebhookError::BadTimestamp),
            (
                format!("t=99999999999999999999999,v1={sig}"),
                WebhookError::BadTimestamp,
            ),
            (format!("t={NOW},{sig}"), WebhookError::MalformedElement),
            (String::new(), WebhookError::MalformedElement),
            (
                format!("t={NOW},{}", format!("v1={sig},").repeat(40)),
                WebhookError::HeaderTooLong,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(verify(&h, BODY, &[SECRET], NOW, TOL), Err(want), "{h}");
        }
    }

    #[test]
    fn whitespace_around_elements_is_tolerated() {
        let sig = v1(SECRET, NOW, BODY);
        let h = format!(" t={NOW} , v1={sig} ");
        assert_eq!(verify(&h, BODY, &[SECRET], NOW, TOL), Ok(NOW));
    }

    #[test]
    fn errors_never_show_the_expected_mac() {
        let sig = v1(SECRET, NOW, BODY);
        let h = format!("t={NOW},v1={}", "ab".repeat(32));
        let err = verify(&h, BODY, &[SECRET], NOW, TOL).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(&sig));
    }
}
