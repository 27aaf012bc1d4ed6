//! The NSM attester: attestation documents and entropy from the Nitro Secure Module
//! (`/dev/nsm`), available only inside a Nitro enclave.

use std::fmt;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver::{nsm_exit, nsm_init, nsm_process_request};
use serde_bytes::ByteBuf;

use crate::attester::{AttestationRequest, Attester, AttesterError, AttesterMode};

/// The Nitro Secure Module behind `/dev/nsm`.
pub struct NsmAttester {
    fd: i32,
    pcr0: [u8; 48],
}

impl fmt::Debug for NsmAttester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsmAttester").finish_non_exhaustive()
    }
}

impl NsmAttester {
    /// Opens `/dev/nsm` and reads PCR0, the measurement of the running enclave image.
    pub fn open() -> Result<Self, AttesterError> {
        let fd = nsm_init();
        if fd < 0 {
            return Err(AttesterError::NsmUnavailable);
        }
        // From here on `Drop` closes the descriptor, also on the error path below.
        let mut attester = NsmAttester { fd, pcr0: [0; 48] };
        match nsm_process_request(fd, Request::DescribePCR { index: 0 }) {
            Response::DescribePCR { data, .. } => {
                attester.pcr0 = data
                    .as_slice()
                    .try_into()
                    .map_err(|_| AttesterError::NsmUnexpectedResponse)?;
            }
            other => return Err(unexpected(other)),
        }
        Ok(attester)
    }
}

impl Drop for NsmAttester {
    fn drop(&mut self) {
        nsm_exit(self.fd);
    }
}

fn unexpected(response: Response) -> AttesterError {
    match response {
        Response::Error(code) => AttesterError::Nsm(format!("{code:?}")),
        _ => AttesterError::NsmUnexpectedResponse,
    }
}

impl Attester for NsmAttester {
    fn mode(&self) -> AttesterMode {
        AttesterMode::Nitro
    }

    fn measurement(&self) -> [u8; 48] {
        self.pcr0
    }

    fn attest(&self, req: &AttestationRequest<'_>) -> Result<Vec<u8>, AttesterError> {
        req.check_limits()?;
        let request = Request::Attestation {
            user_data: req.user_data.map(ByteBuf::from),
            nonce: req.nonce.map(ByteBuf::from),
            public_key: req.public_key.map(ByteBuf::from),
        };
        match nsm_process_request(self.fd, request) {
            Response::Attestation { document } => Ok(document),
            other => Err(unexpected(other)),
        }
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), AttesterError> {
        let mut filled = 0;
        while filled < buf.len() {
            match nsm_process_request(self.fd, Request::GetRandom) {
                Response::GetRandom { random } if !random.is_empty() => {
                    let n = random.len().min(buf.len() - filled);
                    buf[filled..filled + n].copy_from_slice(&random[..n]);
                    filled += n;
                }
                Response::GetRandom { .. } => return Err(AttesterError::Random),
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }
}
