//! What the authenticator trusts: one algorithm, one issuer, one audience, and a key source.
//!
//! `AuthSettings` is the `[auth]` table of the api's TOML file; `AuthConfig` is the checked
//! result, aware of the mode. Production refuses anything that would make it trust the dev
//! key: no key source at all (which in dev means "use the dev key"), a key file inside the dev
//! key directory, or the dev issuer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::AuthError;
use super::dev::{DEV_AUDIENCE, DEV_ISSUER, dev_key_dir};
use crate::config::Mode;

/// Default clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Default maximum `exp - iat`, in seconds: tokens meant to live longer are refused.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// Largest leeway accepted in configuration: more than a few minutes of skew is a broken clock,
/// and a large leeway quietly extends every token's life.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Largest maximum lifetime accepted in configuration (7 days).
pub const MAX_MAX_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// The one signature algorithm accepted; everything else, `none` and HS* included, is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum JwtAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ES384")]
    Es384,
}

impl JwtAlgorithm {
    /// The JOSE name, as it appears in a token header's `alg`.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::Es384 => "ES384",
        }
    }

    /// The JWK `crv` of keys for this algorithm.
    pub fn curve(self) -> &'static str {
        match self {
            JwtAlgorithm::Es256 => "P-256",
            JwtAlgorithm::Es384 => "P-384",
        }
    }

    /// Length in bytes of one coordinate of a public point.
    pub(crate) fn coordinate_len(self) -> usize {
        match self {
            JwtAlgorithm::Es256 => 32,
            JwtAlgorithm::Es384 => 48,
        }
    }

    pub(crate) fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            JwtAlgorithm::Es384 => jsonwebtoken::Algorithm::ES384,
        }
    }

    pub(crate) fn verification(self) -> &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm {
        match self {
            JwtAlgorithm::Es256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            JwtAlgorithm::Es384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

/// The `[auth]` table of the api's configuration file.
///
/// ```toml
/// [auth]
/// algorithm = "ES256"                      # or "ES384"; exactly one
/// issuer = "https://idp.example.com"
/// audience = "enclosure-api"
/// jwks_file = "/etc/enclosure/jwks.json"   # or, instead:
/// # [auth.pem_keys]
/// # key-2026-01 = "/etc/enclosure/jwt-2026-01.pem"
/// ```
///
/// In dev mode an empty table means "trust the dev key of the data directory".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The one accepted algorithm.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// The expected `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The expected `aud` (this api's name at the issuer).
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock-skew allowance in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Longest accepted `exp - iat`, in seconds.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: u64,
    /// A JWKS file of EC public keys, selected by `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys (SubjectPublicKeyInfo), by `kid`.
    #[serde(default)]
    pub pem_keys: BTreeMap<String, PathBuf>,
}

impl Default for AuthSettings {
    /// What an absent `[auth]` table means: the dev key, with the default leeway and lifetime.
    fn default() -> Self {
        AuthSettings {
            algorithm: JwtAlgorithm::default(),
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            jwks_file: None,
            pem_keys: BTreeMap::new(),
        }
    }
}

impl AuthSettings {
    /// Applies `ENCLOSURE_AUTH_*` overrides from `get`: `ALGORITHM` (ES256 or ES384),
    /// `ISSUER`, `AUDIENCE`, `JWKS_FILE`, `LEEWAY_SECS`, `MAX_LIFETIME_SECS`. PEM keys, being a
    /// map, come from the file only; a `JWKS_FILE` override replaces them.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), AuthError> {
        let secs = |name: &'static str, v: String| {
            v.parse::<u64>()
                .map_err(|_| AuthError::Config(format!("{name}: expected whole seconds")))
        };
        if let Some(v) = get("ENCLOSURE_AUTH_ALGORITHM") {
            self.algorithm = match v.as_str() {
                "ES256" => JwtAlgorithm::Es256,
                "ES384" => JwtAlgorithm::Es384,
                _ => {
                    return Err(AuthError::Config(
                        "ENCLOSURE_AUTH_ALGORITHM: expected ES256 or ES384".into(),
                    ));
                }
            };
        }
        if let Some(v) = get("ENCLOSURE_AUTH_ISSUER") {
            self.issuer = Some(v);
        }
        if let Some(v) = get("ENCLOSURE_AUTH_AUDIENCE") {
            self.audience = Some(v);
        }
        if let Some(v) = get("ENCLOSURE_AUTH_JWKS_FILE") {
            self.jwks_file = Some(v.into());
            self.pem_keys.clear();
        }
        if let Some(v) = get("ENCLOSURE_AUTH_LEEWAY_SECS") {
            self.leeway_secs = secs("ENCLOSURE_AUTH_LEEWAY_SECS", v)?;
        }
        if let Some(v) = get("ENCLOSURE_AUTH_MAX_LIFETIME_SECS") {
            self.max_lifetime_secs = secs("ENCLOSURE_AUTH_MAX_LIFETIME_SECS", v)?;
        }
        Ok(())
    }
}

fn default_leeway() -> u64 {
    DEFAULT_LEEWAY_SECS
}

fn default_max_lifetime() -> u64 {
    DEFAULT_MAX_LIFETIME_SECS
}

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file.
    Jwks(PathBuf),
    /// PEM public key files, by `kid`.
    Pem(BTreeMap<String, PathBuf>),
    /// The dev key of a data directory, generated at first use. Dev mode only.
    Dev,
}

/// The checked, mode-aware authentication configuration.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Dev or production: production refuses the dev key and the dev issuer.
    pub mode: Mode,
    /// The data directory, home of the dev key (and refused as a key location in production).
    pub data_dir: PathBuf,
    /// The one accepted algorithm.
    pub algorithm: JwtAlgorithm,
    /// The expected `iss`.
    pub issuer: String,
    /// The expected `aud`.
    pub audience: String,
    /// Clock-skew allowance in seconds.
    pub leeway_secs: u64,
    /// Longest accepted `exp - iat`, in seconds.
    pub max_lifetime_secs: u64,
    /// The verification keys.
    pub keys: KeySource,
}

impl AuthConfig {
    /// The dev configuration: the data directory's dev key, ES256, the dev issuer and audience.
    pub fn dev(data_dir: &Path) -> Self {
        AuthConfig {
            mode: Mode::Dev,
            data_dir: data_dir.to_path_buf(),
            algorithm: JwtAlgorithm::Es256,
            issuer: DEV_ISSUER.to_string(),
            audience: DEV_AUDIENCE.to_string(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            keys: KeySource::Dev,
        }
    }

    /// Checks the `[auth]` settings for `mode`. In dev, no key source means the dev key; in
    /// production it is an error, as are the dev issuer and key files in the dev key directory.
    pub fn from_settings(
        settings: &AuthSettings,
        data_dir: &Path,
        mode: Mode,
    ) -> Result<Self, AuthError> {
        if settings.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config(format!(
                "auth.leeway_secs is at most {MAX_LEEWAY_SECS}"
            )));
        }
        if settings.max_lifetime_secs == 0 || settings.max_lifetime_secs > MAX_MAX_LIFETIME_SECS {
            return Err(AuthError::Config(format!(
                "auth.max_lifetime_secs is between 1 and {MAX_MAX_LIFETIME_SECS}"
            )));
        }
        let keys = match (&settings.jwks_file, settings.pem_keys.is_empty()) {
            (Some(_), false) => {
                return Err(AuthError::Config(
                    "configure either jwks_file or pem_keys, not both".into(),
                ));
            }
            (Some(path), true) => KeySource::Jwks(path.clone()),
            (None, false) => KeySource::Pem(settings.pem_keys.clone()),
            (None, true) if mode == Mode::Production => {
                return Err(AuthError::DevInProduction(
                    "the dev JWT key (configure auth.jwks_file or auth.pem_keys)",
                ));
            }
            (None, true) => {
                if settings.issuer.is_some() || settings.audience.is_some() {
                    return Err(AuthError::Config(
                        "auth.issuer and auth.audience need a key source; \
                         the dev key always uses the dev issuer and audience"
                            .into(),
                    ));
                }
                let mut dev = AuthConfig::dev(data_dir);
                dev.leeway_secs = settings.leeway_secs;
                dev.max_lifetime_secs = settings.max_lifetime_secs;
                return Ok(dev);
            }
        };
        let (Some(issuer), Some(audience)) = (&settings.issuer, &settings.audience) else {
            return Err(AuthError::Config(
                "auth.issuer and auth.audience are required with a key source".into(),
            ));
        };
        if issuer.is_empty() || audience.is_empty() {
            return Err(AuthError::Config(
                "auth.issuer and auth.audience must not be empty".into(),
            ));
        }
        let config = AuthConfig {
            mode,
            data_dir: data_dir.to_path_buf(),
            algorithm: settings.algorithm,
            issuer: issuer.clone(),
            audience: audience.clone(),
            leeway_secs: settings.leeway_secs,
            max_lifetime_secs: settings.max_lifetime_secs,
            keys,
        };
        config.check_mode()?;
        Ok(config)
    }

    /// Refuses, in production, every way of trusting the dev key or the dev issuer. Called
    /// again by `Authenticator::new`, so a hand-built `AuthConfig` cannot slip past it.
    pub(crate) fn check_mode(&self) -> Result<(), AuthError> {
        if self.mode != Mode::Production {
            return Ok(());
        }
        if self.issuer == DEV_ISSUER {
            return Err(AuthError::DevInProduction("the dev JWT issuer"));
        }
        let paths: Vec<&Path> = match &self.keys {
            KeySource::Dev => return Err(AuthError::DevInProduction("the dev JWT key")),
            KeySource::Jwks(path) => vec![path],
            KeySource::Pem(map) => map.values().map(PathBuf::as_path).collect(),
        };
        let dev_dir = canonical_or_same(&dev_key_dir(&self.data_dir));
        for path in paths {
            if canonical_or_same(path).starts_with(&dev_dir) {
                return Err(AuthError::DevInProduction(
                    "a JWT key from the dev key directory",
                ));
            }
        }
        Ok(())
    }
}

/// The canonical path when it exists (so `..` and symlinks cannot dodge the dev-directory
/// check), else the path as given.
fn canonical_or_same(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> AuthSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn dev_mode_without_keys_uses_the_dev_key() {
        let cfg = AuthConfig::from_settings(&settings(""), Path::new("/d"), Mode::Dev).unwrap();
        assert_eq!(cfg.keys, KeySource::Dev);
        assert_eq!(cfg.issuer, DEV_ISSUER);
        assert_eq!(cfg.audience, DEV_AUDIENCE);
        assert_eq!(cfg.algorithm, JwtAlgorithm::Es256);
        assert_eq!(cfg.leeway_secs, DEFAULT_LEEWAY_SECS);
    }

    #[test]
    fn production_refuses_the_dev_key_and_the_dev_issuer() {
        let err = AuthConfig::from_settings(&settings(""), Path::new("/d"), Mode::Production);
        assert!(matches!(err, Err(AuthError::DevInProduction(_))));

        let s = settings(
            "issuer = \"enclosure-dev\"\naudience = \"a\"\njwks_file = \"/etc/jwks.json\"\n",
        );
        let err = AuthConfig::from_settings(&s, Path::new("/d"), Mode::Production);
        assert!(matches!(err, Err(AuthError::DevInProduction(_))));

        let mut cfg = AuthConfig::dev(Path::new("/d"));
        cfg.mode = Mode::Production;
        assert!(matches!(
            cfg.check_mode(),
            Err(AuthError::DevInProduction(_))
        ));
    }

    #[test]
    fn production_refuses_key_files_in_the_dev_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dev_jwks = dir.path().join("auth/../auth/dev-jwks.json");
        let s = AuthSettings {
            issuer: Some("https://idp".into()),
            audience: Some("api".into()),
            jwks_file: Some(dev_jwks),
            ..AuthSettings::default()
        };
        let err = AuthConfig::from_settings(&s, dir.path(), Mode::Production);
        assert!(matches!(err, Err(AuthError::DevInProduction(_))));

        let s = AuthSettings {
            issuer: Some("https://idp".into()),
            audience: Some("api".into()),
            pem_keys: [("k1".to_string(), PathBuf::from("/etc/enclosure/k1.pem"))].into(),
            ..AuthSettings::default()
        };
        let cfg = AuthConfig::from_settings(&s, dir.path(), Mode::Production).unwrap();
        assert!(matches!(cfg.keys, KeySource::Pem(_)));
    }

    #[test]
    fn settings_are_checked() {
        let both = settings(
            "issuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\n[pem_keys]\nk = \"p\"\n",
        );
        assert!(AuthConfig::from_settings(&both, Path::new("/d"), Mode::Dev).is_err());
        let no_aud = settings("issuer = \"i\"\njwks_file = \"j\"\n");
        assert!(AuthConfig::from_settings(&no_aud, Path::new("/d"), Mode::Dev).is_err());
        let dev_with_issuer = settings("issuer = \"i\"\n");
        assert!(AuthConfig::from_settings(&dev_with_issuer, Path::new("/d"), Mode::Dev).is_err());
        assert!(toml::from_str::<AuthSettings>("algorithm = \"HS256\"\n").is_err());
        assert!(toml::from_str::<AuthSettings>("algorithms = [\"ES256\"]\n").is_err());
        let es384 = settings("algorithm = \"ES384\"\n");
        assert_eq!(es384.algorithm, JwtAlgorithm::Es384);
    }

    #[test]
    fn defaults_match_an_empty_table_and_limits_hold() {
        let (default, empty) = (AuthSettings::default(), settings(""));
        assert_eq!(default.leeway_secs, empty.leeway_secs);
        assert_eq!(default.max_lifetime_secs, empty.max_lifetime_secs);
        for bad in [
            "leeway_secs = 301\n",
            "max_lifetime_secs = 0\n",
            "max_lifetime_secs = 9999999\n",
        ] {
            assert!(AuthConfig::from_settings(&settings(bad), Path::new("/d"), Mode::Dev).is_err());
        }
    }

    #[test]
    fn environment_overrides_the_table() {
        let mut s = settings("[pem_keys]\nk = \"/k.pem\"\n");
        s.apply_env(|k| match k {
            "ENCLOSURE_AUTH_ALGORITHM" => Some("ES384".into()),
            "ENCLOSURE_AUTH_ISSUER" => Some("https://idp".into()),
            "ENCLOSURE_AUTH_AUDIENCE" => Some("api".into()),
            "ENCLOSURE_AUTH_JWKS_FILE" => Some("/etc/jwks.json".into()),
            "ENCLOSURE_AUTH_LEEWAY_SECS" => Some("10".into()),
            _ => None,
        })
        .unwrap();
        let cfg = AuthConfig::from_settings(&s, Path::new("/d"), Mode::Production).unwrap();
        assert_eq!(cfg.algorithm, JwtAlgorithm::Es384);
        assert_eq!(cfg.keys, KeySource::Jwks("/etc/jwks.json".into()));
        assert_eq!(cfg.leeway_secs, 10);
        assert!(
            s.apply_env(|k| (k == "ENCLOSURE_AUTH_ALGORITHM").then(|| "HS256".into()))
                .is_err()
        );
        assert!(
            s.apply_env(|k| (k == "ENCLOSURE_AUTH_LEEWAY_SECS").then(|| "1m".into()))
                .is_err()
        );
    }
}
