//! Auto-restore: keeps the enclave provisioned and holding every key, across enclave restarts.
//!
//! At start, and whenever the enclave reports a new instance key or no ticket key, the api
//! imports the latest sealed backup and provisions the ticket key before it serves key
//! operations again; meanwhile those answer 503 with Retry-After. Backups are opaque to the
//! api: only an enclave with the same measurement can open them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enclosure_protocol::{Request, Response, SecretBytes};
use tokio::sync::{Mutex, Notify};

use crate::ApiError;
use crate::config::Mode;
use crate::server::AppState;
use crate::store::AuditEntry;

/// Whether key operations may be served, and what the last restore saw.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    last_instance: Mutex<Option<Vec<u8>>>,
    kick: Notify,
    /// Serialises backup export+store within this process, so backups are stored in order.
    pub backup_lock: Mutex<()>,
}

impl Readiness {
    /// Whether key operations may run now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Fails with 503 while a restore is pending.
    pub fn require(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::EnclaveUnavailable {
                reason: "the enclave is being restored".into(),
                retry_after: 1,
            })
        }
    }

    /// Asks the supervisor to check the enclave now (after a suspicious answer).
    pub fn suspect(&self) {
        self.ready.store(false, Ordering::Release);
        self.kick.notify_one();
    }
}

/// Checks the enclave every second (or when kicked) and restores it when needed.
pub async fn supervise(state: Arc<AppState>) {
    loop {
        if let Err(e) = check_once(&state).await {
            tracing::warn!(error = %e, "enclave not ready");
            state.readiness.ready.store(false, Ordering::Release);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.readiness.kick.notified() => {}
        }
    }
}

async fn audit(state: &AppState, action: &str, outcome: &str, detail: Option<String>) {
    let entry = AuditEntry {
        actor: "system:api".into(),
        actor_role: "system".into(),
        action: action.into(),
        identity_id: None,
        key_id: None,
        ticket_id: None,
        outcome: outcome.into(),
        detail,
        at_ms: state.now_ms(),
    };
    if let Err(e) = state.store.append_audit(entry).await {
        tracing::error!(error = %e, "could not audit {action}");
    }
}

/// Production refuses an enclave running the dev attester: its documents and keys prove nothing
/// about Nitro hardware. (Clients would refuse its attestation too; the api fails first.)
pub fn check_enclave_mode(api_mode: Mode, enclave_mode: &str) -> Result<(), ApiError> {
    match (api_mode, enclave_mode) {
        (_, "nitro") | (Mode::Dev, "dev") => Ok(()),
        (Mode::Production, "dev") => Err(ApiError::EnclaveUnavailable {
            reason: "production mode refuses an enclave running the dev attester".into(),
            retry_after: 60,
        }),
        (_, other) => Err(ApiError::EnclaveUnavailable {
            reason: format!("the enclave reports an unknown mode {other:?}"),
            retry_after: 60,
        }),
    }
}

/// One supervision step; public so tests and start-up can run it directly.
pub async fn check_once(state: &AppState) -> Result<(), ApiError> {
    let (instance, provisioned, mode) = match state.enclave.call(Request::Health).await? {
        Response::Health {
            instance_public_key,
            provisioned,
            mode,
            ..
        } => (instance_public_key, provisioned, mode),
        _ => return Err(ApiError::Internal("unexpected answer to Health".into())),
    };
    check_enclave_mode(state.config.mode, &mode)?;
    let mut last = state.readiness.last_instance.lock().await;
    if last.as_deref() == Some(instance.as_slice()) && provisioned {
        state.readiness.ready.store(true, Ordering::Release);
        return Ok(());
    }
    state.readiness.ready.store(false, Ordering::Release);
    tracing::info!("new enclave instance or unprovisioned enclave: restoring");
    if let Some(backup) = state.store.latest_backup().await? {
        match state
            .enclave
            .call(Request::ImportBackup {
                blob: backup.blob.clone(),
            })
            .await
        {
            Ok(Response::BackupImported { key_count, added }) => {
                audit(
                    state,
                    "enclave.restore",
                    "ok",
                    Some(format!(
                        "backup {} imported: {added} added, {key_count} held",
                        backup.id
                    )),
                )
                .await;
            }
            Ok(_) => {
                return Err(ApiError::Internal(
                    "unexpected answer to ImportBackup".into(),
                ));
            }
            Err(e) => {
                // Fail closed: serving key operations now would hide lost keys.
                audit(state, "enclave.restore", "error", Some(e.to_string())).await;
                return Err(e);
            }
        }
    }
    let key = SecretBytes::new(state.tickets.key().expose_secret().to_vec());
    match state
        .enclave
        .call(Request::Provision { ticket_key: key })
        .await?
    {
        Response::Provisioned { already } => {
            if !already {
                audit(state, "enclave.provision", "ok", None).await;
            }
        }
        _ => return Err(ApiError::Internal("unexpected answer to Provision".into())),
    }
    *last = Some(instance);
    state.readiness.ready.store(true, Ordering::Release);
    tracing::info!("enclave ready for key operations");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_a_dev_enclave() {
        assert!(check_enclave_mode(Mode::Production, "dev").is_err());
        assert!(check_enclave_mode(Mode::Production, "nitro").is_ok());
        assert!(check_enclave_mode(Mode::Dev, "dev").is_ok());
        assert!(check_enclave_mode(Mode::Dev, "nitro").is_ok());
        assert!(check_enclave_mode(Mode::Dev, "simulator").is_err());
    }
}
