//! The signing services: identities and enclave keys, each a named operation that checks
//! ownership, rate limits and readiness, issues a one-time ticket, relays to the enclave and
//! audits the outcome — refusals included.

use base64::Engine;
use enclosure_policy::ticket::TicketOperation;
use enclosure_protocol::{EnclaveErrorCode, Request, Response};
use serde::Serialize;

use crate::ApiError;
use crate::auth::Caller;
use crate::server::AppState;
use crate::store::{AuditEntry, KeyRecord, RateLimitHit, TicketAdmission, TicketRecord};

/// Longest identity name.
pub const MAX_NAME_LEN: usize = 200;

/// An identity as the api shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityView {
    /// Identity id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A key as the api shows it: public material only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Key id.
    pub key_id: String,
    /// Owning identity.
    pub identity_id: String,
    /// Always "ES384" (ECDSA P-384 with SHA-384).
    pub algorithm: &'static str,
    /// SPKI public key, PEM.
    pub public_key_pem: String,
    /// The enclave's key certificate (CBOR), base64; verify it with the attested instance key.
    pub key_certificate: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A signature answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignatureView {
    /// The key that signed.
    pub key_id: String,
    /// DER ECDSA signature, base64.
    pub signature: String,
    /// The one-time ticket that authorised it.
    pub ticket_id: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// RFC 3339 text for unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn key_view(k: &KeyRecord) -> KeyView {
    KeyView {
        key_id: k.key_id.clone(),
        identity_id: k.identity_id.clone(),
        algorithm: "ES384",
        public_key_pem: crate::pem::encode("PUBLIC KEY", &k.public_key_der),
        key_certificate: b64(&k.key_certificate),
        created_at: rfc3339(k.created_at_ms),
    }
}

/// What an audited operation touched.
#[derive(Debug, Default, Clone)]
struct Subject {
    identity_id: Option<String>,
    key_id: Option<String>,
    ticket_id: Option<String>,
}

async fn audit<T>(
    state: &AppState,
    caller: &Caller,
    action: &str,
    subject: &Subject,
    result: &Result<T, ApiError>,
) {
    let (outcome, code) = crate::error::audit_outcome(result);
    let detail = code.map(str::to_string);
    let entry = AuditEntry {
        actor: caller.sub.clone(),
        actor_role: caller.role.as_str().to_string(),
        action: action.to_string(),
        identity_id: subject.identity_id.clone(),
        key_id: subject.key_id.clone(),
        ticket_id: subject.ticket_id.clone(),
        outcome: outcome.to_string(),
        detail,
        at_ms: state.now_ms(),
    };
    if let Err(e) = state.store.append_audit(entry).await {
        tracing::error!(error = %e, action, "could not write the audit row");
    }
}

/// Creates an identity owned by the caller.
pub async fn create_identity(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<IdentityView, ApiError> {
    let mut subject = Subject::default();
    let result = async {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(ApiError::BadRequest(format!(
                "name must be 1 to {MAX_NAME_LEN} printable characters"
            )));
        }
        let identity = state
            .store
            .create_identity(&caller.sub, name, state.now_ms())
            .await?;
        subject.identity_id = Some(identity.id.clone());
        Ok(IdentityView {
            id: identity.id,
            name: identity.name,
            created_at: rfc3339(identity.created_at_ms),
        })
    }
    .await;
    audit(state, caller, "identity.create", &subject, &result).await;
    result
}

/// Lists the caller's identities.
pub async fn list_identities(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<IdentityView>, ApiError> {
    Ok(state
        .store
        .list_identities(&caller.sub)
        .await?
        .into_iter()
        .map(|i| IdentityView {
            id: i.id,
            name: i.name,
            created_at: rfc3339(i.created_at_ms),
        })
        .collect())
}

/// Rate-limit scopes, in the order of the hits [`rate_limit_hits`] makes.
const RATE_LIMIT_SCOPES: [&str; 2] = ["user", "identity"];

/// The per-user and per-identity buckets a key operation takes from: each holds its
/// per-minute limit and refills evenly over a minute.
fn rate_limit_hits(state: &AppState, caller: &Caller, identity_id: &str) -> [RateLimitHit; 2] {
    let limits = &state.config.rate_limits;
    let hit = |bucket: String, limit: u32| RateLimitHit {
        bucket,
        limit: u64::from(limit),
        window_ms: 60_000,
    };
    [
        hit(format!("user:{}", caller.sub), limits.per_user_per_minute),
        hit(
            format!("identity:{identity_id}"),
            limits.per_identity_per_minute,
        ),
    ]
}

/// One key operation, as its ticket binds it.
struct KeyOp<'a> {
    op: TicketOperation,
    identity_id: &'a str,
    key_id: &'a str,
    payload: &'a [u8],
}

/// Counts the rate limits and issues, stores and claims a ticket (one group-committed store
/// job), then sends `make(ticket)` to the enclave.
async fn run_key_op(
    state: &AppState,
    caller: &Caller,
    subject: &mut Subject,
    key_op: KeyOp<'_>,
    make: impl FnOnce(enclosure_policy::ticket::Ticket) -> Request,
) -> Result<Response, ApiError> {
    let KeyOp {
        op,
        identity_id,
        key_id,
        payload,
    } = key_op;
    let now_ms = state.now_ms();
    let ticket = state
        .tickets
        .issue(op, identity_id, key_id, payload, (now_ms / 1000) as u64)
        .map_err(|e| ApiError::Internal(format!("issuing a ticket: {e}")))?;
    let ticket_id = hex::encode(ticket.claims.ticket_id);
    let record = TicketRecord {
        ticket_id: ticket_id.clone(),
        operation: op.as_str().to_string(),
        identity_id: identity_id.to_string(),
        key_id: key_id.to_string(),
        owner: caller.sub.clone(),
        payload_sha384: ticket.claims.payload_sha384.to_vec(),
        issued_at_ms: (ticket.claims.issued_at * 1000) as i64,
        expires_at_ms: (ticket.claims.expires_at * 1000) as i64,
    };
    let hits = rate_limit_hits(state, caller, identity_id);
    // Only the winner of this one atomic step may use the ticket: it is recorded already
    // claimed, so no other process can ever claim it.
    match state.store.admit_ticket(&record, &hits, now_ms).await? {
        TicketAdmission::Claimed => {}
        TicketAdmission::RateLimited {
            index,
            retry_after_ms,
        } => {
            return Err(ApiError::RateLimited {
                scope: RATE_LIMIT_SCOPES.get(index).copied().unwrap_or("user"),
                // Whole seconds, rounded up: a client that waits this long is admitted.
                retry_after: u64::try_from(retry_after_ms)
                    .unwrap_or(0)
                    .div_ceil(1000)
                    .max(1),
            });
        }
        _ => {
            return Err(ApiError::Internal(
                "a fresh ticket could not be claimed".into(),
            ));
        }
    }
    subject.ticket_id = Some(ticket_id);
    // Checked after the rate limits, as before; a ticket claimed here and then not sent is
    // never usable by anyone.
    state.readiness.require()?;
    match state.enclave.call(make(ticket)).await {
        Ok(r) => Ok(r),
        Err(e) => {
            if matches!(&e, ApiError::EnclaveUnavailable { .. })
                || matches!(&e, ApiError::EnclaveRefused(b) if b.code == EnclaveErrorCode::NotProvisioned)
            {
                // The enclave may have restarted: restore before serving more key operations.
                state.readiness.suspect();
            }
            Err(e)
        }
    }
}

/// Exports a fresh sealed backup and stores it (opaque bytes the api cannot decrypt).
async fn refresh_backup(state: &AppState) -> Result<(), ApiError> {
    let _order = state.readiness.backup_lock.lock().await;
    match state.enclave.call(Request::ExportBackup).await? {
        Response::Backup {
            blob,
            key_count,
            generation,
        } => {
            state
                .store
                .store_backup(&blob, key_count as i64, generation as i64, state.now_ms())
                .await?;
            Ok(())
        }
        _ => Err(ApiError::Internal(
            "unexpected answer to ExportBackup".into(),
        )),
    }
}

async fn owned_identity(
    state: &AppState,
    caller: &Caller,
    identity_id: &str,
) -> Result<(), ApiError> {
    state
        .store
        .get_identity(&caller.sub, identity_id)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound)
}

async fn owned_key(state: &AppState, caller: &Caller, key_id: &str) -> Result<KeyRecord, ApiError> {
    state
        .store
        .get_key(&caller.sub, key_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Generates a key in the enclave for one of the caller's identities.
pub async fn generate_key(
    state: &AppState,
    caller: &Caller,
    identity_id: &str,
) -> Result<KeyView, ApiError> {
    let key_id = uuid::Uuid::new_v4().to_string();
    let mut subject = Subject {
        identity_id: Some(identity_id.to_string()),
        key_id: Some(key_id.clone()),
        ..Subject::default()
    };
    let result = async {
        owned_identity(state, caller, identity_id).await?;
        let r = run_key_op(
            state,
            caller,
            &mut subject,
            KeyOp {
                op: TicketOperation::GenerateKey,
                identity_id,
                key_id: &key_id,
                payload: b"",
            },
            |ticket| Request::GenerateKey { ticket },
        )
        .await?;
        let Response::KeyGenerated {
            key_id: got,
            public_key,
            certificate,
        } = r
        else {
            return Err(ApiError::Internal(
                "unexpected answer to GenerateKey".into(),
            ));
        };
        if got != key_id {
            return Err(ApiError::Internal(
                "the enclave answered for another key".into(),
            ));
        }
        let record = KeyRecord {
            key_id: key_id.clone(),
            identity_id: identity_id.to_string(),
            owner: caller.sub.clone(),
            public_key_der: public_key,
            key_certificate: certificate,
            created_at_ms: state.now_ms(),
            destroyed_at_ms: None,
        };
        state.store.insert_key(&record).await?;
        // The key exists only in enclave memory until a backup holds it.
        refresh_backup(state).await?;
        Ok(key_view(&record))
    }
    .await;
    audit(state, caller, "key.create", &subject, &result).await;
    result
}

/// Shows one of the caller's keys, with a certificate from the current enclave instance:
/// the stored one names the instance that created the key, which a restart replaces.
pub async fn get_key(state: &AppState, caller: &Caller, key_id: &str) -> Result<KeyView, ApiError> {
    let mut key = owned_key(state, caller, key_id).await?;
    state.readiness.require()?;
    match state
        .enclave
        .call(Request::CertifyKey {
            key_id: key_id.to_string(),
        })
        .await?
    {
        Response::KeyCertified { certificate } => key.key_certificate = certificate,
        _ => return Err(ApiError::Internal("unexpected answer to CertifyKey".into())),
    }
    Ok(key_view(&key))
}

/// Signs a message with one of the caller's keys.
pub async fn sign(
    state: &AppState,
    caller: &Caller,
    key_id: &str,
    message: &[u8],
) -> Result<SignatureView, ApiError> {
    let mut subject = Subject {
        key_id: Some(key_id.to_string()),
        ..Subject::default()
    };
    let result = async {
        let key = owned_key(state, caller, key_id).await?;
        subject.identity_id = Some(key.identity_id.clone());
        let msg = message.to_vec();
        let r = run_key_op(
            state,
            caller,
            &mut subject,
            KeyOp {
                op: TicketOperation::Sign,
                identity_id: &key.identity_id,
                key_id,
                payload: message,
            },
            |ticket| Request::Sign {
                key_id: key_id.to_string(),
                ticket,
                message: msg,
            },
        )
        .await?;
        let Response::Signature { signature } = r else {
            return Err(ApiError::Internal("unexpected answer to Sign".into()));
        };
        Ok(SignatureView {
            key_id: key_id.to_string(),
            signature: b64(&signature),
            ticket_id: subject.ticket_id.clone().unwrap_or_default(),
        })
    }
    .await;
    audit(state, caller, "key.sign", &subject, &result).await;
    result
}

/// Destroys one of the caller's keys in the enclave and marks it destroyed.
pub async fn destroy(state: &AppState, caller: &Caller, key_id: &str) -> Result<(), ApiError> {
    let mut subject = Subject {
        key_id: Some(key_id.to_string()),
        ..Subject::default()
    };
    let result = async {
        let key = owned_key(state, caller, key_id).await?;
        subject.identity_id = Some(key.identity_id.clone());
        let r = run_key_op(
            state,
            caller,
            &mut subject,
            KeyOp {
                op: TicketOperation::DestroyKey,
                identity_id: &key.identity_id,
                key_id,
                payload: b"",
            },
            |ticket| Request::DestroyKey {
                key_id: key_id.to_string(),
                ticket,
            },
        )
        .await?;
        if r != Response::KeyDestroyed {
            return Err(ApiError::Internal("unexpected answer to DestroyKey".into()));
        }
        state
            .store
            .mark_key_destroyed(&caller.sub, key_id, state.now_ms())
            .await?;
        refresh_backup(state).await?;
        Ok(())
    }
    .await;
    audit(state, caller, "key.destroy", &subject, &result).await;
    result
}
