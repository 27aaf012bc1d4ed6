//! The api's `[artifacts]` settings, and the dev secret shared by the api and `enclosure-s3`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::{ArtifactError, Result};
use super::presign::{ArtifactStore, check_ttl};

/// Where the artifact store is and how the api signs for it.
///
/// Holds the path of the secret, never the secret itself, so it can be logged and compared.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSettings {
    /// The store's endpoint: `https://…`, or `http://` to a loopback address (the local store).
    pub endpoint: String,
    /// The bucket holding artifacts.
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// The region signatures are scoped to.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id.
    pub access_key: String,
    /// A file holding the secret key (trailing newline ignored).
    pub secret_key_file: PathBuf,
    /// Lifetime of the URLs handed to clients, 60–300 s.
    #[serde(default = "default_url_ttl_secs")]
    pub url_ttl_secs: u64,
}

/// The bucket name `enclosure up` and `enclosure-s3` use by default.
pub const DEFAULT_BUCKET: &str = "enclosure-artifacts";
/// The region `enclosure up` and `enclosure-s3` use by default.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The access key id of the local stack.
pub const DEV_ACCESS_KEY: &str = "ENCLOSUREDEV";

fn default_bucket() -> String {
    DEFAULT_BUCKET.into()
}

fn default_region() -> String {
    DEFAULT_REGION.into()
}

fn default_url_ttl_secs() -> u64 {
    120
}

impl ArtifactSettings {
    /// Settings for the local stack: `enclosure-s3` at `endpoint`, the dev key pair whose
    /// secret [`ensure_dev_secret_file`] keeps under `data_dir`.
    pub fn dev(data_dir: &Path, endpoint: &str) -> Self {
        ArtifactSettings {
            endpoint: endpoint.into(),
            bucket: default_bucket(),
            region: default_region(),
            access_key: DEV_ACCESS_KEY.into(),
            secret_key_file: dev_secret_path(data_dir),
            url_ttl_secs: default_url_ttl_secs(),
        }
    }

    /// The lifetime for client URLs, checked against the 60–300 s window.
    pub fn url_ttl(&self) -> Result<Duration> {
        let ttl = Duration::from_secs(self.url_ttl_secs);
        check_ttl(ttl)?;
        Ok(ttl)
    }

    /// Reads the secret and builds the presigner. Refuses plain HTTP to anything but loopback:
    /// a presigned URL sent in the clear is usable by whoever sees it until it expires.
    pub fn open(&self) -> Result<ArtifactStore> {
        self.url_ttl()?;
        let endpoint = url::Url::parse(&self.endpoint)
            .map_err(|_| ArtifactError::Config("the endpoint is not a URL".into()))?;
        let loopback = match endpoint.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if endpoint.scheme() != "https" && !loopback {
            return Err(ArtifactError::Config(
                "the endpoint must be https unless it is a loopback address".into(),
            ));
        }
        let secret = read_secret_file(&self.secret_key_file)?;
        ArtifactStore::new(
            &self.endpoint,
            &self.bucket,
            &self.region,
            &self.access_key,
            secret,
        )
    }
}

/// Where the local stack keeps its store secret: `{data_dir}/s3-secret`.
pub fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("s3-secret")
}

/// Reads a secret key file, dropping a trailing newline; an empty file is refused.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>> {
    let mut secret = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ArtifactError::Config(format!(
            "reading the secret key file {}: {e}",
            path.display()
        ))
    })?);
    while secret.ends_with(['\n', '\r']) {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(ArtifactError::Config(format!(
            "the secret key file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// Creates the local stack's store secret (32 random bytes, hex, mode 0600) unless it exists,
/// and returns its path. Dev only: production keys come from the operator.
pub fn ensure_dev_secret_file(data_dir: &Path) -> Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let path = dev_secret_path(data_dir);
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ArtifactError::Config("no randomness for the dev store secret".into()))?;
    let secret = Zeroizing::new(hex::encode(bytes));
    std::fs::create_dir_all(data_dir)?;
    // create_new: a secret already there (another process's, or an earlier run's) is kept.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            tracing::warn!(
                path = %path.display(),
                "DEV MODE: generated a secret for the local artifact store"
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_settings_open_with_the_generated_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = ensure_dev_secret_file(dir.path()).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert_eq!(ensure_dev_secret_file(dir.path()).unwrap(), path);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            first,
            "the secret was replaced"
        );
        let settings = ArtifactSettings::dev(dir.path(), "http://127.0.0.1:9300");
        assert!(settings.open().is_ok());
        assert_eq!(settings.url_ttl().unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn plain_http_off_loopback_and_bad_ttls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_secret_file(dir.path()).unwrap();
        let mut s = ArtifactSettings::dev(dir.path(), "http://s3.example.com");
        assert!(s.open().is_err());
        s.endpoint = "https://s3.example.com".into();
        assert!(s.open().is_ok());
        s.url_ttl_secs = 600;
        assert!(matches!(s.open(), Err(ArtifactError::TtlOutOfRange { .. })));
    }

    #[test]
    fn parses_from_toml_with_defaults() {
        let s: ArtifactSettings = toml::from_str(
            "endpoint = \"https://s3.eu-west-1.amazonaws.com\"\n\
             access_key = \"AKIAEXAMPLE\"\n\
             secret_key_file = \"/run/secrets/s3\"\n",
        )
        .unwrap();
        assert_eq!(s.bucket, DEFAULT_BUCKET);
        assert_eq!(s.region, DEFAULT_REGION);
        assert_eq!(s.url_ttl_secs, 120);
    }
}
