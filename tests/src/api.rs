//! The whole stack with the HTTPS api: enclave, proxy and one or more api processes, on SQLite
//! or on a fresh PostgreSQL database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use enclosure_api::auth::{DEV_AUDIENCE, DEV_ISSUER, Role, mint_dev_token};
use enclosure_client::{ClientOptions, EnclosureClient};
use enclosure_policy::attestation::AttestationPolicy;

use crate::{Proc, Stack, pem_to_der};

/// Which database the api processes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the local PostgreSQL server.
    Postgres,
}

/// A throwaway PostgreSQL database, dropped on drop.
pub struct PgDatabase {
    name: String,
}

fn psql(sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql must be installed for the PostgreSQL tests")
}

impl PgDatabase {
    /// Creates a database with a random name. Fails loudly when PostgreSQL is not running.
    pub fn create() -> PgDatabase {
        let name = format!("enclosure_e2e_{}", hex::encode(rand::random::<[u8; 6]>()));
        let out = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "PostgreSQL on 127.0.0.1:5432 is needed (bash .ci/test starts it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PgDatabase { name }
    }

    /// URL for the application role (what the api uses for every query).
    pub fn app_url(&self) -> String {
        format!("postgres://enclosure_app@127.0.0.1:5432/{}", self.name)
    }

    /// URL for the owner (superuser here), which runs the migrations.
    pub fn owner_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// Runs SQL as the application role; returns whether it succeeded and its stderr.
    pub fn as_app(&self, sql: &str) -> (bool, String) {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-U",
                "enclosure_app",
                "-d",
                &self.name,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Extra settings for the api processes.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Key operations per user per minute (None: the default).
    pub per_user_per_minute: Option<u32>,
    /// Key operations per identity per minute (None: the default).
    pub per_identity_per_minute: Option<u32>,
    /// Serve Prometheus metrics on a free loopback port.
    pub metrics: bool,
    /// Start the payments sandbox and the local S3 store, and configure the apis for them.
    pub escrow: bool,
    /// The escrow scheduler's period (None: the api's default; 0: off).
    pub scheduler_interval_ms: Option<u64>,
    /// How long a scheduler's claim on a saga holds (None: the api's default).
    pub settlement_lease_ms: Option<u64>,
}

/// The escrow's outside services: the sandbox payment provider and the local S3 store.
pub struct EscrowServices {
    /// The sandbox process.
    pub sandbox: Proc,
    /// The sandbox's base URL.
    pub sandbox_url: String,
    /// The sandbox's API key (a test stands in for the client's bank with it).
    pub sandbox_key: String,
    /// The S3 store process.
    pub s3: Proc,
    /// The S3 store's endpoint URL.
    pub s3_url: String,
}

/// One running api process.
pub struct ApiProc {
    /// The process.
    pub proc: Proc,
    /// Its base URL.
    pub url: String,
    /// Its metrics URL, when metrics are on.
    pub metrics_url: Option<String>,
}

/// Enclave, proxy and api processes over one data directory.
pub struct ApiStack {
    /// Enclave and proxy.
    pub stack: Stack,
    /// The api processes.
    pub apis: Vec<ApiProc>,
    /// The PostgreSQL database, if any.
    pub pg: Option<PgDatabase>,
    /// The payment sandbox and S3 store, when `ApiSettings::escrow` is set.
    pub escrow: Option<EscrowServices>,
    settings: ApiSettings,
    /// Each api's port, kept across restarts (the sandbox posts its webhooks to api 0).
    ports: Vec<u16>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl ApiStack {
    /// Starts enclave, proxy and `apis` api processes on `backend`.
    pub async fn start(backend: Backend, apis: usize, settings: ApiSettings) -> ApiStack {
        let stack = Stack::start().await;
        let pg = (backend == Backend::Postgres).then(PgDatabase::create);
        let mut me = ApiStack {
            stack,
            apis: Vec::new(),
            pg,
            escrow: None,
            settings,
            ports: (0..apis.max(1)).map(|_| free_port()).collect(),
        };
        if me.settings.escrow {
            me.escrow = Some(me.start_escrow_services().await);
        }
        for i in 0..apis {
            me.start_api(i).await;
        }
        me
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.stack.dir.path()
    }

    async fn start_escrow_services(&self) -> EscrowServices {
        let dir = self.dir().to_path_buf();
        let (cert, _) =
            enclosure_api::tls::ensure_dev_certificate(&dir).expect("dev TLS certificate");
        let (api_key, webhook_secret) =
            enclosure_api::payments::ensure_dev_secret_files(&dir).expect("sandbox secrets");
        let pay_port = free_port();
        let pay_dir = dir.join("payments");
        let webhook = format!("https://127.0.0.1:{}/v1/webhooks/payments", self.ports[0]);
        let listen = format!("127.0.0.1:{pay_port}");
        let mut sandbox = Proc::spawn(
            "enclosure-payments-sandbox",
            &[
                "--listen",
                &listen,
                "--data-dir",
                &pay_dir.display().to_string(),
                "--api-key-file",
                &api_key.display().to_string(),
                "--webhook-secret-file",
                &webhook_secret.display().to_string(),
                "--webhook-url",
                &webhook,
                "--webhook-ca",
                &cert.display().to_string(),
                "--retry-initial-ms",
                "200",
                "--retry-max-ms",
                "1000",
            ],
            &dir,
        );
        let s3_secret = enclosure_api::artifacts::ensure_dev_secret_file(&dir).expect("S3 secret");
        let s3_port = free_port();
        let s3_listen = format!("127.0.0.1:{s3_port}");
        let mut s3 = Proc::spawn(
            "enclosure-s3",
            &[
                "--data-dir",
                &dir.display().to_string(),
                "--listen",
                &s3_listen,
                "--secret-key-file",
                &s3_secret.display().to_string(),
            ],
            &dir,
        );
        for (port, proc) in [(pay_port, &mut sandbox), (s3_port, &mut s3)] {
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                proc.assert_running();
                assert!(Instant::now() < deadline, "never listened:\n{}", proc.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let sandbox_key = std::fs::read_to_string(&api_key)
            .expect("sandbox key")
            .trim()
            .to_string();
        EscrowServices {
            sandbox,
            sandbox_url: format!("http://{listen}"),
            sandbox_key,
            s3,
            s3_url: format!("http://{s3_listen}"),
        }
    }

    fn escrow_config(&self) -> String {
        let Some(e) = &self.escrow else {
            return String::new();
        };
        let dir = self.dir();
        let (api_key, webhook_secret) = enclosure_api::payments::dev_secret_paths(dir);
        let a = enclosure_api::artifacts::ArtifactSettings::dev(dir, &e.s3_url);
        format!(
            "[payments]\nprovider_url = \"{}\"\napi_key_file = \"{}\"\nwebhook_secret_files = [\"{}\"]\n\
             [artifacts]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\naccess_key = \"{}\"\nsecret_key_file = \"{}\"\n",
            e.sandbox_url,
            api_key.display(),
            webhook_secret.display(),
            a.endpoint,
            a.bucket,
            a.region,
            a.access_key,
            a.secret_key_file.display()
        )
    }

    fn write_config(&self, index: usize, port: u16, metrics: Option<u16>) -> PathBuf {
        let mut toml = format!(
            "mode = \"dev\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nenclave = \"{}\"\n",
            self.dir().display(),
            self.stack.proxy_addr()
        );
        if let Some(m) = metrics {
            toml.push_str(&format!("metrics_listen = \"127.0.0.1:{m}\"\n"));
        }
        if let Some(ms) = self.settings.scheduler_interval_ms {
            toml.push_str(&format!("scheduler_interval_ms = {ms}\n"));
        }
        if let Some(ms) = self.settings.settlement_lease_ms {
            toml.push_str(&format!("settlement_lease_ms = {ms}\n"));
        }
        if let Some(pg) = &self.pg {
            toml.push_str(&format!(
                "[database]\nurl = \"{}\"\nowner_url = \"{}\"\n",
                pg.app_url(),
                pg.owner_url()
            ));
        }
        let limits = &self.settings;
        if limits.per_user_per_minute.is_some() || limits.per_identity_per_minute.is_some() {
            toml.push_str("[rate_limits]\n");
        }
        if let Some(n) = limits.per_user_per_minute {
            toml.push_str(&format!("per_user_per_minute = {n}\n"));
        }
        if let Some(n) = limits.per_identity_per_minute {
            toml.push_str(&format!("per_identity_per_minute = {n}\n"));
        }
        toml.push_str(&self.escrow_config());
        let path = self.dir().join(format!("api-{index}.toml"));
        std::fs::write(&path, toml).expect("api config");
        path
    }

    /// Starts api process number `index` and waits until it serves.
    pub async fn start_api(&mut self, index: usize) {
        self.start_api_with_env(index, &[]).await;
    }

    /// Starts api process number `index` with extra environment variables (a crash point,
    /// say), on the port it had before if it ran already, and waits until it serves.
    pub async fn start_api_with_env(&mut self, index: usize, env: &[(&str, &str)]) {
        while self.ports.len() <= index {
            self.ports.push(free_port());
        }
        let port = self.ports[index];
        // A previous process on this index gives up its port first.
        let previous = (index < self.apis.len()).then(|| self.apis.remove(index));
        if let Some(old) = previous {
            old.proc.kill();
        }
        let metrics = self.settings.metrics.then(free_port);
        let config = self.write_config(index, port, metrics);
        let config = config.display().to_string();
        let mut proc =
            Proc::spawn_with_env("enclosure-api", &["--config", &config], self.dir(), env);
        let url = format!("https://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            proc.assert_running();
            assert!(
                Instant::now() < deadline,
                "api never listened:\n{}",
                proc.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let api = ApiProc {
            proc,
            url,
            metrics_url: metrics.map(|m| format!("http://127.0.0.1:{m}/metrics")),
        };
        self.apis.insert(index.min(self.apis.len()), api);
        // Key operations answer 503 until the first restore check provisioned the enclave.
        self.wait_ready(index).await;
    }

    /// Waits until api `index` reports a provisioned enclave.
    pub async fn wait_ready(&self, index: usize) {
        let http = self.http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http
                .get(format!("{}/v1/health", self.apis[index].url))
                .send()
                .await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["enclave"]["provisioned"] == serde_json::json!(true)
            {
                return;
            }
            assert!(Instant::now() < deadline, "api {index} never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The dev TLS certificate the api serves.
    pub fn tls_root_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir().join("tls/cert.pem")).expect("dev TLS certificate")
    }

    /// A plain HTTPS client trusting the dev certificate.
    pub fn http(&self) -> reqwest::Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cert = reqwest::Certificate::from_pem(&self.tls_root_pem()).expect("PEM");
        reqwest::Client::builder()
            .tls_certs_only([cert])
            .build()
            .expect("client")
    }

    /// A dev token for `sub` with `role`.
    pub fn token(&self, sub: &str, role: Role) -> String {
        mint_dev_token(
            self.dir(),
            sub,
            role,
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .expect("dev token")
    }

    /// A token signed by the dev key with arbitrary claims (for refusal tests).
    pub fn token_with_claims(&self, claims: serde_json::Value) -> String {
        let jwks: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.dir().join("auth/dev-jwks.json")).expect("dev JWKS"),
        )
        .expect("JWKS JSON");
        let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_string();
        let pem = std::fs::read(self.dir().join("auth/dev-jwt-key.pem")).expect("dev key");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid);
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("EC key"),
        )
        .expect("token")
    }

    /// Standard dev claims, to be altered by a test.
    pub fn claims(&self, sub: &str, role: &str) -> serde_json::Value {
        let now = crate::now();
        serde_json::json!({
            "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": sub, "role": role,
            "iat": now, "exp": now + 600,
        })
    }

    /// The policy a client uses: the dev root trusted.
    pub fn policy(&self) -> AttestationPolicy {
        AttestationPolicy::default().with_dev_root_der(pem_to_der(&self.stack.dev_root_pem()))
    }

    /// A verifying SDK client for api `index`, authenticated as `sub`.
    pub async fn client(&self, index: usize, sub: &str, role: Role) -> EnclosureClient {
        EnclosureClient::connect(ClientOptions {
            base_url: self.apis[index].url.clone(),
            tls_root_pem: Some(self.tls_root_pem()),
            token: Some(self.token(sub, role)),
            policy: self.policy(),
        })
        .await
        .expect("the client verifies the enclave's attestation")
    }
}
