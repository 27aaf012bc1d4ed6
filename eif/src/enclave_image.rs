//! Building Enclosure's own enclave image from a source tree, reproducibly: the enclave and its
//! init compiled for static musl with fixed flags, two deterministic ramdisks, then the EIF.
//!
//! Every input that could differ between two honest builds is pinned or removed:
//! - the toolchain by the tree's `rust-toolchain.toml` (the caller's `RUSTUP_TOOLCHAIN` and
//!   wrappers are cleared, so the tree decides), the dependencies by `Cargo.lock` (`--locked`);
//! - paths: the source tree, CARGO_HOME and the target directory are remapped to fixed names,
//!   symbols are stripped, no GNU build-id is written;
//! - codegen: one codegen unit, so the object layout does not depend on scheduling;
//! - time: SOURCE_DATE_EPOCH for the compiler and for every ramdisk entry and the metadata;
//! - the file system: ramdisk entries are written by [`crate::cpio::NewcWriter`] from a fixed
//!   list, never from a directory walk, so mtimes, owners and inode numbers never leak in.
//!
//! This module runs cargo and writes files; the steps it takes are plain data
//! ([`cargo_args`], [`rustflags`]) so they can be read and tested without building.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::{NewcWriter, S_IFDIR, S_IFREG};
use crate::metadata::EifIdentityInfo;
use crate::reader::{EifInfo, read_eif};

/// The target the enclave is built for: static musl, no C library needed in the image.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// nitro-cli's kernel command line for x86_64 images (its `blobs/x86_64/cmdline`).
pub const DEFAULT_CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 \
     i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";
/// The image name recorded in the metadata section.
pub const IMAGE_NAME: &str = "enclosure-enclave";
/// Where the tree's paths appear in the binaries instead of the real source directory.
pub const REMAPPED_SOURCE: &str = "/enclosure";
/// Where CARGO_HOME (the registry sources) appears in the binaries.
pub const REMAPPED_CARGO_HOME: &str = "/cargo";
/// Where the target directory (generated code under OUT_DIR) appears in the binaries.
pub const REMAPPED_TARGET: &str = "/target";

/// The two binaries, as (name in the target directory, path inside the image, ramdisk).
/// Init goes in the bootstrap ramdisk (PCR1), the enclave in the application ramdisk (PCR2).
const INIT_BIN: &str = "enclosure-init";
const ENCLAVE_BIN: &str = "enclosure-enclave";

/// Why an enclave image could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnclaveImageError {
    /// The source directory is not an Enclosure tree (no Cargo.lock or enclave crate).
    #[error("{0} is not an Enclosure source tree (needs Cargo.lock and enclave/Cargo.toml)")]
    NotASourceTree(String),
    /// cargo could not be started at all.
    #[error("cannot run cargo: {0}")]
    CargoSpawn(std::io::Error),
    /// cargo ran and failed; its own output, streamed above, says why.
    #[error("cargo build failed ({0}); see its output above")]
    CargoFailed(std::process::ExitStatus),
    /// A build product is missing after cargo reported success.
    #[error("cargo finished but {0} is missing")]
    MissingBinary(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Writing a ramdisk or the image failed.
    #[error(transparent)]
    Eif(#[from] crate::Error),
}

/// What to build and where.
#[derive(Clone, Debug)]
pub struct EnclaveImageSpec {
    /// The source tree (the repository root).
    pub source: PathBuf,
    /// The kernel (bzImage) to package.
    pub kernel: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The NSM driver module (`nsm.ko`) for kernels that do not build it in, such as the
    /// one nitro-cli ships in its blobs; put in the bootstrap ramdisk, loaded by init.
    pub nsm_module: Option<PathBuf>,
    /// Where the image is written.
    pub output: PathBuf,
    /// cargo's target directory for this build, kept apart from the developer's own.
    pub target_dir: PathBuf,
    /// CARGO_HOME, remapped out of the binaries.
    pub cargo_home: PathBuf,
    /// SOURCE_DATE_EPOCH: the only time that reaches the image.
    pub epoch: i64,
    /// The image version recorded in the metadata section.
    pub version: String,
    /// The cargo to run; `cargo` through rustup, so the tree's toolchain file applies.
    pub cargo: OsString,
}

impl EnclaveImageSpec {
    /// A spec with the defaults: nitro-cli's cmdline, `<source>/target/enclave-image` as the
    /// target directory, CARGO_HOME from the environment (or `~/.cargo`).
    pub fn new(source: &Path, kernel: &Path, output: &Path, epoch: i64) -> Self {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
        EnclaveImageSpec {
            source: source.to_path_buf(),
            kernel: kernel.to_path_buf(),
            cmdline: DEFAULT_CMDLINE.to_string(),
            nsm_module: None,
            output: output.to_path_buf(),
            target_dir: source.join("target").join("enclave-image"),
            cargo_home,
            epoch,
            version: env!("CARGO_PKG_VERSION").to_string(),
            cargo: OsString::from("cargo"),
        }
    }
}

/// What a build produced.
#[derive(Debug)]
pub struct EnclaveImage {
    /// The image as the reader sees it: PCRs, sections, metadata.
    pub info: EifInfo,
    /// The bootstrap ramdisk (init), kept beside the binaries for inspection.
    pub bootstrap_ramdisk: PathBuf,
    /// The application ramdisk (the enclave).
    pub application_ramdisk: PathBuf,
}

/// cargo's arguments: both binaries, release, static musl, lock file enforced, and the enclave
/// crate without its `dev` feature, so only the NSM attester is compiled in.
pub fn cargo_args() -> Vec<&'static str> {
    vec![
        "build",
        "--release",
        "--locked",
        "--target",
        MUSL_TARGET,
        "--package",
        "enclosure-enclave",
        "--no-default-features",
        "--bin",
        ENCLAVE_BIN,
        "--bin",
        INIT_BIN,
    ]
}

/// The compiler flags, one per element (passed as CARGO_ENCODED_RUSTFLAGS, so paths with
/// spaces survive). They apply to the target only, not to build scripts.
pub fn rustflags(source: &Path, cargo_home: &Path, target_dir: &Path) -> Vec<String> {
    let remap = |from: &Path, to: &str| format!("--remap-path-prefix={}={to}", from.display());
    vec![
        "-Ctarget-feature=+crt-static".into(),
        "-Ccodegen-units=1".into(),
        "-Cstrip=symbols".into(),
        "-Clink-arg=-Wl,--build-id=none".into(),
        // Most specific first: rustc applies the last matching prefix, and the target
        // directory may sit inside the source tree.
        remap(source, REMAPPED_SOURCE),
        remap(cargo_home, REMAPPED_CARGO_HOME),
        remap(target_dir, REMAPPED_TARGET),
    ]
}

/// Variables that would let the caller's environment change the build; cleared for cargo.
const CLEARED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTUP_TOOLCHAIN",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER",
    "CARGO_PROFILE_RELEASE_DEBUG",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS",
    "CARGO_PROFILE_RELEASE_LTO",
    "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    "CARGO_INCREMENTAL",
];

/// Builds the image: cargo (its output streamed to stderr), the two ramdisks, the EIF.
/// `progress` gets one line per step.
pub fn build_enclave_image(
    spec: &EnclaveImageSpec,
    progress: &mut dyn FnMut(&str),
) -> Result<EnclaveImage, EnclaveImageError> {
    let source = fs::canonicalize(&spec.source).map_err(|e| io(&spec.source, e))?;
    if !source.join("Cargo.lock").is_file() || !source.join("enclave/Cargo.toml").is_file() {
        return Err(EnclaveImageError::NotASourceTree(
            source.display().to_string(),
        ));
    }
    fs::create_dir_all(&spec.target_dir).map_err(|e| io(&spec.target_dir, e))?;
    let target_dir = fs::canonicalize(&spec.target_dir).map_err(|e| io(&spec.target_dir, e))?;
    let cargo_home = fs::canonicalize(&spec.cargo_home).unwrap_or_else(|_| spec.cargo_home.clone());
    // SOURCE_DATE_EPOCH is validated where the image needs it; a bad one fails here, first.
    let mtime = u32::try_from(spec.epoch).map_err(|_| {
        crate::Error::SourceDateEpoch(format!("{} does not fit a cpio mtime", spec.epoch))
    })?;
    let identity = EifIdentityInfo::new(IMAGE_NAME, &spec.version, spec.epoch)?;

    progress(&format!(
        "[1/4] compiling {ENCLAVE_BIN} and {INIT_BIN} for {MUSL_TARGET} in {}",
        target_dir.display()
    ));
    let flags = rustflags(&source, &cargo_home, &target_dir);
    let mut cmd = Command::new(&spec.cargo);
    cmd.args(cargo_args()).current_dir(&source);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_HOME", &cargo_home)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
        .env("SOURCE_DATE_EPOCH", spec.epoch.to_string())
        .env("CARGO_TERM_PROGRESS_WHEN", "never");
    let status = cmd.status().map_err(EnclaveImageError::CargoSpawn)?;
    if !status.success() {
        return Err(EnclaveImageError::CargoFailed(status));
    }
    let bin_dir = target_dir.join(MUSL_TARGET).join("release");
    let init = existing(bin_dir.join(INIT_BIN))?;
    let enclave = existing(bin_dir.join(ENCLAVE_BIN))?;

    progress("[2/4] writing the bootstrap ramdisk (init)");
    let image_dir = target_dir.join("image");
    fs::create_dir_all(&image_dir).map_err(|e| io(&image_dir, e))?;
    let bootstrap = image_dir.join("bootstrap.cpio");
    let boot_files = bootstrap_files(&init, spec.nsm_module.as_deref());
    write_ramdisk(&bootstrap, mtime, &[], &boot_files)?;

    progress("[3/4] writing the application ramdisk (enclave)");
    let application = image_dir.join("application.cpio");
    write_ramdisk(
        &application,
        mtime,
        &["bin"],
        &[("bin/enclosure-enclave", &enclave, 0o755)],
    )?;

    progress(&format!("[4/4] writing {}", spec.output.display()));
    crate::build_eif_file(
        &spec.kernel,
        &spec.cmdline,
        &[bootstrap.clone(), application.clone()],
        identity,
        None,
        &spec.output,
    )?;
    let mut f = File::open(&spec.output).map_err(|e| io(&spec.output, e))?;
    let info = read_eif(&mut f)?;
    Ok(EnclaveImage {
        info,
        bootstrap_ramdisk: bootstrap,
        application_ramdisk: application,
    })
}

/// The bootstrap ramdisk's files, sorted: `init` (the kernel's default `rdinit=/init`), then
/// `nsm.ko` when given (where `enclosure-init` looks for it).
fn bootstrap_files<'a>(
    init: &'a Path,
    nsm_module: Option<&'a Path>,
) -> Vec<(&'a str, &'a Path, u32)> {
    let mut files = vec![("init", init, 0o755)];
    if let Some(m) = nsm_module {
        files.push(("nsm.ko", m, 0o644));
    }
    files
}

/// A ramdisk from a fixed list: directories (mode 0755) then files with their modes, in the
/// order given, which the caller keeps sorted.
fn write_ramdisk(
    path: &Path,
    mtime: u32,
    dirs: &[&str],
    files: &[(&str, &Path, u32)],
) -> Result<(), EnclaveImageError> {
    crate::writer::write_atomically(path, |f| {
        let mut w = NewcWriter::new(BufWriter::new(f), mtime);
        for d in dirs {
            w.add(d, S_IFDIR | 0o755, 0, &[][..])?;
        }
        for &(name, from, mode) in files {
            let src = File::open(from).map_err(|source| crate::Error::Open {
                path: from.display().to_string(),
                source,
            })?;
            let len = src.metadata()?.len();
            w.add(name, S_IFREG | mode, len, src)?;
        }
        w.finish()?.flush()?;
        Ok(())
    })?;
    Ok(())
}

fn existing(path: PathBuf) -> Result<PathBuf, EnclaveImageError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(EnclaveImageError::MissingBinary(path.display().to_string()))
    }
}

fn io(path: &Path, source: std::io::Error) -> EnclaveImageError {
    EnclaveImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_builds_both_binaries_static_without_dev() {
        let args = cargo_args();
        for must in [
            "--locked",
            "--release",
            "--no-default-features",
            MUSL_TARGET,
        ] {
            assert!(args.contains(&must), "{must} missing");
        }
        assert!(args.windows(2).any(|w| w == ["--bin", INIT_BIN]));
        assert!(args.windows(2).any(|w| w == ["--bin", ENCLAVE_BIN]));
    }

    #[test]
    fn rustflags_pin_everything_path_or_time_dependent() {
        let f = rustflags(
            Path::new("/home/a/src"),
            Path::new("/home/a/.cargo"),
            Path::new("/home/a/src/target/enclave-image"),
        );
        for must in [
            "-Ctarget-feature=+crt-static",
            "-Ccodegen-units=1",
            "-Cstrip=symbols",
            "-Clink-arg=-Wl,--build-id=none",
            "--remap-path-prefix=/home/a/src=/enclosure",
            "--remap-path-prefix=/home/a/.cargo=/cargo",
        ] {
            assert!(f.iter().any(|x| x == must), "{must} missing from {f:?}");
        }
        // The target directory inside the tree is remapped after (so over) the tree itself.
        assert_eq!(
            f.last().map(String::as_str),
            Some("--remap-path-prefix=/home/a/src/target/enclave-image=/target")
        );
        assert!(f.iter().all(|x| !x.contains('\u{1f}')));
    }

    #[test]
    fn caller_overrides_are_cleared() {
        for v in [
            "RUSTFLAGS",
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
            "CARGO_BUILD_TARGET",
        ] {
            assert!(CLEARED_ENV.contains(&v), "{v}");
        }
    }

    #[test]
    fn default_cmdline_is_nitro_clis() {
        assert!(DEFAULT_CMDLINE.starts_with("reboot=k panic=30 pci=off nomodules console=ttyS0"));
        assert!(!DEFAULT_CMDLINE.contains("  "));
    }

    #[test]
    fn bootstrap_holds_init_and_the_optional_nsm_module() {
        let (init, nsm) = (Path::new("/t/enclosure-init"), Path::new("/blobs/nsm.ko"));
        assert_eq!(bootstrap_files(init, None), [("init", init, 0o755)]);
        let with = bootstrap_files(init, Some(nsm));
        assert_eq!(with, [("init", init, 0o755), ("nsm.ko", nsm, 0o644)]);
        // Sorted, as the kernel and the reader expect; the names are the paths
        // enclosure-init uses (its INIT_PATH and NSM_MODULE_PATH) without the leading slash.
        assert!(with.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn ramdisks_from_a_list_ignore_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("x");
        fs::write(&bin, b"\x7fELF").unwrap();
        let a = dir.path().join("a.cpio");
        let b = dir.path().join("b.cpio");
        write_ramdisk(&a, 7, &["bin"], &[("bin/x", &bin, 0o755)]).unwrap();
        let f = File::options().write(true).open(&bin).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        write_ramdisk(&b, 7, &["bin"], &[("bin/x", &bin, 0o755)]).unwrap();
        let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        assert_eq!(a, b);
        let entries = crate::cpio::read_newc(&a[..]).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["bin", "bin/x"]);
        assert!(
            entries
                .iter()
                .all(|e| e.mtime == 7 && e.uid == 0 && e.mode & 0o777 == 0o755)
        );
    }
}
