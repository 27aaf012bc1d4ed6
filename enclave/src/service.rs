//! The enclave's request handlers.
//!
//! Every handler validates completely before it changes anything, so a refused request leaves
//! no trace in the keystore, the replay cache or the ticket key (invariant 3).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use enclosure_attestation::{AttestationRequest, Attester, AttesterMode};
use enclosure_policy::replay::{ReplayCache, ReplayError};
use enclosure_policy::ticket::{
    Ticket, TicketError, TicketExpectation, TicketKey, TicketOperation, verify_ticket,
};
use enclosure_protocol::keycert::{KEYCERT_VERSION, KeyCertificate, KeyCertificateBody};
use enclosure_protocol::message::MAX_ATTEST_FIELD;
use enclosure_protocol::{
    EnclaveErrorCode as Code, ErrorBody, PROTOCOL_VERSION, Request, Response,
};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::EncodePublicKey;
use zeroize::Zeroizing;

use crate::backup::{BACKUP_VERSION, BackupContents, BackupKey};
use crate::clock::Clock;
use crate::keystore::{KeyEntry, KeyStore};
use crate::sealing::{Sealer, SealerKind};

/// Default bound on live ticket nonces remembered by the replay cache.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// How the enclave is put together.
pub struct EnclaveConfig {
    /// The attester (NSM on Nitro, the dev attester elsewhere).
    pub attester: Arc<dyn Attester>,
    /// The backup sealer, if any; without one, backups are refused.
    pub sealer: Option<Arc<dyn Sealer>>,
    /// Wall-clock time for ticket expiry.
    pub clock: Arc<dyn Clock>,
    /// Bound on live nonces in the replay cache.
    pub replay_capacity: usize,
}

/// Why the enclave refused to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Production (Nitro) mode was combined with the dev sealer, which anyone can open.
    #[error("the dev sealer is refused in nitro mode")]
    DevSealerInProduction,
    /// The attester could not supply entropy for the instance key.
    #[error("could not create the instance key: {0}")]
    InstanceKey(String),
}

struct State {
    ticket_key: Option<TicketKey>,
    keys: KeyStore,
    replay: ReplayCache,
    /// Bumped by every change to the keys or the ticket key, and carried in backups.
    generation: u64,
}

/// The enclave: instance identity plus guarded mutable state.
pub struct Enclave {
    attester: Arc<dyn Attester>,
    sealer: Option<Arc<dyn Sealer>>,
    clock: Arc<dyn Clock>,
    instance_key: SigningKey,
    instance_public_key: Vec<u8>,
    measurement: [u8; 48],
    started: Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("mode", &self.attester.mode())
            .field("instance_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

fn err(code: Code, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

fn ticket_error(e: TicketError) -> ErrorBody {
    let code = match e {
        TicketError::BadMac => Code::TicketBadMac,
        TicketError::Expired => Code::TicketExpired,
        TicketError::NotYetValid => Code::TicketNotYetValid,
        TicketError::BadLifetime => Code::TicketBadLifetime,
        TicketError::WrongOperation => Code::TicketWrongOperation,
        TicketError::WrongKey => Code::TicketWrongKey,
        TicketError::WrongIdentity => Code::TicketWrongIdentity,
        TicketError::WrongPayload => Code::TicketWrongPayload,
        _ => Code::TicketMalformed,
    };
    err(code, e.to_string())
}

/// Makes a P-384 key from attester entropy (NSM GetRandom on Nitro).
fn random_signing_key(attester: &dyn Attester) -> Result<SigningKey, String> {
    for _ in 0..8 {
        let mut bytes = Zeroizing::new([0u8; 48]);
        attester
            .fill_random(bytes.as_mut_slice())
            .map_err(|e| e.to_string())?;
        // Rejection sampling: a scalar outside [1, n) is retried, never reduced (no bias).
        if let Ok(k) = SigningKey::from_slice(bytes.as_slice()) {
            return Ok(k);
        }
    }
    Err("entropy source keeps producing invalid scalars".into())
}

fn spki(key: &SigningKey) -> Result<Vec<u8>, ErrorBody> {
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.into_vec())
        .map_err(|_| err(Code::Internal, "could not encode public key"))
}

impl Enclave {
    /// Starts an enclave instance with a fresh instance key.
    pub fn new(config: EnclaveConfig) -> Result<Self, StartError> {
        let production = config.attester.mode() == AttesterMode::Nitro;
        if production
            && config
                .sealer
                .as_ref()
                .is_some_and(|s| s.kind() == SealerKind::Dev)
        {
            return Err(StartError::DevSealerInProduction);
        }
        let instance_key =
            random_signing_key(config.attester.as_ref()).map_err(StartError::InstanceKey)?;
        let instance_public_key =
            spki(&instance_key).map_err(|e| StartError::InstanceKey(e.message))?;
        Ok(Enclave {
            measurement: config.attester.measurement(),
            attester: config.attester,
            sealer: config.sealer,
            clock: config.clock,
            instance_key,
            instance_public_key,
            started: Instant::now(),
            state: Mutex::new(State {
                ticket_key: None,
                keys: KeyStore::default(),
                replay: ReplayCache::new(config.replay_capacity),
                generation: 0,
            }),
        })
    }

    /// The instance public key, SPKI DER.
    pub fn instance_public_key(&self) -> &[u8] {
        &self.instance_public_key
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated (every handler
        // validates before mutating), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles one request.
    pub fn handle(&self, request: Request) -> Result<Response, ErrorBody> {
        match request {
            Request::Health => Ok(self.health()),
            Request::Attest { nonce, user_data } => self.attest(&nonce, &user_data),
            Request::Provision { ticket_key } => self.provision(ticket_key.expose()),
            Request::GenerateKey { ticket } => self.generate_key(&ticket),
            Request::Sign {
                key_id,
                ticket,
                message,
            } => self.sign(&key_id, &ticket, &message),
            Request::DestroyKey { key_id, ticket } => self.destroy_key(&key_id, &ticket),
            Request::CertifyKey { key_id } => self.certify_key(&key_id),
            Request::ExportBackup => self.export_backup(),
            Request::ImportBackup { blob } => self.import_backup(&blob),
            _ => Err(err(Code::BadRequest, "unsupported request")),
        }
    }

    fn health(&self) -> Response {
        let st = self.state();
        Response::Health {
            protocol_version: PROTOCOL_VERSION,
            mode: match self.attester.mode() {
                AttesterMode::Nitro => "nitro".into(),
                AttesterMode::Dev => "dev".into(),
            },
            instance_public_key: self.instance_public_key.clone(),
            key_count: st.keys.len() as u64,
            uptime_secs: self.started.elapsed().as_secs(),
            provisioned: st.ticket_key.is_some(),
        }
    }

    fn attest(&self, nonce: &[u8], user_data: &[u8]) -> Result<Response, ErrorBody> {
        if nonce.len() > MAX_ATTEST_FIELD || user_data.len() > MAX_ATTEST_FIELD {
            return Err(err(
                Code::BadRequest,
                format!("nonce and user_data are limited to {MAX_ATTEST_FIELD} bytes"),
            ));
        }
        let req = AttestationRequest {
            public_key: Some(&self.instance_public_key),
            user_data: (!user_data.is_empty()).then_some(user_data),
            nonce: (!nonce.is_empty()).then_some(nonce),
        };
        let document = self
            .attester
            .attest(&req)
            .map_err(|e| err(Code::AttestationFailed, e.to_string()))?;
        Ok(Response::Attestation { document })
    }

    fn provision(&self, key: &[u8]) -> Result<Response, ErrorBody> {
        let key = TicketKey::from_slice(key).map_err(|e| err(Code::BadRequest, e.to_string()))?;
        let mut st = self.state();
        match &st.ticket_key {
            Some(existing) if existing.ct_eq(&key) => Ok(Response::Provisioned { already: true }),
            Some(_) => Err(err(
                Code::ProvisionConflict,
                "a different ticket key is already provisioned",
            )),
            None => {
                st.ticket_key = Some(key);
                st.generation += 1;
                Ok(Response::Provisioned { already: false })
            }
        }
    }

    /// Checks a ticket's MAC, lifetime and bindings, without spending it.
    fn check(
        &self,
        st: &State,
        ticket: &Ticket,
        expect: &TicketExpectation<'_>,
    ) -> Result<(), ErrorBody> {
        let key = st
            .ticket_key
            .as_ref()
            .ok_or_else(|| err(Code::NotProvisioned, "no ticket key has been provisioned"))?;
        verify_ticket(ticket, key, expect, self.clock.now_unix()).map_err(ticket_error)?;
        Ok(())
    }

    /// Spends a checked ticket's nonce. Called last, so a refused request never consumes a
    /// replay slot.
    fn spend(&self, st: &mut State, ticket: &Ticket) -> Result<(), ErrorBody> {
        let claims = &ticket.claims;
        st.replay
            .admit(claims.nonce, claims.expires_at, self.clock.now_unix())
            .map_err(|e| match e {
                ReplayError::Replayed => err(Code::TicketReplayed, e.to_string()),
                _ => err(Code::ReplayCacheFull, e.to_string()),
            })
    }

    fn generate_key(&self, ticket: &Ticket) -> Result<Response, ErrorBody> {
        let key_id = ticket.claims.key_id.as_str();
        let identity_id = ticket.claims.identity_id.as_str();
        // Key generation needs no lock; do it first, then check and insert atomically.
        let signing_key = random_signing_key(self.attester.as_ref())
            .map_err(|e| err(Code::Internal, format!("entropy: {e}")))?;
        let public_key = spki(&signing_key)?;
        let mut st = self.state();
        let expect = TicketExpectation {
            operation: TicketOperation::GenerateKey,
            key_id,
            identity_id: None,
            payload: &[],
        };
        // The ticket is checked before the id, so unauthenticated callers cannot probe ids.
        self.check(&st, ticket, &expect)?;
        if st.keys.contains(key_id) {
            return Err(err(Code::KeyExists, "a key with this id already exists"));
        }
        let created_at = self.clock.now_unix();
        let certificate = self.certificate(key_id, identity_id, &public_key, created_at)?;
        self.spend(&mut st, ticket)?;
        st.keys.insert(KeyEntry {
            key_id: key_id.to_string(),
            identity_id: identity_id.to_string(),
            created_at,
            public_key: public_key.clone(),
            signing_key,
        });
        st.generation += 1;
        Ok(Response::KeyGenerated {
            key_id: key_id.to_string(),
            public_key,
            certificate,
        })
    }

    /// Checks and spends a ticket for an existing key and returns that key, with the lock held.
    fn admit_for_key(
        &self,
        op: TicketOperation,
        key_id: &str,
        ticket: &Ticket,
        payload: &[u8],
    ) -> Result<(Arc<KeyEntry>, MutexGuard<'_, State>), ErrorBody> {
        let mut st = self.state();
        let expect = TicketExpectation {
            operation: op,
            key_id,
            identity_id: None,
            payload,
        };
        // The ticket is checked before the key lookup, so unauthenticated callers cannot
        // probe key ids.
        self.check(&st, ticket, &expect)?;
        let entry = st
            .keys
            .get(key_id)
            .cloned()
            .ok_or_else(|| err(Code::UnknownKey, "no such key"))?;
        self.check(
            &st,
            ticket,
            &TicketExpectation {
                identity_id: Some(&entry.identity_id),
                ..expect
            },
        )?;
        self.spend(&mut st, ticket)?;
        Ok((entry, st))
    }

    fn sign(&self, key_id: &str, ticket: &Ticket, message: &[u8]) -> Result<Response, ErrorBody> {
        let (entry, st) = self.admit_for_key(TicketOperation::Sign, key_id, ticket, message)?;
        // Sign outside the lock: concurrent signatures proceed in parallel.
        drop(st);
        let sig: Signature = entry.signing_key.sign(message);
        Ok(Response::Signature {
            signature: sig.to_der().as_bytes().to_vec(),
        })
    }

    fn destroy_key(&self, key_id: &str, ticket: &Ticket) -> Result<Response, ErrorBody> {
        let (_entry, mut st) =
            self.admit_for_key(TicketOperation::DestroyKey, key_id, ticket, &[])?;
        st.keys.remove(key_id);
        st.generation += 1;
        Ok(Response::KeyDestroyed)
    }

    /// A key certificate signed by this instance's key.
    fn certificate(
        &self,
        key_id: &str,
        identity_id: &str,
        public_key: &[u8],
        created_at: u64,
    ) -> Result<Vec<u8>, ErrorBody> {
        KeyCertificate::issue(
            &KeyCertificateBody {
                version: KEYCERT_VERSION,
                key_id: key_id.to_string(),
                identity_id: identity_id.to_string(),
                public_key: public_key.to_vec(),
                created_at,
            },
            &self.instance_key,
        )
        .and_then(|c| c.to_bytes())
        .map_err(|_| err(Code::Internal, "could not issue key certificate"))
    }

    fn certify_key(&self, key_id: &str) -> Result<Response, ErrorBody> {
        let entry = self
            .state()
            .keys
            .get(key_id)
            .cloned()
            .ok_or_else(|| err(Code::UnknownKey, "no such key"))?;
        let certificate = self.certificate(
            &entry.key_id,
            &entry.identity_id,
            &entry.public_key,
            entry.created_at,
        )?;
        Ok(Response::KeyCertified { certificate })
    }

    fn sealer(&self) -> Result<&Arc<dyn Sealer>, ErrorBody> {
        self.sealer.as_ref().ok_or_else(|| {
            err(
                Code::BackupRejected,
                "no sealer is configured in this enclave",
            )
        })
    }

    fn export_backup(&self) -> Result<Response, ErrorBody> {
        let sealer = self.sealer()?;
        let st = self.state();
        let contents = BackupContents {
            version: BACKUP_VERSION,
            ticket_key: st.ticket_key.as_ref().map(|k| k.expose_secret().to_vec()),
            keys: st
                .keys
                .entries()
                .iter()
                .map(|e| BackupKey {
                    key_id: e.key_id.clone(),
                    identity_id: e.identity_id.clone(),
                    created_at: e.created_at,
                    secret: e.signing_key.to_bytes().to_vec(),
                })
                .collect(),
            generation: st.generation,
        };
        let key_count = contents.keys.len() as u64;
        let generation = st.generation;
        drop(st);
        let plaintext = contents
            .encode()
            .map_err(|_| err(Code::Internal, "could not encode backup"))?;
        let blob = sealer
            .seal(&plaintext, &self.measurement)
            .map_err(|e| err(Code::Internal, e.to_string()))?;
        Ok(Response::Backup {
            blob,
            key_count,
            generation,
        })
    }

    fn import_backup(&self, blob: &[u8]) -> Result<Response, ErrorBody> {
        let sealer = self.sealer()?;
        let plaintext = sealer
            .unseal(blob, &self.measurement)
            .map_err(|e| err(Code::BackupRejected, e.to_string()))?;
        let contents =
            BackupContents::decode(&plaintext).map_err(|e| err(Code::BackupRejected, e))?;
        // Rebuild every key before touching state, so a bad entry aborts the whole import.
        let mut restored = Vec::with_capacity(contents.keys.len());
        for k in &contents.keys {
            let signing_key = SigningKey::from_slice(&k.secret)
                .map_err(|_| err(Code::BackupRejected, "backup holds an invalid key"))?;
            let public_key = spki(&signing_key)?;
            restored.push(KeyEntry {
                key_id: k.key_id.clone(),
                identity_id: k.identity_id.clone(),
                created_at: k.created_at,
                public_key,
                signing_key,
            });
        }
        let ticket_key = match &contents.ticket_key {
            Some(b) => Some(
                TicketKey::from_slice(b)
                    .map_err(|_| err(Code::BackupRejected, "backup holds an invalid ticket key"))?,
            ),
            None => None,
        };
        let mut st = self.state();
        if let (Some(have), Some(new)) = (&st.ticket_key, &ticket_key)
            && !have.ct_eq(new)
        {
            return Err(err(
                Code::BackupConflict,
                "backup holds a different ticket key than the one provisioned",
            ));
        }
        for k in &restored {
            if let Some(existing) = st.keys.get(&k.key_id)
                && (existing.public_key != k.public_key || existing.identity_id != k.identity_id)
            {
                return Err(err(
                    Code::BackupConflict,
                    format!("key {} exists with different material", k.key_id),
                ));
            }
        }
        if st.ticket_key.is_none() {
            st.ticket_key = ticket_key;
        }
        let mut added = 0u64;
        for k in restored {
            if !st.keys.contains(&k.key_id) {
                st.keys.insert(k);
                added += 1;
            }
        }
        // Later backups must sort after this one, so carry the generation forward.
        st.generation = st.generation.max(contents.generation);
        Ok(Response::BackupImported {
            key_count: st.keys.len() as u64,
            added,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::DevSealer;
    use enclosure_attestation::AttesterError;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// An attester that claims to be Nitro hardware, to check production-mode rules.
    struct FakeNitro;

    impl Attester for FakeNitro {
        fn mode(&self) -> AttesterMode {
            AttesterMode::Nitro
        }
        fn measurement(&self) -> [u8; 48] {
            [7; 48]
        }
        fn attest(&self, _: &AttestationRequest<'_>) -> Result<Vec<u8>, AttesterError> {
            Ok(b"not a real document".to_vec())
        }
        fn fill_random(&self, buf: &mut [u8]) -> Result<(), AttesterError> {
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, buf);
            Ok(())
        }
    }

    /// A clock the test moves by hand.
    struct ManualClock(AtomicU64);

    impl Clock for ManualClock {
        fn now_unix(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn enclave(
        sealer: Option<Arc<dyn Sealer>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Enclave, StartError> {
        Enclave::new(EnclaveConfig {
            attester: Arc::new(FakeNitro),
            sealer,
            clock,
            replay_capacity: 2,
        })
    }

    #[test]
    fn nitro_mode_refuses_the_dev_sealer() {
        let clock = Arc::new(ManualClock(AtomicU64::new(1000)));
        let err = enclave(Some(Arc::new(DevSealer::new())), clock.clone()).unwrap_err();
        assert!(matches!(err, StartError::DevSealerInProduction));
        // Without a sealer it starts, and refuses backups instead of sealing them weakly.
        let e = enclave(None, clock).unwrap();
        assert_eq!(
            e.handle(Request::ExportBackup).unwrap_err().code,
            Code::BackupRejected
        );
    }

    #[test]
    fn tickets_expire_with_the_clock_and_a_full_replay_cache_refuses() {
        let clock = Arc::new(ManualClock(AtomicU64::new(1_000_000)));
        let e = enclave(None, clock.clone()).unwrap();
        let tk = TicketKey::from_bytes([3; 32]);
        e.handle(Request::Provision {
            ticket_key: enclosure_protocol::SecretBytes::new(tk.expose_secret().to_vec()),
        })
        .unwrap();
        let issue = |op, key: &str, now: u64| {
            tk.issue(enclosure_policy::ticket::TicketClaims {
                version: enclosure_policy::ticket::TICKET_VERSION,
                ticket_id: rand::random(),
                operation: op,
                identity_id: "i".into(),
                key_id: key.into(),
                payload_sha384: enclosure_policy::ticket::payload_digest(b""),
                nonce: rand::random(),
                issued_at: now,
                expires_at: now + 30,
            })
            .unwrap()
        };
        let t = issue(TicketOperation::GenerateKey, "k1", 1_000_000);
        clock.0.store(1_000_031, Ordering::SeqCst);
        let err = e
            .handle(Request::GenerateKey { ticket: t.clone() })
            .unwrap_err();
        assert_eq!(err.code, Code::TicketExpired);
        // Capacity 2: two live tickets fill the cache; a third is refused, not admitted by
        // forgetting an older nonce.
        let now = 1_000_031;
        for k in ["a", "b"] {
            let t = issue(TicketOperation::GenerateKey, k, now);
            assert!(e.handle(Request::GenerateKey { ticket: t }).is_ok());
        }
        let t = issue(TicketOperation::GenerateKey, "c", now);
        let err = e
            .handle(Request::GenerateKey { ticket: t.clone() })
            .unwrap_err();
        assert_eq!(err.code, Code::ReplayCacheFull);
        // Once the first two expire, there is room again.
        clock.0.store(now + 31, Ordering::SeqCst);
        let t = issue(TicketOperation::GenerateKey, "c", now + 31);
        assert!(e.handle(Request::GenerateKey { ticket: t }).is_ok());
    }

    #[test]
    fn debug_output_holds_no_secrets() {
        let clock = Arc::new(ManualClock(AtomicU64::new(1)));
        let e = enclave(None, clock).unwrap();
        let shown = format!("{e:?}");
        assert!(shown.contains("REDACTED"), "{shown}");
        let key_bytes = e.instance_key.to_bytes();
        assert!(!shown.contains(&format!("{:?}", key_bytes.as_slice())));
    }
}
