//! `enclosure attest verify`: checks an attestation document against a policy and prints what
//! was checked, what passed, and what failed and why.
//!
//! This is an edge: it reads the document, the policy file and the dev roots the policy names,
//! and reads the clock; the verifier itself takes only bytes, a policy and a time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use base64::Engine as _;
use enclosure_attestation::{
    AttestationPolicy, Check, TrustAnchor, VerifiedDocument, Verifier, VerifyError,
    pem_certificate_to_der,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `enclosure attest …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AttestCommand {
    /// Verify an attestation document (raw CBOR, base64 or hex) against a policy.
    Verify {
        /// The document file: raw COSE_Sign1 bytes, or base64 or hex text.
        file: PathBuf,
        /// Policy file (TOML). Without it: no PCR expectations, debug documents refused,
        /// AWS root only, at most 5 minutes old.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Verification time: RFC 3339 (e.g. 2024-02-26T07:02:01Z), or `document` for the
        /// document's own timestamp (for archived documents). Default: now.
        #[arg(long)]
        at: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running api for a document with a fresh random nonce, and verify it now.
    Fetch {
        /// The api's base URL, e.g. https://127.0.0.1:8443.
        #[arg(long)]
        api: String,
        /// Policy file (TOML), as for `verify`.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Extra TLS root (PEM) for the api, e.g. the dev stack's DIR/tls/cert.pem.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `attest` subcommand; a refused document exits with status 1.
pub fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Verify {
            file,
            policy,
            at,
            json,
        } => verify_file(&file, policy.as_deref(), at.as_deref(), json),
        AttestCommand::Fetch {
            api,
            policy,
            cacert,
            json,
        } => fetch(&api, policy.as_deref(), cacert.as_deref(), json),
    }
}

/// Fetches a fresh document (random nonce) from the api and verifies it, nonce included.
fn fetch(
    api: &str,
    policy_path: Option<&Path>,
    cacert: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use rand::RngCore;
    let mut policy = match policy_path {
        Some(path) => load_policy(path)?,
        None => AttestationPolicy::default(),
    };
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    policy = policy.with_nonce(&nonce);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    if let Some(path) = cacert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?]);
    }
    let http = builder.build()?;
    let url = format!("{}/v1/attestation", api.trim_end_matches('/'));
    let rt = tokio::runtime::Runtime::new()?;
    let answer: serde_json::Value = rt.block_on(async {
        let resp = http
            .get(&url)
            .query(&[("nonce", hex::encode(nonce))])
            .send()
            .await
            .with_context(|| format!("asking {url}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("reading the answer")?;
        anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
        anyhow::Ok(body)
    })?;
    let document = answer["document"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .context("the answer has no base64 document")?;
    let at = At::Now(SystemTime::now());
    let result = Verifier::uncached().verify(&document, &policy, SystemTime::now());
    let report = Report {
        file: Path::new(&url),
        bytes: document.len(),
        encoding: "fetched with a fresh nonce",
        policy: policy_path,
        at: &at,
        result: &result,
    };
    report.print(json)
}

/// When to verify.
enum At {
    Now(SystemTime),
    Given(SystemTime),
    Document,
}

fn verify_file(
    file: &Path,
    policy_path: Option<&Path>,
    at: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (document, encoding) = decode_input(&raw).with_context(|| {
        format!(
            "{} is not a document (raw CBOR, base64 or hex)",
            file.display()
        )
    })?;
    let policy = match policy_path {
        Some(path) => load_policy(path)?,
        None => AttestationPolicy::default(),
    };
    let at = match at {
        None => At::Now(SystemTime::now()),
        Some("document") => At::Document,
        Some(text) => At::Given(
            OffsetDateTime::parse(text, &Rfc3339)
                .with_context(|| format!("--at {text:?} is neither RFC 3339 nor `document`"))?
                .into(),
        ),
    };

    let verifier = Verifier::uncached();
    let result = match at {
        At::Now(t) | At::Given(t) => verifier.verify(&document, &policy, t),
        At::Document => verifier.verify_at_document_time(&document, &policy),
    };
    let report = Report {
        file,
        bytes: document.len(),
        encoding,
        policy: policy_path,
        at: &at,
        result: &result,
    };
    report.print(json)
}

/// Accepts raw CBOR (a COSE_Sign1 array, or tag 18), hex, or base64 (standard or URL-safe,
/// padded or not).
fn decode_input(raw: &[u8]) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let looks_like_cose = |b: &[u8]| matches!(b.first(), Some(0x84 | 0xd2));
    if looks_like_cose(raw) {
        return Ok((raw.to_vec(), "raw CBOR"));
    }
    let text: String = std::str::from_utf8(raw)
        .context("not CBOR and not text")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if let Ok(bytes) = hex::decode(&text)
        && looks_like_cose(&bytes)
    {
        return Ok((bytes, "hex"));
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(&text)
            && looks_like_cose(&bytes)
        {
            return Ok((bytes, "base64"));
        }
    }
    bail!("does not decode to a COSE_Sign1 structure")
}

/// Reads a policy file and the dev roots it names (paths relative to the policy file).
fn load_policy(path: &Path) -> anyhow::Result<AttestationPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading policy {}", path.display()))?;
    let mut policy = AttestationPolicy::from_toml_str(&text)
        .with_context(|| format!("policy {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for root in policy.dev_root_paths().to_vec() {
        let root_path = base.join(&root);
        let bytes = std::fs::read(&root_path)
            .with_context(|| format!("reading dev root {}", root_path.display()))?;
        let der = pem_certificate_to_der(&bytes).unwrap_or(bytes);
        eprintln!(
            "warning: policy {} trusts the dev root {}: dev documents will be accepted",
            path.display(),
            root_path.display()
        );
        policy = policy.with_dev_root_der(der);
    }
    Ok(policy)
}

struct Report<'a> {
    file: &'a Path,
    bytes: usize,
    encoding: &'static str,
    policy: Option<&'a Path>,
    at: &'a At,
    result: &'a Result<VerifiedDocument, VerifyError>,
}

/// The status of each check: every check before the failing one passed, the ones after it
/// did not run (the verifier stops at the first failure).
fn statuses(
    result: &Result<VerifiedDocument, VerifyError>,
) -> Vec<(Check, &'static str, Option<String>)> {
    let failed = result.as_ref().err().map(|e| (e.check(), e.to_string()));
    let mut seen_failure = false;
    Check::ALL
        .iter()
        .map(|&check| match &failed {
            Some((at, why)) if *at == check => {
                seen_failure = true;
                (check, "failed", Some(why.clone()))
            }
            _ if seen_failure => (check, "not run", None),
            _ => (check, "passed", None),
        })
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

impl Report<'_> {
    /// Prints the report (text or JSON); a refused document exits with status 1.
    fn print(&self, json: bool) -> anyhow::Result<ExitCode> {
        let text = if json {
            serde_json::to_string_pretty(&self.json())? + "\n"
        } else {
            self.text()
        };
        // A closed pipe (`| head`) is not an error worth a panic; the exit status still tells.
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
        Ok(if self.result.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    fn at_text(&self) -> String {
        match self.at {
            At::Now(t) => format!("{} (now)", rfc3339(*t)),
            At::Given(t) => rfc3339(*t),
            At::Document => match self.result {
                Ok(doc) => format!("{} (the document's timestamp)", rfc3339(doc.timestamp())),
                Err(_) => "the document's timestamp".to_string(),
            },
        }
    }

    fn policy_text(&self) -> String {
        match self.policy {
            Some(path) => path.display().to_string(),
            None => "default (no PCR expectations, debug refused, AWS root only)".to_string(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "document: {} ({} bytes, {})",
            self.file.display(),
            self.bytes,
            self.encoding
        );
        let _ = writeln!(out, "policy:   {}", self.policy_text());
        let _ = writeln!(out, "time:     {}", self.at_text());
        let _ = writeln!(out, "checks:");
        for (check, status, why) in statuses(self.result) {
            let mark = match status {
                "passed" => "ok  ",
                "failed" => "FAIL",
                _ => "--  ",
            };
            let _ = write!(out, "  [{mark}] {}", check.name());
            match why {
                Some(why) => {
                    let _ = writeln!(out, ": {why}");
                }
                None if status == "not run" => {
                    let _ = writeln!(out, " (not run)");
                }
                None => {
                    let _ = writeln!(out);
                }
            }
        }
        match self.result {
            Ok(doc) => {
                let _ = writeln!(out, "VERIFIED");
                let _ = writeln!(out, "module id:    {}", doc.module_id());
                let _ = writeln!(out, "timestamp:    {}", rfc3339(doc.timestamp()));
                let anchor = match doc.trust_anchor() {
                    TrustAnchor::AwsNitroRoot => "AWS Nitro Enclaves Root G1",
                    TrustAnchor::DevRoot => "DEV ROOT (not Nitro hardware)",
                };
                let _ = writeln!(out, "trust anchor: {anchor}");
                let _ = writeln!(
                    out,
                    "debug mode:   {}",
                    if doc.is_debug() { "YES" } else { "no" }
                );
                let _ = writeln!(out, "PCRs:");
                for (index, value) in doc.pcrs() {
                    let _ = writeln!(out, "  {index:>2}: {}", hex::encode(value));
                }
                for (name, value) in [
                    ("public_key", doc.public_key()),
                    ("user_data", doc.user_data()),
                    ("nonce", doc.nonce()),
                ] {
                    match value {
                        Some(v) => {
                            let _ = writeln!(out, "{name}: {} bytes {}", v.len(), hex::encode(v));
                        }
                        None => {
                            let _ = writeln!(out, "{name}: absent");
                        }
                    }
                }
            }
            Err(err) => {
                let _ = writeln!(out, "REFUSED: {err}");
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let checks: Vec<_> = statuses(self.result)
            .into_iter()
            .map(|(check, status, why)| {
                serde_json::json!({ "check": check.name(), "status": status, "reason": why })
            })
            .collect();
        let document = self.result.as_ref().ok().map(|doc| {
            let pcrs: serde_json::Map<String, serde_json::Value> = doc
                .pcrs()
                .iter()
                .map(|(i, v)| (i.to_string(), hex::encode(v).into()))
                .collect();
            serde_json::json!({
                "module_id": doc.module_id(),
                "timestamp": rfc3339(doc.timestamp()),
                "timestamp_ms": doc.timestamp_ms(),
                "trust_anchor": match doc.trust_anchor() {
                    TrustAnchor::AwsNitroRoot => "aws-nitro-root-g1",
                    TrustAnchor::DevRoot => "dev-root",
                },
                "debug": doc.is_debug(),
                "pcrs": pcrs,
                "public_key": doc.public_key().map(hex::encode),
                "user_data": doc.user_data().map(hex::encode),
                "nonce": doc.nonce().map(hex::encode),
            })
        });
        serde_json::json!({
            "file": self.file.display().to_string(),
            "bytes": self.bytes,
            "encoding": self.encoding,
            "policy": self.policy_text(),
            "at": self.at_text(),
            "verified": self.result.is_ok(),
            "error": self.result.as_ref().err().map(ToString::to_string),
            "checks": checks,
            "document": document,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_encodings() {
        let doc = [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22];
        assert_eq!(decode_input(&doc).unwrap(), (doc.to_vec(), "raw CBOR"));
        let hex_text = format!("{}\n", hex::encode(doc));
        assert_eq!(
            decode_input(hex_text.as_bytes()).unwrap(),
            (doc.to_vec(), "hex")
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc);
        assert_eq!(
            decode_input(b64.as_bytes()).unwrap(),
            (doc.to_vec(), "base64")
        );
        assert!(decode_input(b"hello").is_err());
    }

    #[test]
    fn real_document_verifies_at_its_time_and_not_now() {
        let dir = std::env::temp_dir().join(format!("enclosure-attest-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("doc.b64");
        let doc =
            include_bytes!("../../attestation/testdata/signalapp_libsignal-02-2023-05-24.cose");
        std::fs::write(&file, base64::engine::general_purpose::STANDARD.encode(doc)).unwrap();
        let verify = |at: Option<&str>| verify_file(&file, None, at, true).unwrap();
        assert_eq!(verify(Some("document")), ExitCode::SUCCESS);
        assert_eq!(verify(Some("2023-05-24T17:07:50Z")), ExitCode::SUCCESS);
        assert_eq!(verify(None), ExitCode::from(1));
        assert!(verify_file(&file, None, Some("yesterday"), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn policy_dev_roots_are_read_relative_to_the_policy_file() {
        let dir =
            std::env::temp_dir().join(format!("enclosure-attest-policy-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dev-ca")).unwrap();
        // DER is accepted as well as PEM; any certificate will do for loading.
        let root = enclosure_attestation::AWS_NITRO_ROOT_G1_DER;
        std::fs::write(dir.join("dev-ca/root.der"), root).unwrap();
        std::fs::write(
            dir.join("policy.toml"),
            "dev_roots = [\"dev-ca/root.der\"]\n",
        )
        .unwrap();
        let policy = load_policy(&dir.join("policy.toml")).unwrap();
        assert_eq!(policy.dev_roots(), [root.to_vec()]);
        std::fs::write(dir.join("bad.toml"), "dev_roots = [\"missing.pem\"]\n").unwrap();
        assert!(load_policy(&dir.join("bad.toml")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn statuses_stop_at_the_failure() {
        let result = Err(VerifyError::DocumentSignature);
        let s = statuses(&result);
        let failed = s.iter().position(|(_, st, _)| *st == "failed").unwrap();
        assert_eq!(s[failed].0, Check::DocumentSignature);
        assert!(s[..failed].iter().all(|(_, st, _)| *st == "passed"));
        assert!(s[failed + 1..].iter().all(|(_, st, _)| *st == "not run"));
    }
}
