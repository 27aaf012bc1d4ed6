//! `enclosure`: the one command people type.
#![forbid(unsafe_code)]

mod attest;
mod audit;
mod demo;
mod dev;
mod eif;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "enclosure",
    version,
    about = "Enclave-first escrow and signing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local stack: enclave (dev attester), proxy and api.
    Up(up::UpArgs),
    /// Verify attestation documents.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Check the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run a whole escrow between two dev users against the local stack (starts one if none runs).
    Demo(demo::DemoArgs),
    /// Development helpers (dev mode only).
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Build, describe and verify enclave images (EIF).
    #[command(subcommand)]
    Eif(eif::EifCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Attest(cmd) => attest::run(cmd),
        Command::Eif(cmd) => eif::run(cmd),
        Command::Dev(cmd) => dev::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Audit(cmd) => audit::run(cmd),
    };
    match result {
        Ok(code) => code,
        // 1 means "checked and refused" (a document, an image, an audit chain); 2 means the
        // command could not do its job at all, so scripts can tell the two apart.
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
