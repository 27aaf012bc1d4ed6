//! The local S3-compatible store behind `enclosure-s3`: s3s checks SigV4, s3s-fs keeps the
//! objects in a directory, and this module narrows both to what Enclosure's presigned URLs need.
//!
//! s3s verifies the signature, the URL's expiry, the credential scope's date, and — when a
//! presigned request carries `x-amz-content-sha256` — the body's SHA-256 as it streams, before
//! s3s-fs renames its temporary file into place. What neither crate enforces, and this layer
//! does ([`PresignedOnly`], [`BoundObjects`]):
//! - only `PutObject`, `GetObject` and `HeadObject` on keys of the [`ObjectKey`] form in the one
//!   configured bucket (s3s-fs would otherwise serve `CopyObject`, listings, multipart uploads
//!   and bucket operations to any holder of a valid signature — a copy would let an uploader
//!   pull another room's artifact under a key they may read);
//! - only SigV4 query signatures (no `Authorization` header, no SigV2), scoped to the
//!   configured region, with `X-Amz-Expires` at most [`MAX_URL_TTL`] (s3s accepts any);
//! - every `x-amz-*` header, and `content-md5`, must be signed, as AWS requires for the
//!   former (s3s ignores unsigned ones, so unsigned metadata, tagging or storage-class headers
//!   would ride along on a valid URL; s3s-fs checks `content-md5` after committing);
//! - a PUT must have signed `content-length`, `x-amz-content-sha256` and
//!   `x-amz-checksum-sha256`, and its body is counted and hashed again here, failing the
//!   stream before s3s-fs commits the file. s3s-fs checks `x-amz-checksum-sha256` itself only
//!   *after* it has renamed the object into place, so on its own a mismatch would leave the
//!   object written.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use hyper_util::rt::TokioIo;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::dto::{
    GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput, PutObjectInput,
    PutObjectOutput, StreamingBlob,
};
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use zeroize::Zeroizing;

use super::error::{ArtifactError, Result};
use super::key::ObjectKey;
use super::presign::{
    MAX_URL_TTL, PUT_SIGNED_HEADERS, check_access_key, check_bucket_name, check_region,
};

/// How far a presigned URL's date may lie in the future of this server's clock. The store and
/// the api share a host in the local stack, so one minute is generous.
const MAX_CLOCK_SKEW_SECS: u32 = 60;

/// Where a data directory keeps the store's objects: `{data_dir}/s3/{bucket}/…`.
pub fn objects_root(data_dir: &Path) -> PathBuf {
    data_dir.join("s3")
}

/// Configuration of the local store.
pub struct LocalStoreConfig {
    /// The data directory; objects live under [`objects_root`] of it.
    pub data_dir: PathBuf,
    /// Where to listen; must be a loopback address (the store speaks plain HTTP).
    pub listen: SocketAddr,
    /// The one bucket served.
    pub bucket: String,
    /// The region signatures must be scoped to.
    pub region: String,
    /// The access key id signatures must name.
    pub access_key: String,
    /// The secret the signatures are checked with.
    pub secret_key: Zeroizing<String>,
}

impl fmt::Debug for LocalStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStoreConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// A running local store; dropping it without [`shutdown`](Self::shutdown) leaves it serving
/// until the runtime ends.
#[derive(Debug)]
pub struct LocalStore {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl LocalStore {
    /// Prepares the directories, binds the listener and starts serving on the current runtime.
    pub async fn start(config: LocalStoreConfig) -> Result<Self> {
        if !config.listen.ip().is_loopback() {
            return Err(ArtifactError::Config(
                "the local store listens on loopback only (it serves plain HTTP)".into(),
            ));
        }
        check_bucket_name(&config.bucket)?;
        check_region(&config.region)?;
        check_access_key(&config.access_key)?;
        if config.secret_key.is_empty() {
            return Err(ArtifactError::Config("the secret key is empty".into()));
        }
        let root = objects_root(&config.data_dir);
        create_private_dir(&root)?;
        create_private_dir(&root.join(&config.bucket))?;
        // s3s-fs's error type has no Display; the directory was just created, so a failure
        // here is an I/O problem with it.
        let fs = s3s_fs::FileSystem::new(&root).map_err(|_| {
            ArtifactError::Config(format!(
                "cannot open the object directory {}",
                root.display()
            ))
        })?;

        let mut builder = S3ServiceBuilder::new(BoundObjects { fs });
        let mut s3_config = S3Config::default();
        s3_config.presigned_url_max_skew_time_secs = MAX_CLOCK_SKEW_SECS;
        builder.set_config(Arc::new(StaticConfigProvider::new(Arc::new(s3_config))));
        let LocalStoreConfig {
            bucket,
            region,
            access_key,
            mut secret_key,
            ..
        } = config;
        // Moves the secret's buffer into s3s's zeroizing SecretKey without copying it.
        builder.set_auth(SimpleAuth::from_single(
            access_key,
            std::mem::take(&mut *secret_key),
        ));
        builder.set_access(PresignedOnly { bucket, region });
        let service = builder.build();

        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service.clone());
                        connections.spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "artifact store connection ended");
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            connections.shutdown().await;
        });
        Ok(LocalStore {
            local_addr,
            shutdown: Some(tx),
            task,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint URL to give [`ArtifactStore::new`](super::ArtifactStore::new).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Creates `dir` (and parents) readable by this user only.
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The access rule: SigV4 presigned object requests in one bucket and region, nothing else.
struct PresignedOnly {
    bucket: String,
    region: String,
}

#[async_trait::async_trait]
impl S3Access for PresignedOnly {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // s3s has already verified the signature and expiry when credentials are present.
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "a presigned URL is required"));
        }
        let op = cx.s3_op().name();
        if !matches!(op, "PutObject" | "GetObject" | "HeadObject") {
            return Err(s3_error!(AccessDenied, "operation not served"));
        }
        match cx.s3_path() {
            S3Path::Object { bucket, key }
                if **bucket == *self.bucket && ObjectKey::parse(key).is_ok() => {}
            _ => return Err(s3_error!(AccessDenied, "not an artifact key")),
        }
        if cx.headers().contains_key(hyper::header::AUTHORIZATION) {
            return Err(s3_error!(AccessDenied, "only presigned URLs are accepted"));
        }
        let query = cx.uri().query().unwrap_or_default();
        let presigned = PresignedQuery::parse(query)?;
        if presigned.credential_region() != Some(self.region.as_str()) {
            return Err(s3_error!(
                AccessDenied,
                "signature scoped to another region"
            ));
        }
        // Every x-amz-* header must be covered by the signature, as AWS requires. An unsigned
        // Content-MD5 is refused too: s3s-fs compares it only after committing the object, so
        // a wrong one would answer "refused" with the object already written.
        for name in cx.headers().keys() {
            let name = name.as_str();
            if (name.starts_with("x-amz-") || name == "content-md5") && !presigned.signs(name) {
                return Err(s3_error!(
                    AccessDenied,
                    "unsigned x-amz-* or content-md5 header"
                ));
            }
        }
        if op == "PutObject" && !PUT_SIGNED_HEADERS.iter().all(|h| presigned.signs(h)) {
            return Err(s3_error!(
                AccessDenied,
                "a PUT must sign content-length and both SHA-256 headers"
            ));
        }
        Ok(())
    }
}

/// The SigV4 query parameters this layer checks beyond what s3s does.
struct PresignedQuery {
    credential: String,
    signed_headers: Vec<String>,
}

impl PresignedQuery {
    fn parse(query: &str) -> S3Result<Self> {
        let mut algorithm = None;
        let mut credential = None;
        let mut expires = None;
        let mut signed_headers = None;
        let mut signature = false;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "X-Amz-Algorithm" => algorithm = Some(value.into_owned()),
                "X-Amz-Credential" => credential = Some(value.into_owned()),
                "X-Amz-Expires" => expires = Some(value.into_owned()),
                "X-Amz-SignedHeaders" => signed_headers = Some(value.into_owned()),
                "X-Amz-Signature" => signature = true,
                // SigV2 query parameters: s3s would check a SigV2 signature first.
                "Signature" | "AWSAccessKeyId" | "Expires" => {
                    return Err(s3_error!(AccessDenied, "only SigV4 is accepted"));
                }
                _ => {}
            }
        }
        if algorithm.as_deref() != Some("AWS4-HMAC-SHA256") || !signature {
            return Err(s3_error!(
                AccessDenied,
                "only SigV4 presigned URLs are accepted"
            ));
        }
        let expires: u64 = expires
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| s3_error!(AccessDenied, "missing X-Amz-Expires"))?;
        if expires == 0 || expires > MAX_URL_TTL.as_secs() {
            return Err(s3_error!(
                AccessDenied,
                "URL lifetime above the allowed maximum"
            ));
        }
        let credential =
            credential.ok_or_else(|| s3_error!(AccessDenied, "missing X-Amz-Credential"))?;
        let signed_headers = signed_headers
            .ok_or_else(|| s3_error!(AccessDenied, "missing X-Amz-SignedHeaders"))?
            .split(';')
            .map(str::to_owned)
            .collect();
        Ok(PresignedQuery {
            credential,
            signed_headers,
        })
    }

    /// The region of `{access key}/{date}/{region}/s3/aws4_request`.
    fn credential_region(&self) -> Option<&str> {
        let mut parts = self.credential.split('/');
        let region = parts.nth(2)?;
        (parts.next() == Some("s3")
            && parts.next() == Some("aws4_request")
            && parts.next().is_none())
        .then_some(region)
    }

    fn signs(&self, header: &str) -> bool {
        self.signed_headers.iter().any(|h| h == header)
    }
}

/// s3s-fs restricted to the three operations, with every PUT body held to its declared length
/// and SHA-256 before the file is committed. All other operations keep the trait's default
/// answer, `NotImplemented`.
struct BoundObjects {
    fs: s3s_fs::FileSystem,
}

#[async_trait::async_trait]
impl S3 for BoundObjects {
    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let length = req
            .input
            .content_length
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| s3_error!(MissingContentLength))?;
        let sha256 = req
            .input
            .checksum_sha256
            .as_deref()
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| s3_error!(InvalidDigest, "x-amz-checksum-sha256 is required"))?;
        let body = req
            .input
            .body
            .take()
            .ok_or_else(|| s3_error!(IncompleteBody))?;
        let verdict = Arc::new(OnceLock::new());
        req.input.body = Some(StreamingBlob::wrap(BoundBody::new(
            body,
            length,
            sha256,
            Arc::clone(&verdict),
        )));
        // s3s-fs reports a failed body stream as an internal error; the body is at fault.
        self.fs
            .put_object(req)
            .await
            .map_err(|e| verdict.get().map_or(e, |m| m.to_s3_error()))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
}

/// Why an upload body was cut off.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum BodyMismatch {
    #[error("the body is longer than its declared length")]
    TooLong,
    #[error("the body is shorter than its declared length")]
    TooShort,
    #[error("the body's SHA-256 differs from the declared one")]
    Sha256,
    /// The stream below failed: s3s's own `x-amz-content-sha256` check, or the client left.
    #[error("the body could not be read in full")]
    Read,
}

impl BodyMismatch {
    fn to_s3_error(self) -> s3s::S3Error {
        match self {
            BodyMismatch::TooShort => s3_error!(IncompleteBody, "{self}"),
            BodyMismatch::TooLong => s3_error!(InvalidRequest, "{self}"),
            BodyMismatch::Sha256 | BodyMismatch::Read => s3_error!(BadDigest, "{self}"),
        }
    }
}

/// A body stream that counts and hashes what passes and ends in an error, instead of a clean
/// end, when the total differs from the declared length or hash. The writer below sees the
/// error before it commits, so a mismatched upload leaves nothing behind.
struct BoundBody {
    inner: StreamingBlob,
    remaining: u64,
    hasher: Option<Sha256>,
    expected: [u8; 32],
    /// The first mismatch seen, for the error answer once the writer gives up.
    verdict: Arc<OnceLock<BodyMismatch>>,
}

impl BoundBody {
    fn new(
        inner: StreamingBlob,
        length: u64,
        expected: [u8; 32],
        verdict: Arc<OnceLock<BodyMismatch>>,
    ) -> Self {
        BoundBody {
            inner,
            remaining: length,
            hasher: Some(Sha256::new()),
            expected,
            verdict,
        }
    }

    /// Ends the stream with `m`: no further item after this one.
    fn fail(&mut self, m: BodyMismatch) -> Poll<Option<std::result::Result<Bytes, BodyMismatch>>> {
        self.hasher = None;
        let _ = self.verdict.set(m);
        Poll::Ready(Some(Err(m)))
    }
}

impl Stream for BoundBody {
    type Item = std::result::Result<Bytes, BodyMismatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // No hasher: the stream already ended, cleanly or with its one error.
        if this.hasher.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(_))) => this.fail(BodyMismatch::Read),
            Poll::Ready(Some(Ok(chunk))) => {
                let len = chunk.len() as u64;
                if len > this.remaining {
                    return this.fail(BodyMismatch::TooLong);
                }
                this.remaining -= len;
                if let Some(hasher) = this.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                let Some(hasher) = this.hasher.take() else {
                    return Poll::Ready(None);
                };
                if this.remaining != 0 {
                    return this.fail(BodyMismatch::TooShort);
                }
                if <[u8; 32]>::from(hasher.finalize()) != this.expected {
                    return this.fail(BodyMismatch::Sha256);
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    async fn drain(body: &[&'static [u8]], length: u64, expected: [u8; 32]) -> Vec<String> {
        let chunks: Vec<std::result::Result<Bytes, std::io::Error>> =
            body.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        let blob = StreamingBlob::wrap(futures_util::stream::iter(chunks));
        let mut s = BoundBody::new(blob, length, expected, Arc::default());
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            out.push(match item {
                Ok(b) => format!("ok:{}", b.len()),
                Err(e) => format!("err:{e}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn bound_body_passes_exact_bytes_and_stops_on_any_mismatch() {
        let sha: [u8; 32] = Sha256::digest(b"hello world").into();
        assert_eq!(
            drain(&[b"hello ", b"world"], 11, sha).await,
            ["ok:6", "ok:5"]
        );
        let last = |v: Vec<String>| v.last().cloned().unwrap_or_default();
        assert!(last(drain(&[b"hello ", b"world"], 10, sha).await).contains("longer"));
        assert!(last(drain(&[b"hello ", b"world"], 12, sha).await).contains("shorter"));
        assert!(last(drain(&[b"hello ", b"World"], 11, sha).await).contains("SHA-256"));
    }

    #[test]
    fn query_rules() {
        let ok = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=content-length%3Bhost&X-Amz-Signature=ab";
        let q = PresignedQuery::parse(ok).unwrap();
        assert_eq!(q.credential_region(), Some("us-east-1"));
        assert!(q.signs("host") && q.signs("content-length") && !q.signs("x-amz-meta-a"));
        assert!(PresignedQuery::parse(&ok.replace("Expires=300", "Expires=301")).is_err());
        assert!(PresignedQuery::parse(&ok.replace("Expires=300", "Expires=0")).is_err());
        assert!(PresignedQuery::parse(&format!("{ok}&Signature=x")).is_err());
        assert!(PresignedQuery::parse(&ok.replace("&X-Amz-Signature=ab", "")).is_err());
    }
}
