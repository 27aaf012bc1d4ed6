//! The host proxy: a byte-transparent frame forwarder between host sockets and the enclave.
//!
//! It reads only the 4-byte length prefixes, checks them against the cap and copies exactly
//! that many bytes; it never decodes a payload, so it holds and sees no secrets (invariant 4).
//! Each client connection gets its own upstream connection, which is how the proxy survives an
//! enclave restart: the next client connection simply dials the new enclave.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enclosure_protocol::{
    Address, EnclaveErrorCode, ErrorBody, FrameReader, Listener, PROTOCOL_VERSION, ProtocolError,
    ResponseEnvelope, Stream, WRITE_CHUNK, connect, write_frame,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The enclave's address.
    pub upstream: Address,
    /// Largest frame forwarded in either direction.
    pub frame_cap: u32,
    /// Client connections served at once; more are refused.
    pub max_connections: usize,
    /// A client connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// How long to keep retrying the enclave for one client before giving up.
    pub connect_timeout: Duration,
    /// How often to probe the enclave for the reachability report.
    pub probe_interval: Duration,
}

impl ProxyConfig {
    /// Defaults for an upstream address.
    pub fn new(upstream: Address) -> Self {
        ProxyConfig {
            upstream,
            frame_cap: enclosure_protocol::DEFAULT_FRAME_CAP,
            max_connections: 128,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(2),
        }
    }
}

/// Whether the enclave answered the last probe or connection attempt.
#[derive(Debug, Default)]
pub struct Reachability(AtomicBool);

impl Reachability {
    /// The last known state.
    pub fn is_reachable(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        if self.0.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("enclave reachable");
            } else {
                tracing::warn!("enclave unreachable");
            }
        }
    }
}

/// Runs the proxy until the listener fails.
pub async fn run(listener: Listener, config: ProxyConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let reach = Arc::new(Reachability::default());
    tokio::spawn(probe(config.clone(), reach.clone()));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let client = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max = config.max_connections,
                "connection limit reached; refusing"
            );
            tokio::spawn(refuse(client, "proxy connection limit reached"));
            continue;
        };
        let config = config.clone();
        let reach = reach.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(client, &config, &reach).await {
                tracing::debug!(error = %e, "proxied connection ended");
            }
            drop(permit);
        });
    }
}

async fn probe(config: Arc<ProxyConfig>, reach: Arc<Reachability>) {
    loop {
        let up = tokio::time::timeout(config.connect_timeout, connect(&config.upstream))
            .await
            .is_ok_and(|r| r.is_ok());
        reach.set(up);
        tokio::time::sleep(config.probe_interval).await;
    }
}

/// Tells a client, in protocol terms, why it is being disconnected.
async fn refuse(mut client: Stream, why: &str) {
    let env = ResponseEnvelope {
        version: PROTOCOL_VERSION,
        request_id: 0,
        result: Err(ErrorBody::new(EnclaveErrorCode::Unavailable, why)),
    };
    if let Ok(bytes) = env.encode() {
        let _ = write_frame(&mut client, &bytes).await;
    }
    let _ = client.shutdown().await;
}

async fn dial(config: &ProxyConfig, reach: &Reachability) -> Option<Stream> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        match connect(&config.upstream).await {
            Ok(s) => {
                reach.set(true);
                return Some(s);
            }
            Err(e) => {
                if tokio::time::Instant::now() + backoff > deadline {
                    tracing::warn!(error = %e, upstream = %config.upstream, "cannot reach the enclave");
                    reach.set(false);
                    return None;
                }
                // The enclave may be restarting: retry briefly before failing the client.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

async fn handle(
    client: Stream,
    config: &ProxyConfig,
    reach: &Reachability,
) -> Result<(), ProtocolError> {
    let Some(upstream) = dial(config, reach).await else {
        refuse(client, "enclave unreachable").await;
        return Ok(());
    };
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let frames = FrameReader::new(config.frame_cap);
    let up = pump(&mut cr, &mut uw, frames, Some(config.idle_timeout));
    let down = pump(&mut ur, &mut cw, frames, None);
    // When either side ends or misbehaves, the whole connection ends.
    let (result, from_client) = tokio::select! {
        r = up => (r, true),
        r = down => (r, false),
    };
    if from_client
        && let Err(e @ (ProtocolError::FrameTooLarge { .. } | ProtocolError::EmptyFrame)) = &result
    {
        // Tell the client why, in protocol terms, before closing.
        let env = ResponseEnvelope {
            version: PROTOCOL_VERSION,
            request_id: 0,
            result: Err(ErrorBody::new(EnclaveErrorCode::BadRequest, e.to_string())),
        };
        if let Ok(bytes) = env.encode() {
            let _ = write_frame(&mut cw, &bytes).await;
        }
    }
    let _ = uw.shutdown().await;
    let _ = cw.shutdown().await;
    result
}

/// Copies whole frames from `r` to `w`, checking each prefix against the cap first.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    frames: FrameReader,
    idle: Option<Duration>,
) -> Result<(), ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; WRITE_CHUNK];
    loop {
        let len = match idle {
            Some(t) => match tokio::time::timeout(t, frames.read_len(r)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("idle timeout");
                    return Ok(());
                }
            },
            None => frames.read_len(r).await,
        };
        let len = match len {
            Ok(l) => l,
            Err(ProtocolError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        w.write_all(&len.to_be_bytes()).await?;
        let mut left = len as usize;
        while left > 0 {
            let want = left.min(buf.len());
            let n = r.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(ProtocolError::Truncated);
            }
            w.write_all(&buf[..n]).await?;
            left -= n;
        }
        w.flush().await?;
    }
}
