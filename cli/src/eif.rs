//! `enclosure eif …`: build, describe and verify reproducible enclave images (EIF).
//!
//! This module is the edge: it reads files, the environment (SOURCE_DATE_EPOCH) and prints;
//! the format, the measurements and the explanations live in the `enclosure-eif` crate.
//!
//! Exit codes: 0 when everything checked matches, 1 when `verify` finds a mismatch (or an
//! invalid signature); errors (unreadable or malformed files) are returned to `main`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use enclosure_eif::explain::{self, ExpectedPcrs, PcrCheck};
use enclosure_eif::{EifIdentityInfo, EifInfo, EifSigner, describe, metadata, ramdisk};
use serde_json::json;

/// The `eif` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EifCommand {
    /// Print an image's measurements (PCR0/1/2/8), sections and metadata.
    Describe {
        /// The EIF to read.
        file: PathBuf,
        /// Print JSON in the shape of `nitro-cli describe-eif`, plus sections.
        #[arg(long)]
        json: bool,
    },
    /// Build an EIF; the same inputs and SOURCE_DATE_EPOCH give the same bytes.
    Build {
        /// Kernel image (bzImage).
        #[arg(long)]
        kernel: PathBuf,
        /// Kernel command line.
        #[arg(long)]
        cmdline: String,
        /// Ramdisks in order: the first is the bootstrap (PCR1), the rest the application (PCR2).
        #[arg(long = "ramdisk", required = true, num_args = 1..)]
        ramdisks: Vec<PathBuf>,
        /// P-384 private key (PEM, PKCS#8 or SEC1) to sign PCR0 with.
        #[arg(long, requires = "signing_cert")]
        signing_key: Option<PathBuf>,
        /// PEM certificate of the signing key; its DER is measured into PCR8.
        #[arg(long, requires = "signing_key")]
        signing_cert: Option<PathBuf>,
        /// Where to write the image.
        #[arg(long)]
        output: PathBuf,
        /// Image name recorded in the metadata section.
        #[arg(long, default_value = "enclosure-enclave")]
        name: String,
        /// Image version recorded in the metadata section.
        #[arg(long = "image-version", default_value = "1.0")]
        image_version: String,
    },
    /// Build a deterministic newc cpio ramdisk from a directory.
    Ramdisk {
        /// Directory whose contents become the ramdisk's root.
        #[arg(long)]
        from: PathBuf,
        /// Where to write the archive.
        #[arg(long)]
        output: PathBuf,
    },
    /// Build Enclosure's enclave image from source, reproducibly, and print its PCRs.
    ///
    /// Compiles the enclave and its init for static musl with pinned flags, packs them into
    /// the bootstrap and application ramdisks and writes the EIF. Needs the musl target
    /// (`rustup target add x86_64-unknown-linux-musl`); SOURCE_DATE_EPOCH fixes every time.
    BuildEnclave {
        /// Kernel image (bzImage).
        #[arg(long)]
        kernel: PathBuf,
        /// Where to write the image.
        #[arg(long, default_value = "enclosure-enclave.eif")]
        output: PathBuf,
        /// Kernel command line (default: nitro-cli's).
        #[arg(long, default_value = enclosure_eif::enclave_image::DEFAULT_CMDLINE)]
        cmdline: String,
        /// The NSM driver module (nsm.ko) for kernels without it built in, such as nitro-cli's
        /// blobs kernel; it goes into the bootstrap ramdisk and init loads it.
        #[arg(long)]
        nsm_module: Option<PathBuf>,
        /// The Enclosure source tree to build (default: the current directory).
        #[arg(long, default_value = ".")]
        source: PathBuf,
        /// cargo's target directory for this build (default: SOURCE/target/enclave-image).
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Check an image's PCRs against expected values and explain any mismatch.
    Verify {
        /// The EIF to check.
        file: PathBuf,
        /// JSON with the expected PCRs (`nitro-cli describe-eif` output, or {"PCR0": "…"}).
        #[arg(long, conflicts_with = "attestation", required_unless_present_any = ["attestation", "against"])]
        expected: Option<PathBuf>,
        /// An attestation document (COSE_Sign1, as the NSM returns it): its PCRs are the
        /// expected values, used only once the document verifies to the AWS Nitro root.
        #[arg(long)]
        attestation: Option<PathBuf>,
        /// Verify the attestation as of this time: RFC 3339, seconds since the epoch, or
        /// "document" for the document's own timestamp (archived documents). Default: now.
        #[arg(long, requires = "attestation")]
        at: Option<String>,
        /// Maximum age of the attestation document at --at, in seconds (default 300).
        #[arg(long, requires = "attestation")]
        max_age: Option<u64>,
        /// Also trust this dev root certificate (PEM), for documents from the dev attester.
        #[arg(long, requires = "attestation")]
        dev_root: Option<PathBuf>,
        /// A reference EIF: compare section by section and list the ramdisk entries that differ.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `eif` subcommand.
pub fn run(cmd: EifCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EifCommand::Describe { file, json } => {
            let info = read(&file)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&describe::describe_json(&info))?
                );
            } else {
                print!("{}", describe::describe_text(&info));
            }
            Ok(ExitCode::SUCCESS)
        }
        EifCommand::Build {
            kernel,
            cmdline,
            ramdisks,
            signing_key,
            signing_cert,
            output,
            name,
            image_version,
        } => {
            let signer = match (signing_key, signing_cert) {
                (Some(k), Some(c)) => Some(load_signer(&k, &c)?),
                _ => None,
            };
            let identity = EifIdentityInfo::new(&name, &image_version, build_epoch()?)?;
            let report = enclosure_eif::build_eif_file(
                &kernel,
                &cmdline,
                &ramdisks,
                identity,
                signer.as_ref(),
                &output,
            )
            .with_context(|| format!("building {}", output.display()))?;
            // Same shape as `nitro-cli build-enclave`, so scripts can read either.
            let out = json!({ "Measurements": report.measurements.to_nitro_map() });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        EifCommand::Ramdisk { from, output } => {
            let epoch = u32::try_from(build_epoch()?)
                .context("SOURCE_DATE_EPOCH does not fit the 32-bit cpio mtime")?;
            ramdisk::build_ramdisk_file(&from, epoch, &output)
                .with_context(|| format!("archiving {}", from.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        EifCommand::BuildEnclave {
            kernel,
            output,
            cmdline,
            nsm_module,
            source,
            target_dir,
        } => {
            let mut spec = enclosure_eif::enclave_image::EnclaveImageSpec::new(
                &source,
                &kernel,
                &output,
                build_epoch()?,
            );
            spec.cmdline = cmdline;
            spec.nsm_module = nsm_module;
            if let Some(dir) = target_dir {
                spec.target_dir = dir;
            }
            build_enclave(&spec)
        }
        EifCommand::Verify {
            file,
            expected,
            attestation,
            at,
            max_age,
            dev_root,
            against,
            json,
        } => {
            // clap drops `requires` when a conflicting argument is present, so check here.
            if attestation.is_none() && (at.is_some() || max_age.is_some() || dev_root.is_some()) {
                bail!("--at, --max-age and --dev-root apply only with --attestation");
            }
            let info = read(&file)?;
            let reference = against.as_deref().map(read).transpose()?;
            let expected: ExpectedPcrs = match (&attestation, &expected, &reference) {
                (Some(doc), _, _) => {
                    attested_pcrs(doc, at.as_deref(), max_age, dev_root.as_deref())?
                }
                (None, Some(p), _) => {
                    let text = fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    explain::parse_expected_pcrs(&text)
                        .with_context(|| format!("parsing {}", p.display()))?
                }
                (None, None, Some(r)) => explain::attested_pcrs(&r.measurements),
                (None, None, None) => bail!("give --expected, --attestation or --against"),
            };
            verify(
                &file,
                &info,
                &expected,
                against.as_deref().zip(reference.as_ref()),
                json,
            )
        }
    }
}

/// `eif build-enclave`: progress and the description on stderr, the PCRs as JSON on stdout.
fn build_enclave(
    spec: &enclosure_eif::enclave_image::EnclaveImageSpec,
) -> anyhow::Result<ExitCode> {
    let image = enclosure_eif::enclave_image::build_enclave_image(spec, &mut |line| {
        eprintln!("build-enclave: {line}")
    })
    .with_context(|| format!("building the enclave image {}", spec.output.display()))?;
    eprint!("{}", describe::describe_text(&image.info));
    let out = json!({ "Measurements": image.info.measurements.to_nitro_map() });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The image PCRs of an attestation document, read only after it verifies.
fn attested_pcrs(
    doc: &Path,
    at: Option<&str>,
    max_age: Option<u64>,
    dev_root: Option<&Path>,
) -> anyhow::Result<ExpectedPcrs> {
    use enclosure_attestation::{AttestationPolicy, TrustAnchor, Verifier};

    let bytes = fs::read(doc).with_context(|| format!("reading {}", doc.display()))?;
    let mut policy = AttestationPolicy::default();
    if let Some(secs) = max_age {
        policy = policy.with_max_age(std::time::Duration::from_secs(secs));
    }
    if let Some(root) = dev_root {
        let pem = fs::read(root).with_context(|| format!("reading {}", root.display()))?;
        let der = enclosure_attestation::pem_certificate_to_der(&pem)
            .with_context(|| format!("{} is not a PEM certificate", root.display()))?;
        // Dev conveniences are never silent.
        eprintln!(
            "WARNING: trusting the DEV root {} besides the AWS Nitro root",
            root.display()
        );
        policy = policy.with_dev_root_der(der);
    }
    let verifier = Verifier::uncached();
    let verified = match at {
        Some("document") => verifier.verify_at_document_time(&bytes, &policy),
        Some(t) => verifier.verify(&bytes, &policy, parse_time(t)?),
        None => verifier.verify(&bytes, &policy, std::time::SystemTime::now()),
    }
    .with_context(|| format!("attestation document {} does not verify", doc.display()))?;
    let anchor = match verified.trust_anchor() {
        TrustAnchor::AwsNitroRoot => "the AWS Nitro root",
        TrustAnchor::DevRoot => "a DEV root",
    };
    eprintln!(
        "attestation: verified to {anchor}; module {}, made at {} ms since the epoch",
        verified.module_id(),
        verified.timestamp_ms()
    );
    Ok(explain::IMAGE_PCRS
        .iter()
        .filter_map(|&i| verified.pcr(i).map(|v| (i, *v)))
        .collect())
}

/// Seconds since the epoch, or an RFC 3339 timestamp.
fn parse_time(text: &str) -> anyhow::Result<std::time::SystemTime> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--at {text:?} is neither seconds nor RFC 3339"))?;
    Ok(t.into())
}

fn read(path: &Path) -> anyhow::Result<EifInfo> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    enclosure_eif::read_eif(&mut f).with_context(|| format!("reading {}", path.display()))
}

fn load_signer(key: &Path, cert: &Path) -> anyhow::Result<EifSigner> {
    let key_pem = fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let cert_pem = fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    Ok(EifSigner::from_pem(&key_pem, &cert_pem)?)
}

/// The fixed build time: SOURCE_DATE_EPOCH when set, else the epoch itself.
fn build_epoch() -> anyhow::Result<i64> {
    let v = std::env::var("SOURCE_DATE_EPOCH").ok();
    Ok(metadata::source_date_epoch(v.as_deref())?)
}

fn verify(
    file: &Path,
    info: &EifInfo,
    expected: &ExpectedPcrs,
    reference: Option<(&Path, &EifInfo)>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let checks = explain::check_pcrs(info, expected);
    let mismatch = checks.iter().any(|c| c.matches == Some(false));
    let bad_signature = info.signature.as_ref().is_some_and(|s| !s.valid);
    let diagnosis = explain::diagnose(&checks);
    let sections = explain::compare_sections(info, reference.map(|r| r.1));
    let entries = match reference {
        Some((other, their_info)) => {
            let mut a = File::open(file)?;
            let mut b = File::open(other)?;
            explain::diff_ramdisks(&mut a, info, &mut b, their_info)
        }
        None => Vec::new(),
    };

    if as_json {
        let report = json!({
            "File": file.display().to_string(),
            "Match": !mismatch && !bad_signature,
            "Pcrs": checks,
            "Diagnosis": diagnosis,
            "Signature": info.signature,
            "Cmdline": info.cmdline,
            "ReferenceCmdline": reference.map(|r| r.1.cmdline.clone()),
            "Sections": sections,
            "RamdiskEntries": entries,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(info, &checks, &diagnosis, &sections, &entries, reference);
    }
    Ok(if mismatch || bad_signature {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(
    info: &EifInfo,
    checks: &[PcrCheck],
    diagnosis: &[String],
    sections: &[explain::SectionDiff],
    entries: &[explain::RamdiskDiff],
    reference: Option<(&Path, &EifInfo)>,
) {
    for c in checks {
        let verdict = match c.matches {
            Some(true) => "match",
            Some(false) => "MISMATCH",
            None => "not expected",
        };
        println!(
            "PCR{:<2} {verdict:<12} {}  ({})",
            c.index, c.actual, c.inputs
        );
        if c.matches == Some(false)
            && let Some(e) = &c.expected
        {
            println!("      expected     {e}");
        }
    }
    if let Some(sig) = &info.signature {
        match &sig.problem {
            None => println!("signature: valid, signed by {}", sig.subject),
            Some(p) => println!("signature: INVALID: {p}"),
        }
    }
    if checks.iter().all(|c| c.matches != Some(false)) && reference.is_none() {
        return;
    }
    println!();
    for d in diagnosis {
        println!("why: {d}");
    }
    println!("\nmeasured sections (sha384):");
    for s in sections {
        let ours = s.ours.as_deref().unwrap_or("(absent)");
        let size = s.our_size.map_or(String::new(), |n| format!("{n} bytes"));
        match reference {
            None => println!("  {:<10} {ours}  {size}", s.section),
            Some(_) if s.same => println!("  {:<10} same       {ours}", s.section),
            Some(_) => {
                let theirs = s.theirs.as_deref().unwrap_or("(absent)");
                let their_size = s.their_size.map_or(String::new(), |n| format!("{n} bytes"));
                println!("  {:<10} DIFFERENT  {ours}  {size}", s.section);
                println!("  {:<10} reference  {theirs}  {their_size}", "");
            }
        }
    }
    println!("  cmdline: {:?}", info.cmdline);
    if let Some((path, r)) = reference
        && r.cmdline != info.cmdline
    {
        println!("  reference cmdline ({}): {:?}", path.display(), r.cmdline);
    }
    for rd in entries {
        println!("\nramdisk {}:", rd.ramdisk);
        match &rd.entries {
            Err(e) => println!("  cannot list entries: {e}"),
            Ok(list) if list.is_empty() => {
                println!("  same entries; the archives differ only in layout or padding")
            }
            Ok(list) => {
                for d in list {
                    println!("  {}  [{}]", d.path, d.differences.join(", "));
                    for (side, e) in [("here", &d.ours), ("reference", &d.theirs)] {
                        if let Some(e) = e {
                            println!(
                                "    {side:<9} mode {:06o} size {:>9} mtime {:>10} uid:gid {}:{} sha384 {}",
                                e.mode,
                                e.size,
                                e.mtime,
                                e.uid,
                                e.gid,
                                to_hex(&e.sha384)
                            );
                        }
                    }
                }
            }
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: EifCommand,
    }

    fn parse(args: &[&str]) -> Result<EifCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("eif").chain(args.iter().copied())).map(|c| c.cmd)
    }

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../eif/testdata")
            .join(name)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enclosure-eif-cli-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn parse_words(line: &str) -> Result<EifCommand, clap::Error> {
        parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn arguments_are_checked() {
        let b = parse_words("build --kernel k --cmdline c --ramdisk a b --ramdisk c --output o");
        assert!(
            matches!(b.unwrap(), EifCommand::Build { ref ramdisks, .. } if ramdisks.len() == 3)
        );
        assert!(parse_words("build --kernel k --cmdline c --output o").is_err());
        let half_signed = "build --kernel k --cmdline c --ramdisk a --output o --signing-key k.pem";
        assert!(parse_words(half_signed).is_err());
        assert!(parse_words("verify x.eif").is_err());
        assert!(parse_words("verify x.eif --expected p --attestation d").is_err());
        let stray_at = parse_words("verify x.eif --expected p --at document");
        assert!(run(stray_at.unwrap()).is_err());
        assert!(parse_words("verify x.eif --against y --at document").is_err());
        assert!(parse_words("verify x.eif --against y.eif").is_ok());
        let enclave = parse_words("build-enclave --kernel k").unwrap();
        assert!(
            matches!(enclave, EifCommand::BuildEnclave { ref cmdline, ref output, .. }
            if cmdline == enclosure_eif::enclave_image::DEFAULT_CMDLINE
                && output == Path::new("enclosure-enclave.eif"))
        );
        assert!(parse_words("build-enclave").is_err());
        // Not a source tree: refused before cargo runs.
        let empty = scratch("not-a-tree");
        fs::create_dir_all(&empty).unwrap();
        let line = format!("build-enclave --kernel k --source {}", empty.display());
        let err = run(parse_words(&line).unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("not an Enclosure source tree"));
    }

    #[test]
    fn build_then_verify_round_trips_and_mismatches_exit_1() {
        let out = scratch("round.eif");
        let build = parse(&[
            "build",
            "--kernel",
            testdata("kernel.bin").to_str().unwrap(),
            "--cmdline",
            "console=ttyS0",
            "--ramdisk",
            testdata("boot.cpio").to_str().unwrap(),
            testdata("app.cpio").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(run(build).unwrap(), ExitCode::SUCCESS);
        let describe = parse(&["describe", out.to_str().unwrap(), "--json"]).unwrap();
        assert_eq!(run(describe).unwrap(), ExitCode::SUCCESS);

        let against_itself = parse(&[
            "verify",
            out.to_str().unwrap(),
            "--against",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run(against_itself.unwrap()).unwrap(), ExitCode::SUCCESS);
        // The signed vector has the same sections but a signature, so PCR8 differs.
        let signed = testdata("signed.eif");
        let v = parse(&[
            "verify",
            out.to_str().unwrap(),
            "--against",
            signed.to_str().unwrap(),
        ]);
        assert_eq!(run(v.unwrap()).unwrap(), ExitCode::from(1));
        let v = parse(&[
            "verify",
            signed.to_str().unwrap(),
            "--expected",
            testdata("signed.pcrs.json").to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(run(v.unwrap()).unwrap(), ExitCode::SUCCESS);
        let _ = fs::remove_file(out);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let v = parse(&["describe", testdata("app.cpio").to_str().unwrap()]).unwrap();
        let err = run(v).unwrap_err();
        assert!(format!("{err:#}").contains("app.cpio"));
        let v = parse(&[
            "verify",
            testdata("unsigned.eif").to_str().unwrap(),
            "--expected",
            testdata("README.md").to_str().unwrap(),
        ]);
        assert!(run(v.unwrap()).is_err());
        assert!(parse_time("2023-11-14T22:13:20Z").is_ok());
        assert!(parse_time("1700000000").is_ok());
        assert!(parse_time("last tuesday").is_err());
    }
}
