//! The dev signing key: an ES256 key generated at first start under `DATA_DIR/auth/`, so that
//! `enclosure dev token` can mint tokens the local stack accepts. Dev mode only: production
//! refuses it (see `AuthConfig::check_mode` and the `enclosure_dev` JWK marker).
//!
//! The private key is a PKCS#8 PEM file created with mode 0600 (never chmod-ed afterwards,
//! which would leave a window) and published atomically, so two processes starting at once
//! agree on one key: the first link wins and the other reads it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::keys::{DEV_MARKER, ec_thumbprint, read_capped};
use super::{AuthError, JwtAlgorithm, Role, unix_seconds};

/// The `iss` of dev tokens.
pub const DEV_ISSUER: &str = "enclosure-dev";

/// The `aud` of dev tokens.
pub const DEV_AUDIENCE: &str = "enclosure-api";

/// Longest lifetime of a dev token; matches the verifier's default maximum.
pub const DEV_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where a data directory keeps its dev key, and the key's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevKeyPaths {
    /// The private key, PKCS#8 PEM, mode 0600.
    pub private_key: PathBuf,
    /// The public JWKS the dev api verifies with.
    pub jwks: PathBuf,
    /// The key id: the RFC 7638 thumbprint of the public key.
    pub kid: String,
}

/// The directory of dev key files under a data directory.
pub fn dev_key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("auth")
}

/// Returns the data directory's dev key, generating it (and its JWKS) on first use.
pub fn ensure_dev_key(data_dir: &Path) -> Result<DevKeyPaths, AuthError> {
    let (paths, _) = load_or_create(data_dir)?;
    Ok(paths)
}

/// Signs a dev token for `sub` with `role`, valid from `now` for `ttl`, with the dev issuer and
/// audience. Generates the dev key if the data directory has none yet.
pub fn mint_dev_token(
    data_dir: &Path,
    sub: &str,
    role: Role,
    ttl: Duration,
    now: SystemTime,
) -> Result<String, AuthError> {
    if sub.is_empty() || sub.len() > super::MAX_SUB_LEN || sub.chars().any(char::is_control) {
        return Err(AuthError::DevToken(format!(
            "sub must be 1 to {} printable bytes",
            super::MAX_SUB_LEN
        )));
    }
    if ttl.is_zero() || ttl > DEV_MAX_TTL {
        return Err(AuthError::DevToken(format!(
            "ttl must be between 1 s and {} s",
            DEV_MAX_TTL.as_secs()
        )));
    }
    let (paths, pkcs8) = load_or_create(data_dir)?;
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        aud: &'a str,
        sub: &'a str,
        role: Role,
        iat: u64,
        exp: u64,
    }
    let iat = unix_seconds(now);
    let claims = Claims {
        iss: DEV_ISSUER,
        aud: DEV_AUDIENCE,
        sub,
        role,
        iat,
        exp: iat + ttl.as_secs(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(paths.kid);
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pkcs8.0);
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| AuthError::DevToken(e.to_string()))
}

/// PKCS#8 DER of the dev key, overwritten when dropped (std only, so no zeroize dependency:
/// `black_box` keeps the compiler from eliding the writes).
struct Pkcs8(Vec<u8>);

impl Drop for Pkcs8 {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

fn load_or_create(data_dir: &Path) -> Result<(DevKeyPaths, Pkcs8), AuthError> {
    let dir = dev_key_dir(data_dir);
    let private_key = dir.join("dev-jwt-key.pem");
    let jwks = dir.join("dev-jwks.json");
    let pkcs8 = match read_private(&private_key)? {
        Some(pkcs8) => pkcs8,
        None => create(&dir, &private_key)?,
    };
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8.0).map_err(|_| {
            AuthError::DevToken(format!(
                "{} is not an ES256 PKCS#8 key",
                private_key.display()
            ))
        })?;
    // Uncompressed SEC1 point: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    let (x, y) = point[1..].split_at(32);
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let kid = ec_thumbprint(JwtAlgorithm::Es256, &x, &y);
    let doc = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid,
        "alg": "ES256", "use": "sig", DEV_MARKER: true,
    }]});
    let text = format!("{doc:#}\n");
    // Rewritten whenever it does not match the key, so a stale or edited JWKS heals itself.
    if std::fs::read_to_string(&jwks).ok().as_deref() != Some(text.as_str()) {
        publish(&jwks, text.as_bytes(), 0o644, true)?;
    }
    Ok((
        DevKeyPaths {
            private_key,
            jwks,
            kid,
        },
        pkcs8,
    ))
}

/// Reads the PEM private key if present, refusing one that others can read.
fn read_private(path: &Path) -> Result<Option<Pkcs8>, AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(AuthError::DevToken(format!(
            "{} is readable by others; expected mode 0600",
            path.display()
        )));
    }
    let pem = Pkcs8(read_capped(path)?);
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem.0)
        .map_err(|_| AuthError::DevToken(format!("{} is not a PKCS#8 EC key", path.display())))?;
    Ok(Some(Pkcs8(key.as_bytes().to_vec())))
}

fn create(dir: &Path, private_key: &Path) -> Result<Pkcs8, AuthError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuthError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| AuthError::DevToken("generating the dev key failed".into()))?;
    let doc = pair
        .to_pkcs8v1()
        .map_err(|_| AuthError::DevToken("encoding the dev key failed".into()))?;
    let pem = Pkcs8(crate::pem::encode("PRIVATE KEY", doc.as_ref()).into_bytes());
    if publish(private_key, &pem.0, 0o600, false)? {
        tracing::warn!(
            path = %private_key.display(),
            "DEV MODE: generated a dev JWT signing key; tokens it signs are refused in production"
        );
        return Ok(Pkcs8(doc.as_ref().to_vec()));
    }
    // Another process published its key first: use that one, so both agree.
    read_private(private_key)?.ok_or_else(|| AuthError::DevToken("the dev key vanished".into()))
}

/// Writes `bytes` to a temporary file created with `mode`, then moves it into place: with
/// `replace`, by rename; without, by hard link, which fails if `path` exists. Returns whether
/// this call's bytes ended up at `path`.
fn publish(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<bool, AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| AuthError::DevToken("no randomness".into()))?;
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(nonce)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            std::fs::rename(&tmp, path).map(|()| true)
        } else {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
    })();
    // After a rename the temporary name is gone already; after a link it is a second name.
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_dev_key_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_key(dir.path()).unwrap();
        let mode = std::fs::metadata(&first.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dev_key_dir(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let pem = std::fs::read(&first.private_key).unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));

        let second = ensure_dev_key(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&second.private_key).unwrap(), pem);
        assert_eq!(first.kid.len(), 43);
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(dev_key_dir(dir.path())).unwrap().count(),
            2
        );
    }

    #[test]
    fn the_jwks_is_derived_from_the_key_and_marked_dev() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure_dev_key(dir.path()).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&paths.jwks).unwrap()).unwrap();
        let key = &doc["keys"][0];
        assert_eq!(key["kid"], paths.kid.as_str());
        assert_eq!(key["enclosure_dev"], true);
        assert!(key.get("d").is_none());
        // A damaged JWKS is rewritten from the key.
        std::fs::write(&paths.jwks, "{}").unwrap();
        ensure_dev_key(dir.path()).unwrap();
        let again: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&paths.jwks).unwrap()).unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure_dev_key(dir.path()).unwrap();
        std::fs::set_permissions(&paths.private_key, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            ensure_dev_key(dir.path()),
            Err(AuthError::DevToken(_))
        ));
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let kids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| ensure_dev_key(dir.path()).unwrap().kid))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(kids.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn dev_tokens_check_their_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(mint_dev_token(dir.path(), "", Role::Client, hour, now).is_err());
        assert!(mint_dev_token(dir.path(), "a\nb", Role::Client, hour, now).is_err());
        assert!(mint_dev_token(dir.path(), "alice", Role::Client, Duration::ZERO, now).is_err());
        assert!(mint_dev_token(dir.path(), "alice", Role::Client, hour * 25, now).is_err());
        assert!(mint_dev_token(dir.path(), "alice", Role::Client, hour, now).is_ok());
    }
}
