//! Configuration: a TOML file, overridden by `ENCLOSURE_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use enclosure_protocol::Address;
use serde::Deserialize;

/// Whether dev conveniences are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local development: self-signed TLS, dev attester, dev keys — announced loudly.
    #[default]
    Dev,
    /// Production: every dev convenience is refused.
    Production,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Settings that parse but cannot work together.
    #[error("invalid settings: {0}")]
    Invalid(&'static str),
    /// Production mode was asked to use a dev convenience.
    #[error("production mode refuses {0}")]
    DevInProduction(&'static str),
}

/// The api's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// dev or production.
    #[serde(default)]
    pub mode: Mode,
    /// HTTPS listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The data directory (dev TLS certificate, SQLite file, dev keys).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The enclave, normally through the host proxy: unix:///path or vsock://CID:PORT.
    pub enclave: String,
    /// TLS certificate chain (PEM). In dev, generated under the data directory when absent.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Prometheus metrics listener (plain HTTP; keep it private). None disables metrics.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Ticket lifetime in seconds (capped at the protocol maximum of 60).
    #[serde(default = "default_ticket_ttl")]
    pub ticket_ttl_secs: u64,
    /// Storage.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// Key-operation rate limits.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Bearer-token authentication.
    #[serde(default)]
    pub auth: crate::auth::AuthSettings,
    /// The payment provider and its webhooks (escrow); absent: escrow funding is unavailable.
    #[serde(default)]
    pub payments: Option<crate::payments::config::PaymentsConfig>,
    /// The artifact store (escrow); absent: artifact URLs are unavailable.
    #[serde(default)]
    pub artifacts: Option<crate::artifacts::ArtifactSettings>,
    /// How often the escrow scheduler runs (deadlines, validation, settlements), in
    /// milliseconds; 0 turns it off (another api process then has to run it).
    #[serde(default = "default_scheduler_interval")]
    pub scheduler_interval_ms: u64,
    /// How long a scheduler holds a settlement saga it claimed, in milliseconds: after a
    /// crash, another process resumes the saga once this runs out. Keep it above the
    /// payment provider's timeout.
    #[serde(default = "default_settlement_lease")]
    pub settlement_lease_ms: u64,
}

fn default_settlement_lease() -> u64 {
    30_000
}

fn default_scheduler_interval() -> u64 {
    1_000
}

/// The `[database]` table: PostgreSQL URLs, or nothing for the embedded SQLite file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// The app role's PostgreSQL URL (`DATABASE_URL`); absent means SQLite in the data dir.
    #[serde(default)]
    pub url: Option<String>,
    /// The owner role's URL, used to run migrations (`ENCLOSURE_DATABASE_OWNER_URL`).
    #[serde(default)]
    pub owner_url: Option<String>,
}

/// The `[rate_limits]` table: key operations per minute, each a bucket that refills evenly.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Per authenticated user.
    #[serde(default = "default_per_user")]
    pub per_user_per_minute: u32,
    /// Per identity.
    #[serde(default = "default_per_identity")]
    pub per_identity_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_user_per_minute: default_per_user(),
            per_identity_per_minute: default_per_identity(),
        }
    }
}

fn default_per_user() -> u32 {
    6000
}

fn default_per_identity() -> u32 {
    6000
}

fn default_body_limit() -> usize {
    256 * 1024
}

fn default_ticket_ttl() -> u64 {
    30
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./enclosure-data")
}

impl ApiConfig {
    /// A dev configuration for a data directory and proxy address.
    pub fn dev(data_dir: &Path, enclave: &Address, listen: SocketAddr) -> Self {
        ApiConfig {
            mode: Mode::Dev,
            listen,
            data_dir: data_dir.to_path_buf(),
            enclave: enclave.to_string(),
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            body_limit_bytes: default_body_limit(),
            ticket_ttl_secs: default_ticket_ttl(),
            scheduler_interval_ms: default_scheduler_interval(),
            settlement_lease_ms: default_settlement_lease(),
            database: DatabaseSettings::default(),
            rate_limits: RateLimits::default(),
            auth: crate::auth::AuthSettings::default(),
            payments: None,
            artifacts: None,
        }
    }

    /// The storage this configuration names.
    pub fn database_config(&self) -> crate::store::DatabaseConfig {
        match &self.database.url {
            Some(url) => crate::store::DatabaseConfig::Postgres {
                url: url.clone(),
                owner_url: self.database.owner_url.clone(),
            },
            None => crate::store::DatabaseConfig::Sqlite {
                path: self.data_dir.join("enclosure.db"),
            },
        }
    }

    /// The checked authentication configuration.
    pub fn auth_config(&self) -> Result<crate::auth::AuthConfig, crate::auth::AuthError> {
        crate::auth::AuthConfig::from_settings(&self.auth, &self.data_dir, self.mode)
    }

    /// Loads a TOML file, then applies environment overrides and checks the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: ApiConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `ENCLOSURE_*` overrides from `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("ENCLOSURE_MODE") {
            self.mode = match v.as_str() {
                "dev" => Mode::Dev,
                "production" => Mode::Production,
                _ => {
                    return Err(ConfigError::Env {
                        name: "ENCLOSURE_MODE",
                        message: "expected dev or production".into(),
                    });
                }
            };
        }
        if let Some(v) = get("ENCLOSURE_LISTEN") {
            self.listen = v.parse().map_err(|_| ConfigError::Env {
                name: "ENCLOSURE_LISTEN",
                message: "expected HOST:PORT".into(),
            })?;
        }
        if let Some(v) = get("ENCLOSURE_ENCLAVE") {
            self.enclave = v;
        }
        if let Some(v) = get("ENCLOSURE_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("ENCLOSURE_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = get("ENCLOSURE_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        if let Some(v) = get("DATABASE_URL") {
            self.database.url = Some(v);
        }
        if let Some(v) = get("ENCLOSURE_DATABASE_OWNER_URL") {
            self.database.owner_url = Some(v);
        }
        self.auth.apply_env(&get).map_err(|e| ConfigError::Env {
            name: "ENCLOSURE_AUTH_*",
            message: e.to_string(),
        })?;
        if let Some(v) = get("ENCLOSURE_METRICS_LISTEN") {
            self.metrics_listen = Some(v.parse().map_err(|_| ConfigError::Env {
                name: "ENCLOSURE_METRICS_LISTEN",
                message: "expected HOST:PORT".into(),
            })?);
        }
        Ok(())
    }

    /// Checks the settings hang together, and that production uses no dev convenience.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.enclave_address()?;
        if self.mode == Mode::Production && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(ConfigError::DevInProduction(
                "a generated self-signed TLS certificate (set tls_cert and tls_key)",
            ));
        }
        if self.mode == Mode::Production {
            // The payments sandbox and the local artifact store speak plain HTTP on loopback;
            // production talks to real providers over TLS only.
            if let Some(p) = &self.payments
                && !p.provider_url.starts_with("https://")
            {
                return Err(ConfigError::DevInProduction(
                    "a plain-HTTP payment provider (the sandbox)",
                ));
            }
            if let Some(a) = &self.artifacts
                && !a.endpoint.starts_with("https://")
            {
                return Err(ConfigError::DevInProduction(
                    "a plain-HTTP artifact store (the local store)",
                ));
            }
        }
        let limits = self.rate_limits;
        if limits.per_user_per_minute == 0 || limits.per_identity_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "rate_limits: 0 would refuse every key operation; the least is 1 a minute",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid("tls_cert and tls_key go together"));
        }
        Ok(())
    }

    /// The parsed enclave address.
    pub fn enclave_address(&self) -> Result<Address, ConfigError> {
        self.enclave.parse().map_err(|_| ConfigError::Env {
            name: "enclave",
            message: format!(
                "{:?} is not unix:///path, vsock://CID:PORT or tcp://HOST:PORT",
                self.enclave
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ApiConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn production_refuses_a_generated_certificate() {
        let cfg = parse("mode = \"production\"\nenclave = \"unix:///run/p.sock\"\n");
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::DevInProduction(_))
        ));
        let cfg = parse(
            "mode = \"production\"\nenclave = \"unix:///run/p.sock\"\ntls_cert = \"c\"\ntls_key = \"k\"\n",
        );
        cfg.validate().unwrap();
    }

    #[test]
    fn production_refuses_the_payments_sandbox_and_the_local_store() {
        let base = "mode = \"production\"\nenclave = \"unix:///p.sock\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let sandbox = format!(
            "{base}[payments]\nprovider_url = \"http://127.0.0.1:8790\"\napi_key_file = \"k\"\nwebhook_secret_files = [\"s\"]\n"
        );
        assert!(matches!(
            parse(&sandbox).validate(),
            Err(ConfigError::DevInProduction(_))
        ));
        let real = sandbox.replace("http://127.0.0.1:8790", "https://pay.example.com");
        parse(&real).validate().unwrap();
        let store = format!(
            "{base}[artifacts]\nendpoint = \"http://127.0.0.1:9300\"\naccess_key = \"a\"\nsecret_key_file = \"s\"\n"
        );
        assert!(matches!(
            parse(&store).validate(),
            Err(ConfigError::DevInProduction(_))
        ));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut cfg = parse("enclave = \"unix:///a.sock\"\n");
        cfg.apply_env(|k| match k {
            "ENCLOSURE_LISTEN" => Some("127.0.0.1:9443".into()),
            "ENCLOSURE_MODE" => Some("production".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.listen.port(), 9443);
        assert_eq!(cfg.mode, Mode::Production);
        let err = cfg.apply_env(|k| (k == "ENCLOSURE_MODE").then(|| "prod".into()));
        assert!(err.is_err());
    }

    #[test]
    fn a_rate_limit_of_zero_is_refused() {
        let base = "enclave = \"unix:///a.sock\"\n[rate_limits]\n";
        for table in ["per_user_per_minute = 0\n", "per_identity_per_minute = 0\n"] {
            let err = parse(&format!("{base}{table}")).validate().unwrap_err();
            assert!(err.to_string().contains("rate_limits"), "{err}");
        }
        assert!(
            parse(&format!("{base}per_user_per_minute = 1\n"))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn an_absent_table_means_the_same_as_an_empty_one() {
        let absent = parse("enclave = \"unix:///a.sock\"\n");
        let empty = parse("enclave = \"unix:///a.sock\"\n[auth]\n[rate_limits]\n");
        assert!(absent.auth.max_lifetime_secs > 0);
        assert_eq!(absent.auth.max_lifetime_secs, empty.auth.max_lifetime_secs);
        assert_eq!(absent.auth.leeway_secs, empty.auth.leeway_secs);
        assert_eq!(
            absent.rate_limits.per_user_per_minute,
            empty.rate_limits.per_user_per_minute
        );
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused() {
        assert!(toml::from_str::<ApiConfig>("enclave = \"unix:///a\"\nlisten_port = 1\n").is_err());
        assert!(parse("enclave = \"http://x\"\n").validate().is_err());
    }
}
