//! The dev attester: a software NSM that emits documents in the exact NSM format under a local
//! dev root → intermediate → leaf chain, so the one verifier checks both kinds of document.
//!
//! The dev root and intermediate are made at first start and kept in a directory
//! (`root.pem`, `root.key`, `intermediate.pem`, `intermediate.key`; keys mode 0600). Like a
//! Nitro host, each start issues a fresh leaf key and certificate, held only in memory.
//! Production policies refuse the dev root: it is trusted only where a policy names it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use zeroize::Zeroizing;

use crate::attester::{AttestationRequest, Attester, AttesterError, AttesterMode};
use crate::cbor;

const ROOT_CERT: &str = "root.pem";
const ROOT_KEY: &str = "root.key";
const INTERMEDIATE_CERT: &str = "intermediate.pem";
const INTERMEDIATE_KEY: &str = "intermediate.key";

/// Lifetime of the dev CA certificates made at first start.
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Lifetime of the per-start leaf certificate (AWS leaves live three hours; dev processes may
/// run for long, and an expired dev leaf would only confuse).
const LEAF_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
/// Backdating of every dev certificate, so small clock differences never make them "not yet
/// valid".
const BACKDATE: Duration = Duration::from_secs(3600);

/// The PCR values the dev attester reports: fixed, non-zero dev measurements for PCR0..2
/// (so dev documents are never mistaken for debug-mode documents), zero for the rest.
pub fn dev_pcrs() -> [[u8; 48]; 16] {
    let mut pcrs = [[0u8; 48]; 16];
    for (index, pcr) in pcrs.iter_mut().enumerate().take(3) {
        let label = format!("enclosure dev attester PCR{index}");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, label.as_bytes());
        pcr.copy_from_slice(digest.as_ref());
    }
    pcrs
}

/// A software NSM with its own CA; see the module documentation.
pub struct DevAttester {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: EcdsaKeyPair,
    module_id: String,
    pcrs: [[u8; 48]; 16],
}

impl fmt::Debug for DevAttester {
    // The leaf key is deliberately left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevAttester")
            .field("module_id", &self.module_id)
            .field("mode", &AttesterMode::Dev)
            .finish_non_exhaustive()
    }
}

impl DevAttester {
    /// Loads the dev CA from `dev_ca_dir`, making it first if the directory holds none, and
    /// issues this process's leaf certificate.
    pub fn load_or_create(dev_ca_dir: &Path) -> Result<Self, AttesterError> {
        create_private_dir(dev_ca_dir)?;
        let ca = if dev_ca_dir.join(ROOT_CERT).exists() {
            DevCa::load(dev_ca_dir)?
        } else {
            let ca = DevCa::create()?;
            ca.store(dev_ca_dir)?;
            ca
        };
        Self::from_ca(&ca)
    }

    fn from_ca(ca: &DevCa) -> Result<Self, AttesterError> {
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dev_name("enclosure dev attester leaf");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + LEAF_LIFETIME).into();
        let issuer = ca.intermediate_issuer()?;
        let leaf = params
            .signed_by(&leaf_key, &issuer, &ca.intermediate_key)
            .map_err(cert_err)?;
        let pkcs8 = Zeroizing::new(leaf_key.serialize_der());
        let leaf_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
            .map_err(|_| AttesterError::Certificate("leaf key rejected".into()))?;
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| AttesterError::Random)?;
        let module_id = format!(
            "dev-enclosure-enc{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        Ok(DevAttester {
            root_der: ca.root_der.clone(),
            intermediate_der: ca.intermediate_der.clone(),
            leaf_der: leaf.der().to_vec(),
            leaf_key,
            module_id,
            pcrs: dev_pcrs(),
        })
    }

    /// The dev root certificate (DER) that a dev policy must name to accept these documents.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The intermediate CA certificate (DER), `cabundle[1]` of every dev document.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// This process's leaf certificate (DER), the `certificate` of every dev document.
    pub fn leaf_der(&self) -> &[u8] {
        &self.leaf_der
    }

    /// The module id this attester writes into its documents.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// Makes a document with the given timestamp instead of the current time (tests, tools).
    pub fn attest_at(
        &self,
        req: &AttestationRequest<'_>,
        at: SystemTime,
    ) -> Result<Vec<u8>, AttesterError> {
        req.check_limits()?;
        let timestamp_ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AttesterError::Signing)?
            .as_millis() as u64;
        let payload = self.payload(req, timestamp_ms);
        self.sign_payload(&payload)
    }

    /// Wraps arbitrary payload bytes in a COSE_Sign1 signed by the dev leaf key.
    ///
    /// For tests and tools that need documents the NSM would never produce (other encodings,
    /// malformed maps); the verifier must judge such payloads on their own merits.
    pub fn sign_payload(&self, payload: &[u8]) -> Result<Vec<u8>, AttesterError> {
        let to_sign = cbor::sig_structure(&cbor::PROTECTED_ES384, payload);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self
            .leaf_key
            .sign(&rng, &to_sign)
            .map_err(|_| AttesterError::Signing)?;
        Ok(cbor::cose_sign1(
            &cbor::PROTECTED_ES384,
            payload,
            signature.as_ref(),
        ))
    }

    /// The NSM payload map, keys in the order the NSM writes them, null for absent fields.
    fn payload(&self, req: &AttestationRequest<'_>, timestamp_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        cbor::head(&mut out, cbor::MAP, 9);
        cbor::text(&mut out, "module_id");
        cbor::text(&mut out, &self.module_id);
        cbor::text(&mut out, "digest");
        cbor::text(&mut out, "SHA384");
        cbor::text(&mut out, "timestamp");
        cbor::head(&mut out, cbor::UINT, timestamp_ms);
        cbor::text(&mut out, "pcrs");
        cbor::head(&mut out, cbor::MAP, self.pcrs.len() as u64);
        for (index, value) in self.pcrs.iter().enumerate() {
            cbor::head(&mut out, cbor::UINT, index as u64);
            cbor::bytes(&mut out, value);
        }
        cbor::text(&mut out, "certificate");
        cbor::bytes(&mut out, &self.leaf_der);
        cbor::text(&mut out, "cabundle");
        cbor::head(&mut out, cbor::ARRAY, 2);
        cbor::bytes(&mut out, &self.root_der);
        cbor::bytes(&mut out, &self.intermediate_der);
        for (name, value) in [
            ("public_key", req.public_key),
            ("user_data", req.user_data),
            ("nonce", req.nonce),
        ] {
            cbor::text(&mut out, name);
            match value {
                Some(value) => cbor::bytes(&mut out, value),
                None => cbor::null(&mut out),
            }
        }
        out
    }
}

impl Attester for DevAttester {
    fn mode(&self) -> AttesterMode {
        AttesterMode::Dev
    }

    fn measurement(&self) -> [u8; 48] {
        self.pcrs[0]
    }

    fn attest(&self, req: &AttestationRequest<'_>) -> Result<Vec<u8>, AttesterError> {
        self.attest_at(req, SystemTime::now())
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), AttesterError> {
        aws_lc_rs::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| AttesterError::Random)
    }
}

/// The persistent part of the dev chain: root and intermediate with their keys.
struct DevCa {
    root_der: Vec<u8>,
    root_key: KeyPair,
    intermediate_der: Vec<u8>,
    intermediate_key: KeyPair,
}

impl DevCa {
    fn create() -> Result<Self, AttesterError> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let root = ca_params("enclosure dev root", 1)?
            .self_signed(&root_key)
            .map_err(cert_err)?;
        let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let intermediate = ca_params("enclosure dev intermediate", 0)?
            .signed_by(&intermediate_key, &root, &root_key)
            .map_err(cert_err)?;
        Ok(DevCa {
            root_der: root.der().to_vec(),
            root_key,
            intermediate_der: intermediate.der().to_vec(),
            intermediate_key,
        })
    }

    /// Writes keys first and `root.pem` last (atomically): its presence means the directory
    /// is complete. Leftovers of an earlier start that stopped half-way are replaced.
    fn store(&self, dir: &Path) -> Result<(), AttesterError> {
        for leftover in [ROOT_KEY, INTERMEDIATE_KEY, INTERMEDIATE_CERT] {
            let path = dir.join(leftover);
            match fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&path)(err));
                }
                _ => {}
            }
        }
        write_file(
            &dir.join(ROOT_KEY),
            self.root_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(
            &dir.join(INTERMEDIATE_KEY),
            self.intermediate_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(
            &dir.join(INTERMEDIATE_CERT),
            der_to_pem(&self.intermediate_der)?.as_bytes(),
            0o644,
        )?;
        // Readers (the cli, policies) may look for root.pem at any moment: never let them
        // see half a file.
        let partial = dir.join(format!("{ROOT_CERT}.partial"));
        let _ = fs::remove_file(&partial);
        write_file(&partial, der_to_pem(&self.root_der)?.as_bytes(), 0o644)?;
        let root = dir.join(ROOT_CERT);
        fs::rename(&partial, &root).map_err(io_err(&root))
    }

    fn load(dir: &Path) -> Result<Self, AttesterError> {
        Ok(DevCa {
            root_der: read_cert(&dir.join(ROOT_CERT))?,
            root_key: read_key(&dir.join(ROOT_KEY))?,
            intermediate_der: read_cert(&dir.join(INTERMEDIATE_CERT))?,
            intermediate_key: read_key(&dir.join(INTERMEDIATE_KEY))?,
        })
    }

    /// rcgen signs with an issuer `Certificate`; it takes only the issuer's name and key from
    /// it, so re-deriving it from the fixed parameters and the stored key names the same
    /// subject as the stored intermediate.
    fn intermediate_issuer(&self) -> Result<rcgen::Certificate, AttesterError> {
        ca_params("enclosure dev intermediate", 0)?
            .self_signed(&self.intermediate_key)
            .map_err(cert_err)
    }
}

/// CA parameters in AWS's profile: critical basicConstraints with pathLen, keyCertSign.
fn ca_params(common_name: &str, path_len: u8) -> Result<CertificateParams, AttesterError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dev_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_LIFETIME).into();
    Ok(params)
}

fn dev_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, "US");
    name.push(DnType::OrganizationName, "Enclosure (dev only)");
    name.push(DnType::OrganizationalUnitName, "dev attester");
    name.push(DnType::CommonName, common_name);
    name
}

fn cert_err(err: rcgen::Error) -> AttesterError {
    AttesterError::Certificate(err.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AttesterError + '_ {
    move |source| AttesterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: &str) -> AttesterError {
    AttesterError::InvalidDevCa {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), AttesterError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err(dir))
}

/// Creates a file that must not exist yet, with `mode` from the start (no window in which a
/// key file is world-readable).
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), AttesterError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn read_cert(path: &Path) -> Result<Vec<u8>, AttesterError> {
    let text = fs::read(path).map_err(io_err(path))?;
    let (label, der) = der::pem::decode_vec(&text).map_err(|_| invalid(path, "not a PEM file"))?;
    if label != "CERTIFICATE" {
        return Err(invalid(path, "not a PEM certificate"));
    }
    Ok(der)
}

fn read_key(path: &Path) -> Result<KeyPair, AttesterError> {
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
    let key = KeyPair::from_pem(&text).map_err(|_| invalid(path, "not a PKCS#8 PEM key"))?;
    if !key.is_compatible(&PKCS_ECDSA_P384_SHA384) {
        return Err(invalid(path, "not a P-384 key"));
    }
    Ok(key)
}

/// PEM-encodes a certificate (RFC 7468).
fn der_to_pem(der: &[u8]) -> Result<String, AttesterError> {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
        .map_err(|err| AttesterError::Certificate(err.to_string()))
}

/// Where a dev CA directory keeps its root certificate.
pub fn dev_root_path(dev_ca_dir: &Path) -> PathBuf {
    dev_ca_dir.join(ROOT_CERT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reloaded_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("dev-ca");
        let first = DevAttester::load_or_create(&ca_dir).unwrap();
        let second = DevAttester::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.root_der(), second.root_der());
        assert_eq!(first.intermediate_der(), second.intermediate_der());
        assert_ne!(
            first.leaf_der(),
            second.leaf_der(),
            "each start has its own leaf"
        );
        let root_pem = fs::read(dev_root_path(&ca_dir)).unwrap();
        let (_, root) = der::pem::decode_vec(&root_pem).unwrap();
        assert_eq!(root, first.root_der());
        #[cfg(unix)]
        for key in [ROOT_KEY, INTERMEDIATE_KEY] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(ca_dir.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn half_made_directory_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier start wrote a key, then stopped before root.pem.
        fs::write(dir.path().join(ROOT_KEY), b"stale").unwrap();
        let attester = DevAttester::load_or_create(dir.path()).unwrap();
        let pem = fs::read(dev_root_path(dir.path())).unwrap();
        assert_eq!(der::pem::decode_vec(&pem).unwrap().1, attester.root_der());
        assert!(!dir.path().join("root.pem.partial").exists());
    }

    #[test]
    fn debug_output_and_measurement() {
        let dir = tempfile::tempdir().unwrap();
        let attester = DevAttester::load_or_create(dir.path()).unwrap();
        let shown = format!("{attester:?}");
        assert!(shown.contains("DevAttester") && !shown.contains("key"));
        assert_eq!(attester.mode(), AttesterMode::Dev);
        assert_ne!(
            attester.measurement(),
            [0u8; 48],
            "dev documents are not debug mode"
        );
        let too_big = [0u8; 513];
        let req = AttestationRequest {
            nonce: Some(&too_big),
            ..Default::default()
        };
        assert!(matches!(
            attester.attest(&req),
            Err(AttesterError::InputTooLarge { field: "nonce", .. })
        ));
        let mut a = [0u8; 32];
        attester.fill_random(&mut a).unwrap();
        assert_ne!(a, [0u8; 32]);
    }
}
