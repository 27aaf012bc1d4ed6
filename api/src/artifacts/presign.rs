//! The presigner: SigV4 query-signed URLs for one bucket, and the two questions the api asks
//! the store about an object (its size and SHA-256).
//!
//! Artifacts never pass through the api (seed T3): the api hands a client a URL that the store
//! itself checks. A PUT URL signs `content-length`, `x-amz-content-sha256` and
//! `x-amz-checksum-sha256` as headers, so the store refuses any body of another length or hash
//! (AWS S3 and `enclosure-s3` both recompute the SHA-256 over the bytes they receive and refuse
//! the upload before storing it). A URL lives 60–300 s; the lifetime is checked here and again
//! by `enclosure-s3`.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};
use sha2::{Digest as _, Sha256};
use url::Url;
use zeroize::Zeroizing;

use super::error::{ArtifactError, Result};
use super::key::ObjectKey;

/// The shortest lifetime of a presigned URL: shorter ones expire in transit.
pub const MIN_URL_TTL: Duration = Duration::from_secs(60);
/// The longest lifetime of a presigned URL (the 60–300 s window).
pub const MAX_URL_TTL: Duration = Duration::from_secs(300);
/// The largest body one presigned PUT may carry (S3's single-PUT limit).
pub const MAX_PUT_LENGTH: u64 = 5 * 1024 * 1024 * 1024;

/// Header names a presigned PUT signs and the uploader must send with these exact values.
pub const PUT_SIGNED_HEADERS: [&str; 3] = [
    "content-length",
    "x-amz-checksum-sha256",
    "x-amz-content-sha256",
];

/// The lifetime the api gives itself for its own HEAD and digest requests.
const OWN_REQUEST_TTL: Duration = MIN_URL_TTL;
/// How long the api waits for the store on its own requests.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// A presigned request handed to a client: the method, the URL and the headers it must send.
///
/// `Debug` hides the URL's query string: until it expires, the URL is a bearer capability.
#[derive(Clone)]
pub struct PresignedRequest {
    /// `PUT` or `GET`.
    pub method: &'static str,
    /// The URL, with the signature in its query string.
    pub url: Url,
    /// Headers the client must send verbatim (the signed ones); empty for a GET.
    pub headers: Vec<(&'static str, String)>,
    /// When the store stops accepting the URL (the signing second plus the lifetime).
    pub expires_at: SystemTime,
}

impl fmt::Debug for PresignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresignedRequest")
            .field("method", &self.method)
            .field("path", &self.url.path())
            .field("headers", &self.headers)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What the store holds under a key: its length and the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the object's bytes.
    pub sha256: [u8; 32],
}

impl fmt::Debug for ObjectInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectInfo")
            .field("size", &self.size)
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}

/// Mints presigned URLs for one bucket of an S3-compatible store and asks it about objects.
///
/// `Debug` shows the bucket URL, the region and the access key id, never the secret key.
pub struct ArtifactStore {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("bucket_url", &self.bucket.base_url().as_str())
            .field("region", &self.bucket.region())
            .field("access_key", &self.credentials.key())
            .finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// A presigner for `bucket` at `endpoint_url` (path-style URLs:
    /// `{endpoint}/{bucket}/{key}`), signing for `region` with the given key pair.
    ///
    /// Path-style works for `enclosure-s3`, MinIO and AWS S3 alike and needs no wildcard DNS.
    pub fn new(
        endpoint_url: &str,
        bucket: &str,
        region: &str,
        access_key: &str,
        mut secret_key: Zeroizing<String>,
    ) -> Result<Self> {
        // The endpoint may carry userinfo; it never goes into a message.
        let endpoint = Url::parse(endpoint_url)
            .map_err(|_| ArtifactError::Config("the endpoint is not a URL".into()))?;
        check_bucket_name(bucket)?;
        check_region(region)?;
        check_access_key(access_key)?;
        if secret_key.is_empty() {
            return Err(ArtifactError::Config("the secret key is empty".into()));
        }
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )
        .map_err(|e| ArtifactError::Config(format!("the endpoint cannot hold a bucket: {e}")))?;
        // Moves the secret's buffer into rusty-s3's zeroizing holder without copying it.
        let credentials = Credentials::new(access_key, std::mem::take(&mut *secret_key));
        // Never follow a redirect: it would carry a signed URL's authority to another host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(STORE_TIMEOUT)
            .build()
            .map_err(|e| ArtifactError::Config(format!("building the HTTP client: {e}")))?;
        Ok(ArtifactStore {
            bucket,
            credentials,
            http,
        })
    }

    /// A PUT URL for `key` that the store accepts only with a body of exactly
    /// `content_length` bytes whose SHA-256 is `sha256`, for `ttl` from now.
    pub fn presign_put(
        &self,
        key: &ObjectKey,
        content_length: u64,
        sha256: &[u8; 32],
        ttl: Duration,
    ) -> Result<PresignedRequest> {
        self.presign_put_at(key, content_length, sha256, ttl, SystemTime::now())
    }

    /// [`presign_put`](Self::presign_put), dated at `now` (the clock is the caller's).
    pub fn presign_put_at(
        &self,
        key: &ObjectKey,
        content_length: u64,
        sha256: &[u8; 32],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<PresignedRequest> {
        check_ttl(ttl)?;
        if content_length > MAX_PUT_LENGTH {
            return Err(ArtifactError::TooLarge {
                length: content_length,
                limit: MAX_PUT_LENGTH,
            });
        }
        let (signed_at, expires_at) = signing_time(now, ttl)?;
        let headers = put_headers(content_length, sha256);
        let mut action = self
            .bucket
            .put_object(Some(&self.credentials), key.as_str());
        for (name, value) in &headers {
            action.headers_mut().insert(*name, value.as_str());
        }
        let url = action.sign_with_time(ttl, &signed_at);
        Ok(PresignedRequest {
            method: "PUT",
            url,
            headers,
            expires_at,
        })
    }

    /// A GET URL for `key`, valid for `ttl` from now.
    pub fn presign_get(&self, key: &ObjectKey, ttl: Duration) -> Result<PresignedRequest> {
        self.presign_get_at(key, ttl, SystemTime::now())
    }

    /// [`presign_get`](Self::presign_get), dated at `now` (the clock is the caller's).
    pub fn presign_get_at(
        &self,
        key: &ObjectKey,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<PresignedRequest> {
        check_ttl(ttl)?;
        let (signed_at, expires_at) = signing_time(now, ttl)?;
        let mut action = self
            .bucket
            .get_object(Some(&self.credentials), key.as_str());
        // Signed into the URL: S3 then answers with `Content-Disposition: attachment`, so a
        // browser saves an uploaded HTML or SVG file instead of rendering it on the store's
        // origin. (The local store ignores it; it serves no browser.)
        action
            .query_mut()
            .insert("response-content-disposition", "attachment");
        let url = action.sign_with_time(ttl, &signed_at);
        Ok(PresignedRequest {
            method: "GET",
            url,
            headers: Vec::new(),
            expires_at,
        })
    }

    /// The length and SHA-256 the store recorded for `key`, or `None` if nothing is there.
    ///
    /// The SHA-256 is the store's `x-amz-checksum-sha256` (asked for with
    /// `x-amz-checksum-mode: ENABLED`). It is verifiable because it is not the uploader's
    /// claim: every PUT URL this type mints signs that header, and the store recomputes the
    /// hash over the bytes it received and refuses the upload on a mismatch before storing
    /// anything, so a stored object's checksum is the store's own measurement. The api never
    /// reads the bytes for this check (no streaming through the api). A store that keeps no
    /// checksum gives [`ArtifactError::BadResponse`]; [`digest`](Self::digest) is the fallback.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>> {
        let (signed_at, _) = signing_time(SystemTime::now(), OWN_REQUEST_TTL)?;
        let mut action = self
            .bucket
            .head_object(Some(&self.credentials), key.as_str());
        action
            .headers_mut()
            .insert("x-amz-checksum-mode", "ENABLED");
        let url = action.sign_with_time(OWN_REQUEST_TTL, &signed_at);
        let response = self
            .http
            .head(url)
            .header("x-amz-checksum-mode", "ENABLED")
            .send()
            .await
            .map_err(ArtifactError::transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ArtifactError::Refused {
                status: status.as_u16(),
            });
        }
        let headers = response.headers();
        let size = headers
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(ArtifactError::BadResponse("no content-length on HEAD"))?;
        let checksum = headers
            .get("x-amz-checksum-sha256")
            .ok_or(ArtifactError::BadResponse(
                "no x-amz-checksum-sha256 on HEAD",
            ))?;
        let sha256 = base64::engine::general_purpose::STANDARD
            .decode(checksum.as_bytes())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(ArtifactError::BadResponse(
                "malformed x-amz-checksum-sha256",
            ))?;
        Ok(Some(ObjectInfo { size, sha256 }))
    }

    /// Reads `key` once through SHA-256 and returns what was read, or `None` if nothing is
    /// there; stops with [`ArtifactError::DigestTooLarge`] past `max_len` bytes.
    ///
    /// For stores that keep no checksum, or for a validator that will not take the store's
    /// word. The bytes go through a hasher and are dropped; nothing is kept or forwarded.
    pub async fn digest(&self, key: &ObjectKey, max_len: u64) -> Result<Option<ObjectInfo>> {
        let (signed_at, _) = signing_time(SystemTime::now(), OWN_REQUEST_TTL)?;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key.as_str())
            .sign_with_time(OWN_REQUEST_TTL, &signed_at);
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(ArtifactError::transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ArtifactError::Refused {
                status: status.as_u16(),
            });
        }
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(ArtifactError::transport)? {
            size = size.saturating_add(chunk.len() as u64);
            if size > max_len {
                return Err(ArtifactError::DigestTooLarge { limit: max_len });
            }
            hasher.update(&chunk);
        }
        Ok(Some(ObjectInfo {
            size,
            sha256: hasher.finalize().into(),
        }))
    }
}

/// The signed headers of a PUT, in the order of [`PUT_SIGNED_HEADERS`].
fn put_headers(content_length: u64, sha256: &[u8; 32]) -> Vec<(&'static str, String)> {
    vec![
        ("content-length", content_length.to_string()),
        (
            "x-amz-checksum-sha256",
            base64::engine::general_purpose::STANDARD.encode(sha256),
        ),
        ("x-amz-content-sha256", hex::encode(sha256)),
    ]
}

/// Refuses lifetimes outside [`MIN_URL_TTL`]..=[`MAX_URL_TTL`].
pub(crate) fn check_ttl(ttl: Duration) -> Result<()> {
    if (MIN_URL_TTL..=MAX_URL_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(ArtifactError::TtlOutOfRange {
            requested_secs: ttl.as_secs(),
            min_secs: MIN_URL_TTL.as_secs(),
            max_secs: MAX_URL_TTL.as_secs(),
        })
    }
}

/// The signing instant (whole seconds, as `X-Amz-Date` carries) and when the URL expires.
fn signing_time(now: SystemTime, ttl: Duration) -> Result<(jiff::Timestamp, SystemTime)> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| ArtifactError::Config("the clock reads before 1970".into()))?
        .as_secs();
    let signed_at = i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .ok_or_else(|| ArtifactError::Config("the clock is out of range".into()))?;
    let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs + ttl.as_secs());
    Ok((signed_at, expires_at))
}

/// Bucket names as S3 accepts them, without dots (which break TLS for virtual hosts).
pub(crate) fn check_bucket_name(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::Config(
            "the bucket name must be 3-63 of [a-z0-9-], not starting or ending with '-'".into(),
        ))
    }
}

/// Regions are short lowercase names (`us-east-1`); they are part of the signature scope.
pub(crate) fn check_region(region: &str) -> Result<()> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::Config(
            "the region must be 1-32 of [a-z0-9-]".into(),
        ))
    }
}

/// Access key ids appear in the signature scope, which `/` separates, so they cannot hold one.
pub(crate) fn check_access_key(access_key: &str) -> Result<()> {
    let ok = (3..=128).contains(&access_key.len())
        && access_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::Config(
            "the access key id must be 3-128 of [A-Za-z0-9_-]".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ArtifactStore {
        ArtifactStore::new(
            "http://127.0.0.1:9000",
            "enclosure-artifacts",
            "us-east-1",
            "ENCLOSUREDEV",
            Zeroizing::new("very-secret-value".into()),
        )
        .unwrap()
    }

    fn key() -> ObjectKey {
        ObjectKey::for_artifact("r1", "m1", "a1").unwrap()
    }

    #[test]
    fn ttl_window_is_enforced() {
        let s = store();
        for secs in [0, 1, 59, 301, 3600, 604_800] {
            let err = s
                .presign_get(&key(), Duration::from_secs(secs))
                .unwrap_err();
            assert!(matches!(err, ArtifactError::TtlOutOfRange { .. }), "{secs}");
            let err = s
                .presign_put(&key(), 1, &[0; 32], Duration::from_secs(secs))
                .unwrap_err();
            assert!(matches!(err, ArtifactError::TtlOutOfRange { .. }), "{secs}");
        }
        assert!(
            s.presign_get(&key(), Duration::from_millis(300_001))
                .is_err()
        );
        for secs in [60, 120, 300] {
            assert!(s.presign_get(&key(), Duration::from_secs(secs)).is_ok());
        }
    }

    #[test]
    fn put_url_signs_length_and_both_hash_headers() {
        let sha = [7u8; 32];
        let p = store()
            .presign_put(&key(), 42, &sha, Duration::from_secs(120))
            .unwrap();
        let q: Vec<(String, String)> = p.url.query_pairs().into_owned().collect();
        let signed = q
            .iter()
            .find(|(k, _)| k == "X-Amz-SignedHeaders")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            signed,
            Some("content-length;host;x-amz-checksum-sha256;x-amz-content-sha256")
        );
        assert!(q.iter().any(|(k, v)| k == "X-Amz-Expires" && v == "120"));
        assert_eq!(
            p.url.path(),
            "/enclosure-artifacts/rooms/r1/milestones/m1/a1"
        );
        assert_eq!(p.headers[0], ("content-length", "42".into()));
        assert_eq!(p.headers[2], ("x-amz-content-sha256", hex::encode(sha)));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = store();
        assert!(!format!("{s:?}").contains("very-secret-value"));
        let p = s.presign_get(&key(), Duration::from_secs(60)).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("X-Amz-Signature"), "{shown}");
    }

    #[test]
    fn oversized_put_is_refused() {
        let err = store()
            .presign_put(&key(), MAX_PUT_LENGTH + 1, &[0; 32], MIN_URL_TTL)
            .unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge { .. }));
    }

    #[test]
    fn bad_configuration_is_refused_without_echoing_it() {
        let secret = || Zeroizing::new(String::from("s3cr3t"));
        let cases = [
            ("not a url", "bucket-a", "us-east-1", "AK1"),
            ("ftp://h", "bucket-a", "us-east-1", "AK1"),
            ("http://h", "Bucket", "us-east-1", "AK1"),
            ("http://h", "bucket-a", "US", "AK1"),
            ("http://h", "bucket-a", "us-east-1", "A/K"),
        ];
        for (endpoint, bucket, region, ak) in cases {
            let err = ArtifactStore::new(endpoint, bucket, region, ak, secret()).unwrap_err();
            assert!(!err.to_string().contains("s3cr3t"));
        }
        assert!(
            ArtifactStore::new(
                "http://h",
                "bucket-a",
                "us-east-1",
                "AK1",
                Zeroizing::new(String::new())
            )
            .is_err()
        );
    }
}
