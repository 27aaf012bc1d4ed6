//! `enclosure audit verify`: recomputes the audit hash chain and reports the first broken row.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use enclosure_api::store::{DatabaseConfig, Store};

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every row's hash in order and report the first row that does not verify.
    Verify(VerifyArgs),
}

/// Where the audit log lives.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Data directory of the stack (its embedded SQLite database).
    #[arg(long, default_value = "./enclosure-data")]
    data_dir: PathBuf,
    /// A PostgreSQL URL instead of the embedded database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs an audit command.
pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify(args) = cmd;
    let config = match args.database_url {
        Some(url) => DatabaseConfig::Postgres {
            url,
            owner_url: None,
        },
        None => {
            let path = args.data_dir.join("enclosure.db");
            anyhow::ensure!(path.exists(), "no database at {}", path.display());
            DatabaseConfig::Sqlite { path }
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(async {
        let store = Store::connect(&config)
            .await
            .context("opening the database")?;
        store
            .verify_audit_chain()
            .await
            .context("reading the audit log")
    })?;
    if args.json {
        let broken = report
            .first_broken
            .as_ref()
            .map(|b| serde_json::json!({ "seq": b.seq, "reason": b.reason.to_string() }));
        println!(
            "{}",
            serde_json::json!({
                "intact": report.is_intact(),
                "rows_checked": report.rows_checked,
                "last_seq": report.last_seq,
                "first_broken": broken,
            })
        );
    } else if let Some(b) = &report.first_broken {
        println!(
            "BROKEN at seq {}: {} ({} rows checked)",
            b.seq, b.reason, report.rows_checked
        );
    } else {
        println!(
            "intact: {} rows verified, chain head at seq {}",
            report.rows_checked, report.last_seq
        );
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
