//! Attestation policy: which enclave measurements, roots and freshness a verifier accepts.
//!
//! The policy is pure data plus one pure check, [`AttestationPolicy::check`], that judges the
//! claims of a document whose signature and chain were already verified. Time is a
//! parameter; nothing here reads files or clocks. A policy file names dev roots by path; the
//! caller (an edge: the cli, a test) reads them and hands their DER bytes back with
//! [`AttestationPolicy::with_dev_root_der`].
//!
//! ```toml
//! allow_debug = false          # refuse PCR0 = all zero (debug-mode enclaves); the default
//! max_age_secs = 300           # the document may be at most this old
//! max_future_skew_secs = 30    # and at most this far ahead of the verifier's clock
//! expected_nonce = "0011…"     # hex; optional, like expected_user_data / expected_public_key
//! dev_roots = ["enclosure-data/dev-ca/root.pem"]  # extra roots; never in production files
//!
//! [[pcrs]]                     # one or more allowed measurement sets; any one may match
//! pcr0 = "…"                   # 48-byte hex; pcr0, pcr1, pcr2 required
//! pcr1 = "…"
//! pcr2 = "…"
//! pcr8 = "…"                   # optional: pcr3, pcr4, pcr8
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Length of a SHA-384 PCR value.
pub const PCR_LEN: usize = 48;

/// The PCR indices a policy may pin: image (0), kernel and boot (1), application (2), parent
/// instance IAM role (3), parent instance id (4), signing certificate (8).
pub const PINNABLE_PCRS: [u8; 6] = [0, 1, 2, 3, 4, 8];

/// Indices every allowed PCR set must name: together they identify the enclave image.
pub const REQUIRED_PCRS: [u8; 3] = [0, 1, 2];

/// Default maximum age of a document's timestamp.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// Default maximum amount a document's timestamp may be ahead of the verifier's clock.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(30);

/// One allowed measurement: PCR values that must all be present and equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSet {
    values: BTreeMap<u8, [u8; PCR_LEN]>,
}

impl PcrSet {
    /// A set pinning the enclave image: PCR0, PCR1 and PCR2.
    pub fn new(pcr0: [u8; PCR_LEN], pcr1: [u8; PCR_LEN], pcr2: [u8; PCR_LEN]) -> Self {
        PcrSet {
            values: BTreeMap::from([(0, pcr0), (1, pcr1), (2, pcr2)]),
        }
    }

    /// Also pins PCR3, PCR4 or PCR8.
    pub fn with_pcr(mut self, index: u8, value: [u8; PCR_LEN]) -> Result<Self, PolicyError> {
        if !PINNABLE_PCRS.contains(&index) {
            return Err(PolicyError::UnpinnablePcr(index));
        }
        self.values.insert(index, value);
        Ok(self)
    }

    /// The pinned values, by index.
    pub fn values(&self) -> &BTreeMap<u8, [u8; PCR_LEN]> {
        &self.values
    }

    /// Checks `pcrs` against every pinned value.
    fn check(&self, pcrs: &BTreeMap<u8, [u8; PCR_LEN]>) -> Result<(), PolicyViolation> {
        for (&index, expected) in &self.values {
            let actual = pcrs.get(&index).ok_or(PolicyViolation::PcrMissing(index))?;
            if !bool::from(actual.ct_eq(expected)) {
                return Err(PolicyViolation::PcrMismatch(index));
            }
        }
        Ok(())
    }
}

/// What a verifier accepts, beyond a valid signature and chain; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationPolicy {
    pcr_sets: Vec<PcrSet>,
    allow_debug: bool,
    max_age: Duration,
    max_future_skew: Duration,
    nonce: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
    dev_root_paths: Vec<String>,
    dev_roots: Vec<Vec<u8>>,
}

impl Default for AttestationPolicy {
    /// Any measurement except debug mode, AWS root only, 5 minutes old at most, no nonce.
    fn default() -> Self {
        AttestationPolicy {
            pcr_sets: Vec::new(),
            allow_debug: false,
            max_age: DEFAULT_MAX_AGE,
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            nonce: None,
            user_data: None,
            public_key: None,
            dev_root_paths: Vec::new(),
            dev_roots: Vec::new(),
        }
    }
}

impl AttestationPolicy {
    /// Parses a policy file (see the module documentation); dev roots stay unloaded paths.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|err| PolicyError::Toml(err.message().to_string()))?;
        let mut policy = AttestationPolicy {
            allow_debug: file.allow_debug,
            dev_root_paths: file.dev_roots,
            ..AttestationPolicy::default()
        };
        if let Some(secs) = file.max_age_secs {
            policy.max_age = Duration::from_secs(secs);
        }
        if let Some(secs) = file.max_future_skew_secs {
            policy.max_future_skew = Duration::from_secs(secs);
        }
        policy.nonce = file
            .expected_nonce
            .map(|h| parse_hex("expected_nonce", &h))
            .transpose()?;
        policy.user_data = file
            .expected_user_data
            .map(|h| parse_hex("expected_user_data", &h))
            .transpose()?;
        policy.public_key = file
            .expected_public_key
            .map(|h| parse_hex("expected_public_key", &h))
            .transpose()?;
        for set in file.pcrs {
            policy.pcr_sets.push(set.into_pcr_set()?);
        }
        Ok(policy)
    }

    /// Adds an allowed measurement; a document must match at least one added set.
    pub fn with_pcr_set(mut self, set: PcrSet) -> Self {
        self.pcr_sets.push(set);
        self
    }

    /// Accepts (`true`) or refuses (`false`, the default) debug-mode documents.
    pub fn with_allow_debug(mut self, allow: bool) -> Self {
        self.allow_debug = allow;
        self
    }

    /// Sets the maximum age of a document at verification time.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sets how far a document's timestamp may be ahead of the verification time.
    pub fn with_max_future_skew(mut self, skew: Duration) -> Self {
        self.max_future_skew = skew;
        self
    }

    /// Requires the document's nonce to equal `nonce`.
    pub fn with_nonce(mut self, nonce: &[u8]) -> Self {
        self.nonce = Some(nonce.to_vec());
        self
    }

    /// Requires the document's user_data to equal `user_data`.
    pub fn with_user_data(mut self, user_data: &[u8]) -> Self {
        self.user_data = Some(user_data.to_vec());
        self
    }

    /// Requires the document's public_key to equal `public_key`.
    pub fn with_public_key(mut self, public_key: &[u8]) -> Self {
        self.public_key = Some(public_key.to_vec());
        self
    }

    /// Trusts an extra (dev) root certificate, given as DER, besides the built-in AWS root.
    pub fn with_dev_root_der(mut self, der: Vec<u8>) -> Self {
        self.dev_roots.push(der);
        self
    }

    /// The allowed measurements; empty means any (non-debug) measurement.
    pub fn pcr_sets(&self) -> &[PcrSet] {
        &self.pcr_sets
    }

    /// Whether debug-mode documents (PCR0 all zero) are accepted.
    pub fn allow_debug(&self) -> bool {
        self.allow_debug
    }

    /// The maximum document age.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The maximum future skew of a document's timestamp.
    pub fn max_future_skew(&self) -> Duration {
        self.max_future_skew
    }

    /// The nonce a document must carry, if any.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.nonce.as_deref()
    }

    /// The user_data a document must carry, if any.
    pub fn user_data(&self) -> Option<&[u8]> {
        self.user_data.as_deref()
    }

    /// The public_key a document must carry, if any.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }

    /// Dev root certificate files the policy file names, for the caller to load.
    pub fn dev_root_paths(&self) -> &[String] {
        &self.dev_root_paths
    }

    /// Extra trusted root certificates (DER) handed in with [`Self::with_dev_root_der`].
    pub fn dev_roots(&self) -> &[Vec<u8>] {
        &self.dev_roots
    }

    /// Judges the claims of an authenticated document at time `at`.
    ///
    /// Order matters only for which error is reported: PCR0 presence and debug mode first (a
    /// debug enclave's memory is readable by its host, so nothing else about it matters),
    /// then measurement, then freshness, then the caller-bound fields.
    pub fn check(
        &self,
        claims: &AttestedClaims<'_>,
        at: SystemTime,
    ) -> Result<(), PolicyViolation> {
        // Without PCR0 nothing says which image runs, nor whether it is a debug enclave: a
        // document that omits it is refused whatever the PCR sets say.
        let pcr0 = claims.pcrs.get(&0).ok_or(PolicyViolation::PcrMissing(0))?;
        let debug = pcr0.iter().all(|&b| b == 0);
        if debug && !self.allow_debug {
            return Err(PolicyViolation::DebugMode);
        }
        if !self.pcr_sets.is_empty() {
            let mut first_failure = None;
            for set in &self.pcr_sets {
                match set.check(claims.pcrs) {
                    Ok(()) => {
                        first_failure = None;
                        break;
                    }
                    Err(err) => {
                        first_failure.get_or_insert(err);
                    }
                }
            }
            if let Some(err) = first_failure {
                return Err(err);
            }
        }
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if claims.timestamp_ms > at_ms {
            let ahead = Duration::from_millis(claims.timestamp_ms - at_ms);
            if ahead > self.max_future_skew {
                return Err(PolicyViolation::FromFuture {
                    ahead,
                    max: self.max_future_skew,
                });
            }
        } else {
            let age = Duration::from_millis(at_ms - claims.timestamp_ms);
            if age > self.max_age {
                return Err(PolicyViolation::TooOld {
                    age,
                    max: self.max_age,
                });
            }
        }
        check_field(&self.nonce, claims.nonce, PolicyViolation::NonceMismatch)?;
        check_field(
            &self.user_data,
            claims.user_data,
            PolicyViolation::UserDataMismatch,
        )?;
        check_field(
            &self.public_key,
            claims.public_key,
            PolicyViolation::PublicKeyMismatch,
        )?;
        Ok(())
    }
}

/// Compares an expected field in constant time (the length may leak; the content does not).
fn check_field(
    expected: &Option<Vec<u8>>,
    actual: Option<&[u8]>,
    violation: PolicyViolation,
) -> Result<(), PolicyViolation> {
    match (expected, actual) {
        (None, _) => Ok(()),
        (Some(expected), Some(actual)) if bool::from(expected.as_slice().ct_eq(actual)) => Ok(()),
        (Some(_), _) => Err(violation),
    }
}

/// The claims of an authenticated attestation document that a policy judges.
#[derive(Debug, Clone, Copy)]
pub struct AttestedClaims<'a> {
    /// The document's timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The document's PCRs by index.
    pub pcrs: &'a BTreeMap<u8, [u8; PCR_LEN]>,
    /// The document's nonce, if any.
    pub nonce: Option<&'a [u8]>,
    /// The document's user_data, if any.
    pub user_data: Option<&'a [u8]>,
    /// The document's public_key, if any.
    pub public_key: Option<&'a [u8]>,
}

/// Why a policy refuses an authentic attestation document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// PCR0 is all zero: the enclave runs in debug mode, where the host can read its memory.
    #[error("debug-mode enclave (PCR0 is all zero) and the policy does not allow debug")]
    DebugMode,
    /// The document lacks a PCR that the (first) allowed set pins.
    #[error("PCR{0} is pinned by the policy but absent from the document")]
    PcrMissing(u8),
    /// A pinned PCR differs: this is not the expected enclave image or configuration.
    #[error("PCR{0} differs from the value the policy allows")]
    PcrMismatch(u8),
    /// The document is older than the policy allows: possibly replayed.
    #[error("document is {age:?} old, more than the allowed {max:?}")]
    TooOld {
        /// The document's age at verification time.
        age: Duration,
        /// The policy's maximum.
        max: Duration,
    },
    /// The document's timestamp is further ahead of the verifier's clock than allowed.
    #[error("document timestamp is {ahead:?} in the future, more than the allowed {max:?}")]
    FromFuture {
        /// How far ahead the timestamp is.
        ahead: Duration,
        /// The policy's maximum skew.
        max: Duration,
    },
    /// The nonce is absent or differs from the expected one: not an answer to our challenge.
    #[error("nonce is absent or differs from the expected nonce")]
    NonceMismatch,
    /// The user_data is absent or differs from the expected value.
    #[error("user_data is absent or differs from the expected value")]
    UserDataMismatch,
    /// The public_key is absent or differs from the expected key.
    #[error("public_key is absent or differs from the expected key")]
    PublicKeyMismatch,
}

/// Why a policy file or builder input is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid policy file: {0}")]
    Toml(String),
    /// A hex field does not decode.
    #[error("{0} is not valid hex")]
    BadHex(&'static str),
    /// A PCR value is not 48 bytes.
    #[error("PCR{0} must be {PCR_LEN} bytes")]
    BadPcrLength(u8),
    /// Only PCR 0, 1, 2, 3, 4 and 8 can be pinned.
    #[error("PCR{0} cannot be pinned (allowed: 0, 1, 2, 3, 4, 8)")]
    UnpinnablePcr(u8),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow_debug: bool,
    max_age_secs: Option<u64>,
    max_future_skew_secs: Option<u64>,
    expected_nonce: Option<String>,
    expected_user_data: Option<String>,
    expected_public_key: Option<String>,
    #[serde(default)]
    dev_roots: Vec<String>,
    #[serde(default)]
    pcrs: Vec<PcrSetFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PcrSetFile {
    pcr0: String,
    pcr1: String,
    pcr2: String,
    pcr3: Option<String>,
    pcr4: Option<String>,
    pcr8: Option<String>,
}

impl PcrSetFile {
    fn into_pcr_set(self) -> Result<PcrSet, PolicyError> {
        let mut set = PcrSet::new(
            parse_pcr(0, &self.pcr0)?,
            parse_pcr(1, &self.pcr1)?,
            parse_pcr(2, &self.pcr2)?,
        );
        for (index, value) in [(3, self.pcr3), (4, self.pcr4), (8, self.pcr8)] {
            if let Some(value) = value {
                set = set.with_pcr(index, parse_pcr(index, &value)?)?;
            }
        }
        Ok(set)
    }
}

fn parse_hex(field: &'static str, text: &str) -> Result<Vec<u8>, PolicyError> {
    hex::decode(text.trim()).map_err(|_| PolicyError::BadHex(field))
}

fn parse_pcr(index: u8, text: &str) -> Result<[u8; PCR_LEN], PolicyError> {
    hex::decode(text.trim())
        .map_err(|_| PolicyError::BadPcrLength(index))?
        .try_into()
        .map_err(|_| PolicyError::BadPcrLength(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcrs(fill: u8) -> BTreeMap<u8, [u8; PCR_LEN]> {
        (0..16u8)
            .map(|i| (i, [fill.wrapping_add(i); PCR_LEN]))
            .collect()
    }

    fn claims(pcrs: &BTreeMap<u8, [u8; PCR_LEN]>) -> AttestedClaims<'_> {
        AttestedClaims {
            timestamp_ms: 1_700_000_000_000,
            pcrs,
            nonce: Some(b"nonce-1"),
            user_data: None,
            public_key: Some(b"key"),
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn default_refuses_debug_and_stale_documents() {
        let policy = AttestationPolicy::default();
        let good = pcrs(1);
        assert_eq!(policy.check(&claims(&good), at(1_700_000_000_000)), Ok(()));
        let debug = pcrs(0);
        assert_eq!(
            policy.check(&claims(&debug), at(1_700_000_000_000)),
            Err(PolicyViolation::DebugMode)
        );
        let mut no_pcr0 = good.clone();
        no_pcr0.remove(&0);
        assert_eq!(
            policy.check(&claims(&no_pcr0), at(1_700_000_000_000)),
            Err(PolicyViolation::PcrMissing(0))
        );
        let allow = policy.clone().with_allow_debug(true);
        assert_eq!(allow.check(&claims(&debug), at(1_700_000_000_000)), Ok(()));
        assert!(matches!(
            policy.check(&claims(&good), at(1_700_000_000_000 + 300_001)),
            Err(PolicyViolation::TooOld { .. })
        ));
        assert!(matches!(
            policy.check(&claims(&good), at(1_700_000_000_000 - 30_001)),
            Err(PolicyViolation::FromFuture { .. })
        ));
        assert_eq!(
            policy.check(&claims(&good), at(1_700_000_000_000 - 30_000)),
            Ok(())
        );
    }

    #[test]
    fn pcr_sets_any_one_must_match_entirely() {
        let doc = pcrs(1);
        let matching = PcrSet::new(doc[&0], doc[&1], doc[&2])
            .with_pcr(8, doc[&8])
            .unwrap();
        let other = PcrSet::new([9; PCR_LEN], doc[&1], doc[&2]);
        let policy = AttestationPolicy::default().with_pcr_set(other.clone());
        assert_eq!(
            policy.check(&claims(&doc), at(1_700_000_000_000)),
            Err(PolicyViolation::PcrMismatch(0))
        );
        let policy = policy.with_pcr_set(matching);
        assert_eq!(policy.check(&claims(&doc), at(1_700_000_000_000)), Ok(()));
        let mut short = doc.clone();
        short.remove(&2);
        let policy =
            AttestationPolicy::default().with_pcr_set(PcrSet::new(doc[&0], doc[&1], doc[&2]));
        assert_eq!(
            policy.check(&claims(&short), at(1_700_000_000_000)),
            Err(PolicyViolation::PcrMissing(2))
        );
        assert_eq!(
            PcrSet::new(doc[&0], doc[&1], doc[&2]).with_pcr(7, doc[&7]),
            Err(PolicyError::UnpinnablePcr(7))
        );
    }

    #[test]
    fn bound_fields_must_be_present_and_equal() {
        let doc = pcrs(1);
        let t = at(1_700_000_000_000);
        let p = AttestationPolicy::default();
        assert_eq!(
            p.clone().with_nonce(b"nonce-1").check(&claims(&doc), t),
            Ok(())
        );
        assert_eq!(
            p.clone().with_nonce(b"nonce-2").check(&claims(&doc), t),
            Err(PolicyViolation::NonceMismatch)
        );
        assert_eq!(
            p.clone().with_user_data(b"x").check(&claims(&doc), t),
            Err(PolicyViolation::UserDataMismatch)
        );
        assert_eq!(
            p.clone().with_public_key(b"other").check(&claims(&doc), t),
            Err(PolicyViolation::PublicKeyMismatch)
        );
        assert_eq!(p.with_public_key(b"key").check(&claims(&doc), t), Ok(()));
    }

    #[test]
    fn toml_round_trip_and_rejections() {
        let pcr = |b: u8| hex::encode([b; PCR_LEN]);
        let text = format!(
            "allow_debug = true\nmax_age_secs = 60\nmax_future_skew_secs = 5\n\
             expected_nonce = \"00ff\"\ndev_roots = [\"dev-ca/root.pem\"]\n\
             [[pcrs]]\npcr0 = \"{}\"\npcr1 = \"{}\"\npcr2 = \"{}\"\npcr8 = \"{}\"\n",
            pcr(1),
            pcr(2),
            pcr(3),
            pcr(4)
        );
        let policy = AttestationPolicy::from_toml_str(&text).unwrap();
        assert!(policy.allow_debug());
        assert_eq!(policy.max_age(), Duration::from_secs(60));
        assert_eq!(policy.max_future_skew(), Duration::from_secs(5));
        assert_eq!(policy.nonce(), Some(&[0x00, 0xff][..]));
        assert_eq!(policy.dev_root_paths(), ["dev-ca/root.pem".to_string()]);
        assert!(
            policy.dev_roots().is_empty(),
            "paths are loaded by the caller"
        );
        assert_eq!(policy.pcr_sets()[0].values()[&8], [4; PCR_LEN]);

        assert_eq!(
            AttestationPolicy::from_toml_str("").unwrap(),
            AttestationPolicy::default()
        );
        assert!(matches!(
            AttestationPolicy::from_toml_str("allow_debugg = true"),
            Err(PolicyError::Toml(_))
        ));
        let missing_pcr2 = format!("[[pcrs]]\npcr0 = \"{}\"\npcr1 = \"{}\"\n", pcr(1), pcr(2));
        assert!(matches!(
            AttestationPolicy::from_toml_str(&missing_pcr2),
            Err(PolicyError::Toml(_))
        ));
        let short = format!(
            "[[pcrs]]\npcr0 = \"00\"\npcr1 = \"{}\"\npcr2 = \"{}\"\n",
            pcr(1),
            pcr(2)
        );
        assert_eq!(
            AttestationPolicy::from_toml_str(&short),
            Err(PolicyError::BadPcrLength(0))
        );
    }
}
