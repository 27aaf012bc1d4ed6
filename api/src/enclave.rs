//! The api's connection pool to the enclave, through the host proxy.

use std::sync::Mutex;

use enclosure_protocol::{Address, EnclaveClient, EnclaveErrorCode, Request, Response};
use tokio::sync::Semaphore;

use crate::ApiError;

/// Pooled connections to the enclave; a connection that fails is dropped, not reused.
pub struct EnclavePool {
    addr: Address,
    idle: Mutex<Vec<EnclaveClient>>,
    slots: Semaphore,
}

impl std::fmt::Debug for EnclavePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclavePool")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EnclavePool {
    /// A pool of at most `max` connections to `addr`.
    pub fn new(addr: Address, max: usize) -> Self {
        EnclavePool {
            addr,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max),
        }
    }

    fn unavailable(reason: impl Into<String>) -> ApiError {
        ApiError::EnclaveUnavailable {
            reason: reason.into(),
            retry_after: 2,
        }
    }

    /// Sends one request and returns the enclave's answer, or its refusal as an [`ApiError`].
    pub async fn call(&self, request: Request) -> Result<Response, ApiError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Self::unavailable("pool closed"))?;
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut client = match pooled {
            Some(c) => c,
            None => EnclaveClient::connect(&self.addr)
                .await
                .map_err(|e| Self::unavailable(e.to_string()))?,
        };
        match client.call(request).await {
            Ok(result) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
                result.map_err(|body| match body.code {
                    EnclaveErrorCode::Unavailable => Self::unavailable(body.message),
                    _ => ApiError::EnclaveRefused(body),
                })
            }
            // A broken connection (enclave restarted, proxy closed it) is dropped; the caller
            // may retry on a fresh one.
            Err(e) => Err(Self::unavailable(e.to_string())),
        }
    }
}
